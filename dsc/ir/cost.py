"""Symbolic FLOPs and bytes of a graph, from each op's declared cost."""

from __future__ import annotations

import sympy

from dsc.ir.graph import Graph
from dsc.ir.opdef import Cost, get_op


def node_cost(n) -> Cost:
    if n.op in ("input", "param"):
        return Cost(sympy.Integer(0), sympy.Integer(0))
    return get_op(n.op).cost([s.type for s in n.srcs], n.type, n.attrs)


def graph_cost(g: Graph) -> Cost:
    flops, nbytes = sympy.Integer(0), sympy.Integer(0)
    for n in g.nodes():
        c = node_cost(n)
        flops += c.flops
        nbytes += c.bytes
    return Cost(sympy.expand(flops), sympy.expand(nbytes))


def weight_bytes(g: Graph) -> int:
    return int(sum(sympy.sympify(p.type.nbytes()) for p in g.params()))
