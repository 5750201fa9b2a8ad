"""Backend selection: a runner executes one graph on given inputs and params."""

from __future__ import annotations

from typing import Callable, Mapping

import torch

from dsc.errors import ConfigError
from dsc.ir.graph import Graph
from dsc.ir.interpreter import interpret

BACKENDS = ("reference", "triton", "tvm")
Runner = Callable[[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]], dict]


def make_runner(g: Graph, backend: str) -> Runner:
    if backend == "reference":
        return lambda inputs, params: interpret(g, inputs, params, check_shapes=False)
    if backend == "triton":
        import dsc.codegen.triton  # noqa: F401  (enables the interpreter on a machine without CUDA)
        from dsc.codegen.triton.lower import KINDS, lower
        from dsc.runtime.executor import Executor

        return Executor(g, lower, KINDS)
    if backend == "tvm":
        from dsc.codegen.tvm.build import artifacts_active, require_tvm

        if not artifacts_active():  # kernels from a compiled directory need no TVM
            require_tvm()
        from dsc.codegen.tvm.lower import KINDS, lower
        from dsc.runtime.executor import Executor

        return Executor(g, lower, KINDS)
    raise ConfigError(f"backend: unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
