"""A graph: named runtime inputs, named outputs computed from them and from params,
and folds: params derived from other params once, when the weights are loaded.

A fold `name = expr` says that the param leaf `name` is not read from a checkpoint but
computed by `expr`, an expression over checkpoint params only (a weight re-layout such
as the per-head slices of kv_b_proj that absorption needs). Folding is compile-time
work: it runs once per weight load, never per call.

Nodes are hash-consed, so two graphs are equal exactly when their inputs, outputs and
folds are the same node objects; `parse(print(g)) == g` checks the round trip
structurally.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from dsc.errors import IRError
from dsc.ir.node import Node, toposort


def _items(mapping) -> tuple[tuple[str, Node], ...]:
    return tuple(mapping.items()) if isinstance(mapping, dict) else tuple(mapping)


@dataclass(frozen=True, eq=False)
class Graph:
    name: str
    inputs: tuple[Node, ...]
    outputs: tuple[tuple[str, Node], ...]
    folds: tuple[tuple[str, Node], ...]

    def __init__(self, name: str, inputs: Iterable[Node], outputs, folds=()):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "inputs", tuple(inputs))
        object.__setattr__(self, "outputs", _items(outputs))
        object.__setattr__(self, "folds", _items(folds))
        if not self.outputs:
            raise IRError(f"graph {name}: no outputs")
        for n in self.inputs:
            if not isinstance(n, Node) or n.op != "input":
                raise IRError(f"graph {name}: graph inputs must be input nodes, got {n!r}")

    def __eq__(self, other) -> bool:
        if not isinstance(other, Graph):
            return NotImplemented

        def same(a, b):
            return [k for k, _ in a] == [k for k, _ in b] and all(x is y for (_, x), (_, y) in zip(a, b))

        return (self.name == other.name and len(self.inputs) == len(other.inputs)
                and all(a is b for a, b in zip(self.inputs, other.inputs))
                and same(self.outputs, other.outputs) and same(self.folds, other.folds))

    __hash__ = object.__hash__

    def output(self, name: str) -> Node:
        for k, v in self.outputs:
            if k == name:
                return v
        raise IRError(f"graph {self.name} has no output {name!r}")

    def nodes(self) -> list[Node]:
        """Inputs in declaration order, then every node the outputs and folds reach,
        sources before users."""
        order = list(self.inputs)
        seen = {id(n) for n in order}
        for n in toposort([v for _, v in self.outputs] + [v for _, v in self.folds]):
            if id(n) not in seen:
                seen.add(id(n))
                order.append(n)
        return order

    def live_nodes(self, choose: Callable[[Node], int]) -> list[Node]:
        """The nodes one call evaluates: what the outputs reach, taking at each dispatch
        only the branch `choose` picks (0 or 1); in `nodes()` order. Folds excluded."""
        live: set[int] = set()
        stack = [v for _, v in self.outputs]
        while stack:
            n = stack.pop()
            if id(n) in live:
                continue
            live.add(id(n))
            stack.extend([n.srcs[choose(n)]] if n.op == "dispatch" else n.srcs)
        return [n for n in self.nodes() if id(n) in live]

    def params(self) -> list[Node]:
        """Every param leaf, checkpoint and folded alike."""
        return [n for n in self.nodes() if n.op == "param"]

    def folded_names(self) -> set[str]:
        return {k for k, _ in self.folds}

    def checkpoint_params(self) -> list[Node]:
        """The params a user loads: every param that no fold computes."""
        folded = self.folded_names()
        return [p for p in self.params() if p.name not in folded]

    def input(self, name: str) -> Node:
        for n in self.inputs:
            if n.name == name:
                return n
        raise IRError(f"graph {self.name} has no input {name!r}")

    def replace(self, outputs=None, folds=None) -> "Graph":
        return Graph(self.name, self.inputs, self.outputs if outputs is None else outputs,
                     self.folds if folds is None else folds)

    def __str__(self) -> str:
        from dsc.ir.printer import print_graph

        return print_graph(self)
