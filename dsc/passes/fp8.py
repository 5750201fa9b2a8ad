"""fp8: FP8 casting, DeepSeek-V3's block-scaled scheme.

Every matmul with a weight-only right operand (the projections of MLA, the grouped
expert GEMMs, the shared experts) gets its weight as float8_e4m3fn with one float32
scale per 128 x 128 block, and becomes a block-scaled FP8 matmul. On sm90 (H100/H800:
FP8 tensor cores) activations are quantised per token per 128 channels at run time;
on sm80 (A100: none) the pass gives weight-only FP8, the weight dequantised inside
the matmul. The router stays in float32 (DeepSeek routes in full precision), and so
does the einsum of absorbed MLA with its folded W_UK / W_UV (a few MiB; FlashMLA and
SGLang absorb in bf16 too). The quantisation itself is weight-only: `fold` moves it to
load time.
"""

from __future__ import annotations

import sympy

from dsc.ir.build import op
from dsc.ir.graph import Graph
from dsc.ir.node import Node
from dsc.passes.fold import weight_only
from dsc.passes.manager import PassContext, register_pass
from dsc.passes.rewrite import substitute

BLOCK = 128


def _bytes(t) -> int:
    return int(sympy.sympify(t.nbytes()))


def _quantized(w: Node) -> tuple[Node, Node]:
    s = op("fp8_scale", w, tile_n=BLOCK, tile_k=BLOCK)
    return op("fp8_quant", w, s, tile_n=BLOCK, tile_k=BLOCK), s


@register_pass("fp8", after=("absorb", "fuse_experts"), exact=False)
def fp8(g: Graph, ctx: PassContext) -> Graph:
    """FP8 casting: block-scaled e4m3 weights and matmuls (weight-only on sm80)."""
    act_quant = ctx.target != "sm80"
    const = weight_only(g)
    router = {id(s) for n in g.nodes() if n.op == "router_scores" for s in n.srcs}
    targets: set[int] = set()
    before = after = 0
    for n in g.nodes():
        if n.op == "linear" and const[id(n.srcs[1])] and id(n) not in router:
            w = n.srcs[1]
        elif n.op == "grouped_gemm" and const[id(n.srcs[3])]:
            w = n.srcs[3]
        else:
            continue
        targets.add(id(n))
        q, s = _quantized(w)
        before += _bytes(w.type)
        after += _bytes(q.type) + _bytes(s.type)

    def quantise(orig: Node, n: Node) -> Node | None:
        # built from the rebuilt node n: its operands may hold other quantised matmuls
        if id(orig) not in targets:
            return None
        if n.op == "linear":
            q, s = _quantized(n.srcs[1])
            return op("fp8_linear", n.srcs[0], q, s, act_quant=act_quant, block=BLOCK)
        q, s = _quantized(n.srcs[3])
        return op("grouped_gemm_fp8", *n.srcs[:3], q, s, *n.srcs[4:], gather=n.attrs["gather"],
                  swiglu=n.attrs["swiglu"], act_quant=act_quant, block=BLOCK)
    skipped = sum(n.op == "moe_experts" for n in g.nodes())
    if skipped:
        ctx.note(f"{skipped} per-expert MoE op(s) keep their dtype: run fuse_experts first to quantise the experts")
    if not targets:
        if not skipped:
            ctx.note(f"no weight matmul to quantise in graph {g.name}; unchanged")
        return g
    mode = "FP8 activations and weights (sm90)" if act_quant else "weight-only FP8 (sm80)"
    ctx.note(f"{len(targets)} matmul(s) to {mode}; their weights {before:,} -> {after:,} bytes")
    return substitute(g, quantise)


# e4m3 keeps 3 mantissa bits: rounding to nearest moves a value by at most 2^-4 of
# itself, by 2^-4 / sqrt(3) in RMS (uniform rounding error).
E4M3_RMS = 2.0 ** -4 / 3 ** 0.5
FP8_OPS = ("fp8_linear", "grouped_gemm_fp8")


def error_bound(g: Graph, margin: float = 4.0) -> float:
    """A bound on the relative error the FP8 rewrites add to g's "out" output.

    A matmul whose operands are both rounded has relative error about sqrt(2) x E4M3_RMS
    (one operand: E4M3_RMS, weight-only FP8). Independent errors add in quadrature along
    a chain, so L rounded matmuls on the longest input-to-output path give
    sqrt(L) x that; an FP8 latent cache rounds one more operand of attention. The bound
    is `margin` times this estimate. Measured error / estimate on tiny random layers:
    graph-level over 400 drawn configs, median 0.74, max 1.74; MLA modules against
    dsc.eager over 900 prefill and decode calls, median 0.68, 99th percentile 1.50, max
    2.69; hypothesis' search for a worst case found 3.05 (one head, one row, one token:
    the whole output hangs on one softmax). 0 when g has no FP8 at all.
    """
    depth: dict[int, float] = {}
    for n in g.nodes():
        here = max((depth[id(s)] for s in n.srcs), default=0.0)
        if n.op in FP8_OPS:
            here += (2.0 if n.attrs["act_quant"] else 1.0) * E4M3_RMS ** 2
        elif n.op == "kv_pack_fp8":
            here += E4M3_RMS ** 2
        depth[id(n)] = here
    return margin * depth[id(g.output("out"))] ** 0.5
