"""Kernel groups -> launchers, for any backend. Each group kind's declaration
(dsc/codegen/groups/) says which tensors and attributes it hands to which kernel; a
backend supplies the kernels by name (a KernelSet: dsc.codegen.kernel_set).

A launcher is launch(values, env, out=None): values are the tensors by node id, env the
call's symbol bindings, out the planned output buffer (a tuple for multi-output groups).
"""

from __future__ import annotations

from typing import Callable

import torch

from dsc.codegen.kernel_set import KernelSet
from dsc.codegen.kinds import GROUP_KINDS
from dsc.codegen.schedule import Group
from dsc.errors import DscError

Launcher = Callable[..., torch.Tensor]


def lower(group: Group, kernels: KernelSet) -> Launcher:
    kind = GROUP_KINDS[group.kind]
    if kind.launch is None or group.kind not in kernels.kinds:
        raise DscError(f"the {kernels.name} backend has no kernel for group {group.kind!r} ({group.root.op})")
    return kind.launch(group, kernels)
