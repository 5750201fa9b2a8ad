"""Kernel-group kinds, each declared once in a file of this package: what the scheduler
makes (dsc.codegen.schedule), what the executor and the crosscheck ask of a group (host,
in place, a row region), and how a group of the kind calls a backend's kernels (its
launcher maker and the kernel names it calls). A backend registers kernels under those
names in its own kernel files (dsc.codegen.kernel_set); dsc.codegen.kinds collects the
declarations.

A new kernel group is a file here defining KINDS, plus its kernel file on each backend.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class GroupKind:
    name: str
    host: bool = False  # run on the host (a view, a branch choice): no kernel
    in_place: bool = False  # writes no fresh buffer (aliases its source, or writes a cache in place)
    rows: bool = False  # a fused row region: the backends' row kernels (dsc/codegen/*/rowwise.py)
    # ops that make a one-node group of this kind; kinds made by a fused pattern (rows,
    # paged attention, the router) are matched in dsc.codegen.schedule instead
    ops: tuple[str, ...] = ()
    calls: tuple[str, ...] = ()  # the kernels its launcher calls, by their registered names
    # make(group, kernels) -> launch(values, env, out=None) (dsc.codegen.lowering); None on the host
    launch: Callable | None = None


def declared() -> dict[str, GroupKind]:
    """Every kind declared in this package, by name (each module's KINDS)."""
    kinds: dict[str, GroupKind] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        for kind in importlib.import_module(f"{__name__}.{info.name}").KINDS:
            if kind.name in kinds:
                raise ValueError(f"group kind {kind.name!r} is declared twice (dsc/codegen/groups/{info.name}.py)")
            if (kind.launch is None) != kind.host:
                raise ValueError(f"group kind {kind.name!r}: a launcher is what every kernel kind, and only it, has")
            kinds[kind.name] = kind
    return kinds
