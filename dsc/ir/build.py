"""Short constructors of IR nodes, for the builders, the passes and the tests: each makes one node."""

from __future__ import annotations

from dsc.ir.node import Node
from dsc.ir.types import DType, dtype as as_dtype


def inp(name: str, shape, dt) -> Node:
    return Node.make("input", (), name=name, shape=tuple(shape), dtype=as_dtype(dt).name)


def param(name: str, shape, dt) -> Node:
    return Node.make("param", (), name=name, shape=tuple(shape), dtype=as_dtype(dt).name)


def op(name: str, *srcs: Node, **attrs) -> Node:
    return Node.make(name, srcs, **attrs)


def cast(x: Node, dt: DType | str) -> Node:
    dt = as_dtype(dt)
    return x if x.dtype == dt else op("cast", x, dtype=dt.name)


def slice_last(x: Node, start: int, stop: int) -> Node:
    return op("slice", x, axis=-1, start=start, stop=stop)
