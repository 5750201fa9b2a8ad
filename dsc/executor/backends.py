"""Backend selection: a runner executes one graph on given inputs and params, on the
reference interpreter or on a registered codegen backend (dsc.codegen.backend)."""

from __future__ import annotations

from typing import Callable, Mapping

import torch

from dsc.codegen.backend import CODEGEN_BACKENDS, get_backend
from dsc.errors import ConfigError
from dsc.ir.graph import Graph
from dsc.ir.interpreter import interpret

BACKENDS = ("reference", *CODEGEN_BACKENDS)
Runner = Callable[[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]], dict]


def make_runner(g: Graph, backend: str) -> Runner:
    if backend == "reference":
        return lambda inputs, params: interpret(g, inputs, params, check_shapes=False)
    if backend not in CODEGEN_BACKENDS:
        raise ConfigError(f"backend: unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    from dsc.executor.executor import Executor

    b = get_backend(backend)
    b.prepare()
    return Executor(g, b.lower, b.kinds)
