"""Executes graphs: the reference interpreter today; compiled, cached and launched
kernels as the codegen backends land."""

from dsc.runtime.backends import BACKENDS, make_runner

__all__ = ["BACKENDS", "make_runner"]
