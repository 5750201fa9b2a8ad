"""Whole-graph checks beyond what each node's own verifier guarantees."""

from __future__ import annotations

from dsc.errors import IRError
from dsc.ir.graph import Graph
from dsc.ir.node import Node
from dsc.ir.opdef import get_op


def verify(g: Graph) -> Graph:
    """Raise IRError naming the first problem; return the graph when it is well formed.

    Checks: every node's type is what its op infers; inputs are declared once and every
    input reached is declared; leaf names are unique; outputs are named once; folds
    compute existing params from checkpoint params only; and a cache consumed by
    paged_append is read by nothing else (so it may be updated in place).
    """
    names: dict[str, Node] = {}
    declared = set()
    for n in g.inputs:
        if n.name in names:
            raise IRError(f"graph {g.name}: input %{n.name} declared twice")
        names[n.name] = n
        declared.add(id(n))
    out_names = [k for k, _ in g.outputs]
    if len(set(out_names)) != len(out_names):
        raise IRError(f"graph {g.name}: duplicate output names {out_names}")

    users: dict[int, list[Node]] = {}
    for n in g.nodes():
        inferred = get_op(n.op).verify(n.srcs, n.attrs)
        if inferred != n.type:
            raise IRError(f"graph {g.name}: {n.op} node has type {n.type}, its op infers {inferred}")
        if n.op == "input" and id(n) not in declared:
            raise IRError(f"graph {g.name}: input %{n.name} is used but not declared")
        if n.op == "param":
            other = names.get(n.name)
            if other is not None and other is not n:
                raise IRError(f"graph {g.name}: two leaves named %{n.name} ({other.type} and {n.type})")
            names[n.name] = n
        for s in n.srcs:
            users.setdefault(id(s), []).append(n)

    verify_folds(g, names)
    outputs = {id(v) for _, v in g.outputs}
    for n in g.nodes():
        if n.op == "paged_append":
            cache = n.srcs[0]
            others = [u for u in users.get(id(cache), []) if u is not n]
            if others or id(cache) in outputs:
                raise IRError(f"graph {g.name}: the cache consumed by paged_append is also read by "
                              f"{', '.join(u.op for u in others) or 'an output'}")
    return g


def verify_folds(g: Graph, leaves: dict) -> None:
    """Each fold computes an existing param leaf of its type from checkpoint params only."""
    from dsc.ir.node import toposort

    folded = g.folded_names()
    if len(folded) != len(g.folds):
        raise IRError(f"graph {g.name}: a param is folded twice")
    for name, expr in g.folds:
        target = leaves.get(name)
        if target is None or target.op != "param":
            raise IRError(f"graph {g.name}: fold {name} computes no param of the graph")
        if target.type != expr.type:
            raise IRError(f"graph {g.name}: fold {name} computes {expr.type}, the param is {target.type}")
        if expr.op in ("input", "param"):
            raise IRError(f"graph {g.name}: fold {name} only renames %{expr.name}")
        for n in toposort([expr]):
            if n.op == "input":
                raise IRError(f"graph {g.name}: fold {name} reads the runtime input %{n.name}")
            if n.op == "param" and n.name in folded:
                raise IRError(f"graph {g.name}: fold {name} reads the folded param %{n.name}")
