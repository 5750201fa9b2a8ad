"""Runs a graph: the reference interpreter, or the kernel groups a backend lowered, launched
in schedule order over one planned workspace. Sits above codegen, so the services floor
(dsc/runtime) never imports a backend."""

from dsc.executor.backends import BACKENDS, Runner, make_runner
from dsc.executor.executor import Executor

__all__ = ["BACKENDS", "Runner", "make_runner", "Executor"]
