"""cse: common subexpressions become one node.

Hash-consing already makes structurally equal nodes one object; cse adds what
structure alone misses: operands of commutative ops in a canonical order, so
add(a, b) and add(b, a) are one node, and folds that compute the same weight become
one folded param.
"""

from __future__ import annotations

import hashlib

from dsc.ir.build import param
from dsc.ir.graph import Graph
from dsc.ir.node import Node, toposort
from dsc.passes.manager import PassContext, register_pass
from dsc.passes.rewrite import COMMUTATIVE, substitute


class StructuralKeys:
    """A content hash per node, independent of object identity and graph order."""

    def __init__(self):
        self.keys: dict[int, str] = {}
        self.alive: list[Node] = []  # keeps keyed nodes alive, so ids are not reused

    def __getitem__(self, node: Node) -> str:
        for n in toposort([node]):
            if id(n) not in self.keys:
                text = f"{n.op}|{sorted(n.attrs.items())!r}|{n.type}|" + ",".join(self.keys[id(s)] for s in n.srcs)
                self.keys[id(n)] = hashlib.sha1(text.encode()).hexdigest()
                self.alive.append(n)
        return self.keys[id(node)]


@register_pass("cse")
def cse(g: Graph, ctx: PassContext) -> Graph:
    """Merge common subexpressions (commutative operands, duplicate folds)."""
    keys = StructuralKeys()

    def canonical(_: Node, n: Node) -> Node | None:
        if n.op not in COMMUTATIVE:
            return None
        order = sorted(range(len(n.srcs)), key=lambda i: keys[n.srcs[i]])
        if order == list(range(len(n.srcs))):
            return None
        return Node.make(n.op, [n.srcs[i] for i in order], **n.attrs)

    out = substitute(g, canonical)
    first: dict[int, str] = {}
    rename: dict[str, str] = {}
    for name, expr in out.folds:
        if id(expr) in first:
            rename[name] = first[id(expr)]
        else:
            first[id(expr)] = name
    if rename:
        params = {p.name: p for p in out.params()}
        swap = {id(params[a]): param(b, params[b].shape, params[b].dtype) for a, b in rename.items() if a in params}
        out = substitute(out, lambda orig, _: swap.get(id(orig)))
        out = out.replace(folds=[(k, v) for k, v in out.folds if k not in rename])
        ctx.note(f"merged duplicate folds: {', '.join(f'{a} -> {b}' for a, b in rename.items())}")
    if out != g and not rename:
        ctx.note("put commutative operands in canonical order")
    return out
