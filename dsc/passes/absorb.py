"""absorb: KV-latent absorption for MLA.

The naive graph expands every cached latent through kv_b_proj into per-head keys and
values on every call. Absorption moves kv_b_proj to the other side of the dot
products instead (DeepSeek-V2 paper, section 2.1.3; FlashMLA's layout):

    score = q_nope . (W_UK c) + q_pe . k_pe  =  (W_UK^T q_nope) . c + q_pe . k_pe
    out_h = sum_s p_s (W_UV c_s)             =  W_UV (sum_s p_s c_s)

so each query head is projected into the latent space (q_lat = W_UK^T q_nope), scores
are taken against the cached row [c_kv ; k_pe] itself (kv_lora_rank + rope wide, 576
for V3), the values are c_kv, and the latent output goes back through W_UV before
o_proj. Nothing per head is ever materialised for the cache.

It pays when the call is memory-bound (decode, short prefill) and loses when it is
compute-bound (long prefill: absorbed attention does (rank + rope + rank) work per
(query, key, head) against (nope + rope + v) naive). The pass keeps both forms behind
a `dispatch` on T, the new-token count, at the crossover the cost model gives for the
target machine. W_UK and W_UV are weight-only slices of kv_b_proj: the fold pass moves
them to load time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sympy

from dsc.ir.build import op
from dsc.ir.cost import graph_cost
from dsc.ir.graph import Graph
from dsc.ir.node import Node, toposort
from dsc.ir.roofline import MACHINES
from dsc.ir.types import sym
from dsc.passes.manager import PassContext, register_pass
from dsc.passes.rewrite import P, Pat, substitute

_LATENT = P(name="latent")
_KV = P("reshape", P("linear", P("slice", _LATENT, name="c_kv"), P("param", name="w_kvb")), name="kv")
_K_ROPE = P("reshape", P("slice", _LATENT, name="k_rope"))


def _naive(k_rope: Pat) -> Pat:
    return P("attention",
             P("concat", P(name="q_nope"), P(name="q_pe")),
             P("concat", P("slice", _KV, name="k_nope"), k_rope),
             P("slice", _KV, name="v"),
             P(name="seqlens"), name="attn")


# k_pe broadcast to every head; with one head dce removes the expand
NAIVE_MLA = (_naive(P("expand", _K_ROPE)), _naive(_K_ROPE))
MAX_T = 1 << 16
# The decision scenario: a call appending T tokens to a row that already holds this
# many. With no context (S = T) the naive form never does less work: absorbing the
# queries costs what expanding the keys saves. Absorption wins against a cached
# context, which is where decode and chunked prefill run.
REFERENCE_CONTEXT = 4096


def match_naive(n: Node) -> dict | None:
    """Captures of a naive MLA attention node, with its slices checked; else None."""
    for pattern in NAIVE_MLA:
        caps: dict = {}
        if pattern.match(n, caps):
            break
    else:
        return None
    lat, kv = caps["latent"], caps["kv"]
    rank = caps["c_kv"].shape[-1]
    nope, vdim = caps["k_nope"].shape[-1], caps["v"].shape[-1]
    heads = kv.shape[2]
    ok = (lat.type.rank == 3 and kv.type.rank == 4 and isinstance(heads, int)
          and caps["c_kv"].attrs["start"] == 0
          and caps["k_rope"].attrs["start"] == rank and caps["k_rope"].attrs["stop"] == lat.shape[-1]
          and caps["k_nope"].attrs["start"] == 0 and caps["v"].attrs["start"] == nope
          and caps["v"].attrs["stop"] == nope + vdim and kv.shape[-1] == nope + vdim
          and caps["q_nope"].shape[-1] == nope)
    return caps if ok else None


def absorbed_attention(caps: dict) -> Node:
    """The absorbed form of one matched naive attention: same result type."""
    attn, lat, w = caps["attn"], caps["latent"], caps["w_kvb"]
    heads, nope, vdim, rank = caps["kv"].shape[2], caps["k_nope"].shape[-1], caps["v"].shape[-1], \
        caps["c_kv"].shape[-1]
    B, S = lat.shape[0], lat.shape[1]
    w3 = op("reshape", w, shape=(heads, nope + vdim, rank))
    w_uk = op("slice", w3, axis=1, start=0, stop=nope)  # [H, nope, rank]
    w_uv = op("slice", w3, axis=1, start=nope, stop=nope + vdim)  # [H, v, rank]
    q_lat = op("einsum", caps["q_nope"], w_uk, spec="bthd,hdc->bthc")
    q = op("concat", q_lat, caps["q_pe"], axis=-1)  # [B, T, H, rank + rope]
    k = op("reshape", lat, shape=(B, S, 1, lat.shape[-1]))  # the cached rows, one head shared
    v = op("slice", k, axis=-1, start=0, stop=rank)  # c_kv
    o_lat = op("attention", q, k, v, caps["seqlens"], scale=attn.attrs["scale"])
    return op("einsum", o_lat, w_uv, spec="bthc,hvc->bthv")


@dataclass
class Tradeoff:
    """Per-call cost of both forms, in T (new tokens) and S (cached tokens, page-rounded)."""

    naive_flops: sympy.Expr
    naive_bytes: sympy.Expr
    absorbed_flops: sympy.Expr
    absorbed_bytes: sympy.Expr
    crossover: int  # absorbed for T <= crossover
    machine: str
    context: int = REFERENCE_CONTEXT


def _per_call(g: Graph, S) -> tuple[sympy.Expr, sympy.Expr]:
    c = graph_cost(g)
    page = None
    for n in g.nodes():
        if n.op == "paged_gather":
            page = n.srcs[0].shape[1]
    subs = {sym("P"): S / page} if page else {}
    return sympy.expand(c.flops.subs(subs)), sympy.expand(c.bytes.subs(subs))


def tradeoff(naive: Graph, absorbed: Graph, target: str) -> Tradeoff:
    """The crossover T: the largest T for which the absorbed form is no slower on the
    target's roofline, for one row appending T tokens to REFERENCE_CONTEXT cached ones
    (S = T + REFERENCE_CONTEXT). Per call the naive form pays S x (expansion through
    kv_b_proj), the absorbed one T x (query absorption) plus T x S x (rank + rope + rank
    - nope - rope - v) more attention work; past a few thousand cached tokens the
    crossover settles near kv_lora_rank * (nope + v) / (2 rank - nope - v + ...)."""
    S, T, B = sym("S"), sym("T"), sym("B")
    nf, nb = _per_call(naive, S)
    af, ab = _per_call(absorbed, S)
    machine = MACHINES[target]
    ts = np.arange(1, MAX_T + 1, dtype=np.float64)

    def seconds(flops, nbytes):
        at = {B: 1, S: T + REFERENCE_CONTEXT}
        f = sympy.lambdify(T, flops.subs(at), "numpy")
        b = sympy.lambdify(T, nbytes.subs(at), "numpy")
        return np.maximum(np.broadcast_to(f(ts), ts.shape) / machine.flops,
                          np.broadcast_to(b(ts), ts.shape) / machine.bandwidth)

    naive_wins = seconds(nf, nb) < seconds(af, ab)
    crossover = int(np.argmax(naive_wins)) if naive_wins.any() else MAX_T
    return Tradeoff(nf, nb, af, ab, crossover, machine.name)


@register_pass("absorb")
def absorb(g: Graph, ctx: PassContext) -> Graph:
    """KV-latent absorption: attention over the latent cache, dispatched on T."""
    dispatched = {id(s) for n in g.nodes() if n.op == "dispatch" for s in n.srcs}
    matches = [c for n in g.nodes() if n.op == "attention" and id(n) not in dispatched
               for c in [match_naive(n)] if c is not None]
    if not matches:
        ctx.note(f"no naive MLA attention in graph {g.name}; unchanged")
        return g
    replace: dict[int, Node] = {}
    for caps in matches:
        attn = caps["attn"]
        absorbed = absorbed_attention(caps)
        t_dim = attn.srcs[0].shape[1]
        alone = substitute(g, lambda orig, _, a=attn, r=absorbed: r if orig is a else None)
        trade = tradeoff(g, alone, ctx.target if ctx.target in MACHINES else "sm90")
        if isinstance(t_dim, sympy.Symbol):
            replace[id(attn)] = op("dispatch", absorbed, attn, symbol=str(t_dim), le=trade.crossover)
            ctx.note(f"absorbed for {t_dim} <= {trade.crossover}, naive above ({trade.machine} roofline)")
        else:
            choice = absorbed if t_dim <= trade.crossover else attn
            replace[id(attn)] = choice
            ctx.note(f"T = {t_dim}: {'absorbed' if choice is absorbed else 'naive'} form "
                     f"(crossover {trade.crossover} on {trade.machine})")
    return substitute(g, lambda orig, _: replace.get(id(orig)))


def naive_and_absorbed(g: Graph) -> tuple[Graph, Graph] | None:
    """The two forms a graph's absorb dispatch chooses between (for `dsc show --cost`)."""
    for n in toposort([v for _, v in g.outputs]):
        if n.op == "dispatch" and match_naive(n.srcs[1]):
            first = substitute(g, lambda orig, _, d=n: d.srcs[0] if orig is d else None)
            second = substitute(g, lambda orig, _, d=n: d.srcs[1] if orig is d else None)
            return second, first
    return None
