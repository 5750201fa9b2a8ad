"""dce: dead and do-nothing nodes go.

Graphs hold only what their outputs reach, so unreachable nodes never survive a
rewrite. dce removes the rest of the dead weight: nodes whose result is an operand
unchanged (same-dtype casts, scale by 1, reshapes, slices, expands and permutes that
change nothing, contiguous slices concatenated back together, reshape chains) and
folds whose param no call reads any more.
"""

from __future__ import annotations

from dsc.ir.graph import Graph
from dsc.ir.node import Node, toposort
from dsc.ir.types import dims_equal
from dsc.passes.manager import PassContext, register_pass
from dsc.passes.rewrite import P, graph_rewrite


def _same_shape(a: Node, b: Node) -> bool:
    return a.type.rank == b.type.rank and all(dims_equal(x, y) for x, y in zip(a.shape, b.shape))


def _identity(n: Node, x: Node) -> Node | None:
    return x if n.type == x.type and _same_shape(n, x) else None


def _permute(n: Node, x: Node) -> Node | None:
    return x if list(n.attrs["perm"]) == list(range(x.type.rank)) else None


def _reshape_chain(n: Node, inner: Node, x: Node) -> Node:
    return Node.make("reshape", [x], shape=n.attrs["shape"])


def _concat_of_slices(n: Node) -> Node | None:
    """concat(slice(x, a:b), slice(x, b:c), ...) along the sliced axis -> slice(x, a:c)."""
    parts = n.srcs
    if any(p.op != "slice" for p in parts):
        return None
    x, rank = parts[0].srcs[0], parts[0].type.rank
    axis = n.attrs["axis"] % rank
    if any(p.srcs[0] is not x or p.attrs["axis"] % rank != axis for p in parts):
        return None
    if any(a.attrs["stop"] != b.attrs["start"] for a, b in zip(parts, parts[1:])):
        return None
    return Node.make("slice", [x], axis=n.attrs["axis"], start=parts[0].attrs["start"], stop=parts[-1].attrs["stop"])


RULES = [
    (P(("cast", "reshape", "expand", "slice"), P(name="x")), _identity),
    (P("scale", P(name="x"), where=lambda n: n.attrs["factor"] == 1.0), lambda n, x: x),
    (P("permute", P(name="x")), _permute),
    (P("reshape", P("reshape", P(name="x"), name="inner")), _reshape_chain),
    (P("concat"), _concat_of_slices),
]


@register_pass("dce")
def dce(g: Graph, ctx: PassContext) -> Graph:
    """Remove do-nothing nodes and folds no call reads."""
    out = graph_rewrite(g, RULES)
    read = {n.name for n in toposort([v for _, v in out.outputs]) if n.op == "param"}
    dead = [k for k, _ in out.folds if k not in read]
    if dead:
        out = out.replace(folds=[(k, v) for k, v in out.folds if k in read])
        ctx.note(f"dropped folds no call reads: {', '.join(dead)}")
    if out != g and not dead:
        ctx.note("removed do-nothing nodes")
    return out
