"""Symbolic FLOPs and bytes of a graph, from each op's declared cost.

A graph with dispatch nodes costs what its chosen branches cost: the result is a
sympy Piecewise over the dispatch conditions. Folds are load-time work and are not
counted per call.
"""

from __future__ import annotations

import itertools

import sympy

from dsc.ir.graph import Graph
from dsc.ir.opdef import Cost, get_op
from dsc.ir.types import sym


def node_cost(n) -> Cost:
    if n.op in ("input", "param"):
        return Cost(sympy.Integer(0), sympy.Integer(0))
    return get_op(n.op).cost([s.type for s in n.srcs], n.type, n.attrs)


def _sum(nodes) -> Cost:
    flops, nbytes = sympy.Integer(0), sympy.Integer(0)
    for n in nodes:
        c = node_cost(n)
        flops += c.flops
        nbytes += c.bytes
    return Cost(sympy.expand(flops), sympy.expand(nbytes))


def graph_cost(g: Graph) -> Cost:
    dispatches = [n for n in g.nodes() if n.op == "dispatch"]
    if not dispatches:
        return _sum(g.live_nodes(lambda n: 0))
    flops, nbytes = [], []
    for choice in itertools.product((0, 1), repeat=len(dispatches)):
        picked = {id(d): c for d, c in zip(dispatches, choice)}
        cond = sympy.And(*[(sym(d.attrs["symbol"]) <= d.attrs["le"]) if c == 0 else
                           (sym(d.attrs["symbol"]) > d.attrs["le"]) for d, c in zip(dispatches, choice)])
        if cond is sympy.false:
            continue
        cost = _sum(g.live_nodes(lambda n, picked=picked: picked[id(n)]))
        flops.append((cost.flops, cond))
        nbytes.append((cost.bytes, cond))
    return Cost(sympy.Piecewise(*flops), sympy.Piecewise(*nbytes))


def cost_at(g: Graph, sizes: dict[str, int]) -> tuple[float, float]:
    """(FLOPs, bytes) of one call with the named symbolic dims set, e.g. {"B": 1, "T": 1, "P": 64}."""
    c = graph_cost(g)
    subs = {sym(k): v for k, v in sizes.items()}
    return float(c.flops.subs(subs)), float(c.bytes.subs(subs))


def cache_bytes_per_token(g: Graph) -> int | None:
    """Bytes one token occupies in the graph's paged cache input, if it has one."""
    for n in g.inputs:
        if n.name == "cache":
            return int(n.shape[-1]) * n.dtype.itemsize
    return None


def weight_bytes(g: Graph) -> int:
    """Bytes of the params one call reads: checkpoint and folded params alike."""
    live = {id(n) for n in g.live_nodes(lambda n: 0)} | {id(n) for n in g.live_nodes(lambda n: 1)}
    return int(sum(sympy.sympify(p.type.nbytes()) for p in g.params() if id(p) in live))
