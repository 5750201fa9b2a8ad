"""fold: weight-only work moves to load time.

Every maximal subexpression that reads params only (casts of the router weight,
per-head slices of kv_b_proj, concatenated expert weights, FP8-quantised weights...)
becomes a folded param: computed once when the weights are loaded, read as a plain
weight by every call.
"""

from __future__ import annotations

from dsc.ir.build import param
from dsc.ir.graph import Graph
from dsc.ir.node import Node, toposort
from dsc.passes.manager import PassContext, register_pass
from dsc.passes.rewrite import substitute


def inline_folds(expr: Node, folds: dict[str, Node]) -> Node:
    """expr with folded param leaves replaced by their defining expressions."""
    memo: dict[int, Node] = {}
    for n in toposort([expr]):
        if n.op == "param" and n.name in folds:
            memo[id(n)] = folds[n.name]
        else:
            srcs = tuple(memo[id(s)] for s in n.srcs)
            memo[id(n)] = n if all(a is b for a, b in zip(srcs, n.srcs)) else Node.make(n.op, srcs, **n.attrs)
    return memo[id(expr)]


def weight_only(g: Graph) -> dict[int, bool]:
    const: dict[int, bool] = {}
    for n in g.nodes():
        const[id(n)] = n.op == "param" or (n.op != "input" and bool(n.srcs) and all(const[id(s)] for s in n.srcs))
    return const


@register_pass("fold")
def fold(g: Graph, ctx: PassContext) -> Graph:
    """Move weight-only subexpressions to load time (folded params)."""
    const = weight_only(g)
    reached = toposort([v for _, v in g.outputs])
    frontier = {id(v) for _, v in g.outputs if const[id(v)] and v.op != "param"}
    for n in reached:
        if not const[id(n)]:
            frontier |= {id(s) for s in n.srcs if const[id(s)] and s.op != "param"}
    if not frontier:
        return g
    folds = dict(g.folds)
    taken = {p.name for p in g.params()}
    new_params: dict[int, Node] = {}
    for n in reached:
        if id(n) in frontier:
            k = len(folds)
            while f"folded.{k}" in taken:
                k += 1
            name = f"folded.{k}"
            taken.add(name)
            folds[name] = inline_folds(n, dict(g.folds))
            new_params[id(n)] = param(name, n.shape, n.dtype)
    ctx.note(f"{len(new_params)} weight-only subexpression(s) moved to load time")
    out = substitute(g.replace(folds=()), lambda orig, _: new_params.get(id(orig)))
    return out.replace(folds=list(folds.items()))
