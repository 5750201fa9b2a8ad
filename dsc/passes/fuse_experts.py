"""fuse_experts: the per-expert MoE becomes one sort and two grouped GEMMs.

    routing (unchanged) -> ids [N, K], w [N, K]
    shared experts join as always-selected experts with weight one, after the routed
    scaling: ids' = [ids | E .. E+S-1], w' = [w | 1 .. 1]
    sorted = moe_align(ids')                        slots by expert, padded to EXPERT_BLOCK
    h      = grouped_gemm(x, sorted, ids', W_gate_up, swiglu)   gate and up in one GEMM
    y      = grouped_gemm(h, sorted, ids', W_down, w')          routing-weight epilogue
    out    = moe_combine(y, sorted, ids')

DeepSeek's shared MLP of width S * I splits exactly into S experts of width I (SiLU and
the product act per intermediate unit), so the shared experts need no separate GEMMs.
W_gate_up [E + S, 2I, H] and W_down [E + S, H, I] are weight-only concatenations: the
fold pass moves them to load time.
"""

from __future__ import annotations

from dsc.ir.build import op
from dsc.ir.graph import Graph
from dsc.ir.node import Node
from dsc.ir.ops.grouped import EXPERT_BLOCK
from dsc.passes.manager import PassContext, register_pass
from dsc.passes.rewrite import P, substitute

_SHARED = P("linear", P("mul", P("silu", P("linear", P(name="sx"), P("param", name="sg"))),
                        P("linear", P(name="sx"), P("param", name="su"))),
            P("param", name="sd"))
_ROUTED = P("moe_experts", name="routed")


_ROUTED_PLUS_SHARED = P("add", _ROUTED, _SHARED)


def _match_shared_add(n: Node) -> dict | None:
    caps: dict = {}
    if not _ROUTED_PLUS_SHARED.match(n, caps) or caps["sx"] is not caps["routed"].srcs[0]:
        return None
    inter = caps["routed"].srcs[3].shape[1]
    width = caps["sg"].shape[0]
    return caps if isinstance(width, int) and width % inter == 0 else None


def fused_moe(routed: Node, shared: dict | None) -> Node:
    x, ids, w, gate, up, down = routed.srcs
    experts, inter, hidden = gate.shape
    gate_up = op("concat", gate, up, axis=1)  # [E, 2I, H]: gate rows first, as transformers 5 stores them
    w_down = down
    if shared is not None:
        count = shared["sg"].shape[0] // inter
        s_gate = op("reshape", shared["sg"], shape=(count, inter, hidden))
        s_up = op("reshape", shared["su"], shape=(count, inter, hidden))
        s_down = op("permute", op("reshape", shared["sd"], shape=(hidden, count, inter)), perm=(1, 0, 2))
        gate_up = op("concat", gate_up, op("concat", s_gate, s_up, axis=1), axis=0)
        w_down = op("concat", down, s_down, axis=0)
        ids = op("append_iota", ids, start=experts, count=count)
        w = op("append_const", w, value=1.0, count=count)
        experts += count
    sorted_slots = op("moe_align", ids, experts=experts, block=EXPERT_BLOCK)
    h = op("grouped_gemm", x, sorted_slots, ids, gate_up, gather=True, swiglu=True)
    y = op("grouped_gemm", h, sorted_slots, ids, w_down, w, gather=False)
    return op("moe_combine", y, sorted_slots, ids, dtype=x.dtype.name)


@register_pass("fuse_experts")
def fuse_experts(g: Graph, ctx: PassContext) -> Graph:
    """Expert fusion: routing, align, two grouped GEMMs with fused epilogues, combine."""
    replace: dict[int, Node] = {}
    absorbed: set[int] = set()
    for n in g.nodes():
        caps = _match_shared_add(n)
        if caps is not None:
            replace[id(n)] = fused_moe(caps["routed"], caps)
            absorbed.add(id(caps["routed"]))
    alone = [n for n in g.nodes() if n.op == "moe_experts" and id(n) not in absorbed]
    for n in alone:
        replace[id(n)] = fused_moe(n, None)
    if not replace:
        ctx.note(f"no per-expert MoE in graph {g.name}; unchanged")
        return g
    with_shared = len(replace) - len(alone)
    ctx.note(f"{len(replace)} MoE layer(s) fused into grouped GEMMs (block {EXPERT_BLOCK})"
             + (", shared experts folded in as always-selected experts" if with_shared else ""))
    return substitute(g, lambda orig, _: replace.get(id(orig)))
