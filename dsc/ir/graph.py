"""A graph: named runtime inputs, and named outputs computed from them and from params.

Nodes are hash-consed, so two graphs are equal exactly when their inputs and outputs
are the same node objects; `parse(print(g)) == g` checks the round trip structurally.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from dsc.errors import IRError
from dsc.ir.node import Node, toposort


@dataclass(frozen=True, eq=False)
class Graph:
    name: str
    inputs: tuple[Node, ...]
    outputs: tuple[tuple[str, Node], ...]

    def __init__(self, name: str, inputs: Iterable[Node], outputs: dict[str, Node] | Iterable[tuple[str, Node]]):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "inputs", tuple(inputs))
        items = tuple(outputs.items()) if isinstance(outputs, dict) else tuple(outputs)
        object.__setattr__(self, "outputs", items)
        if not items:
            raise IRError(f"graph {name}: no outputs")
        for n in self.inputs:
            if not isinstance(n, Node) or n.op != "input":
                raise IRError(f"graph {name}: graph inputs must be input nodes, got {n!r}")

    def __eq__(self, other) -> bool:
        if not isinstance(other, Graph):
            return NotImplemented
        return (self.name == other.name and len(self.inputs) == len(other.inputs)
                and all(a is b for a, b in zip(self.inputs, other.inputs))
                and [k for k, _ in self.outputs] == [k for k, _ in other.outputs]
                and all(a is b for (_, a), (_, b) in zip(self.outputs, other.outputs)))

    __hash__ = object.__hash__

    def output(self, name: str) -> Node:
        for k, v in self.outputs:
            if k == name:
                return v
        raise IRError(f"graph {self.name} has no output {name!r}")

    def nodes(self) -> list[Node]:
        """Inputs in declaration order, then every other node, sources before users."""
        order = list(self.inputs)
        seen = {id(n) for n in order}
        for n in toposort([v for _, v in self.outputs]):
            if id(n) not in seen:
                seen.add(id(n))
                order.append(n)
        return order

    def params(self) -> list[Node]:
        return [n for n in self.nodes() if n.op == "param"]

    def input(self, name: str) -> Node:
        for n in self.inputs:
            if n.name == name:
                return n
        raise IRError(f"graph {self.name} has no input {name!r}")

    def with_outputs(self, outputs: dict[str, Node]) -> "Graph":
        return Graph(self.name, self.inputs, outputs)

    def __str__(self) -> str:
        from dsc.ir.printer import print_graph

        return print_graph(self)
