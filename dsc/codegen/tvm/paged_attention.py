"""MLA attention over the paged latent cache as TensorIR for llvm (the absorbed decode).

The same contract as the Triton kernel (codegen/triton/paged_attention.py): q [B, T, H,
DK], a cache of pages [pages, PS, DK] addressed through block_table, V the first DV
columns of each row, causal over the last T of each row's `total` tokens. Cache rows
are read through the block table inside the expressions (no gathered copy). On a CPU
the whole row fits in cache, so the softmax is done in stages (scores, max, sum of
exponentials, weighted sum) rather than online; every (row, head) runs in parallel.
"""

from __future__ import annotations

import torch

from dsc.codegen.tvm.build import build, require_tvm, store_as
from dsc.codegen.tvm.gemm import TVM_OF_TORCH

_KERNELS: dict[tuple, object] = {}


def _kernel(dtype: torch.dtype, dk: int, dv: int, page: int, scale: float, causal: bool):
    key = (dtype, dk, dv, page, scale, causal)
    if key in _KERNELS:
        return _KERNELS[key]
    tvm = require_tvm()
    te, tir = tvm.te, tvm.tirx
    dt = TVM_OF_TORCH[dtype]
    b_, t_, h_, n_pages, p_ = (te.var(n, "int64") for n in ("B", "T", "H", "NB", "P"))
    q = te.placeholder([b_, t_, h_, dk], dt, name="q")
    cache = te.placeholder([n_pages, page, dk], dt, name="cache")
    table = te.placeholder([b_, p_], "int32", name="block_table")
    total = te.placeholder([b_], "int32", name="total")
    s_len = p_ * page

    def row(b, s, d):  # cache row s of batch row b, column d; table entries past a row's length are never read
        page_id = tir.if_then_else(s < total[b].astype("int64"), table[b, s // page].astype("int64"),
                                   tir.const(0, "int64"))
        return cache[page_id, s % page, d].astype("float32")

    def visible(b, t, s):
        last = total[b].astype("int64") - (t_ - t) if causal else total[b].astype("int64") - 1
        return s <= last

    rd = te.reduce_axis((0, dk), name="d")
    dots = te.compute([b_, t_, h_, s_len], lambda b, t, h, s: te.sum(
        q[b, t, h, rd].astype("float32") * row(b, s, rd), axis=rd), name="dots")
    scores = te.compute([b_, t_, h_, s_len], lambda b, t, h, s: tir.if_then_else(
        visible(b, t, s), dots[b, t, h, s] * scale, tir.const(float("-inf"), "float32")), name="scores")
    rs = te.reduce_axis((0, s_len), name="s")
    mx = te.compute([b_, t_, h_], lambda b, t, h: te.max(scores[b, t, h, rs], axis=rs), name="mx")
    probs = te.compute([b_, t_, h_, s_len], lambda b, t, h, s: tir.if_then_else(
        visible(b, t, s), te.exp(scores[b, t, h, s] - mx[b, t, h]), tir.const(0.0, "float32")), name="probs")
    rs2 = te.reduce_axis((0, s_len), name="s2")
    den = te.compute([b_, t_, h_], lambda b, t, h: te.sum(probs[b, t, h, rs2], axis=rs2), name="den")
    rs3 = te.reduce_axis((0, s_len), name="s3")
    acc = te.compute([b_, t_, h_, dv], lambda b, t, h, v: te.sum(probs[b, t, h, rs3] * row(b, rs3, v), axis=rs3),
                     name="acc")

    out = te.compute([b_, t_, h_, dv], lambda b, t, h, v: store_as(acc[b, t, h, v] / den[b, t, h], dt), name="out")
    lse = te.compute([b_, h_, t_], lambda b, h, t: mx[b, t, h] + te.log(den[b, t, h]), name="lse")
    sch = tvm.s_tir.Schedule(tvm.IRModule({"main": te.create_prim_func([q, cache, table, total, out, lse])}))
    for name in ("dots", "scores", "mx", "probs", "den", "acc", "out", "lse"):
        loops = sch.get_loops(sch.get_sblock(name))
        sch.parallel(sch.fuse(loops[0], loops[1], loops[2]))  # (row, token, head) in parallel
    fn = build(sch.mod, f"paged_mla_{dt}_{dk}_{dv}_p{page}")
    _KERNELS[key] = fn
    return fn


def paged_mla_attention(q: torch.Tensor, cache: torch.Tensor, block_table: torch.Tensor, lengths: torch.Tensor,
                        scale: float, v_dim: int, *, len_offset: int = 0, causal: bool = True,
                        out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(out [B, T, H, v_dim] in q's dtype, lse [B, H, T] float32); lengths + len_offset are
    each row's tokens, the T queries last."""
    batch, tokens, heads, dk = q.shape
    fn = _kernel(q.dtype, dk, v_dim, cache.shape[1], float(scale), causal)
    total = (lengths.to(torch.int32) + len_offset).contiguous()
    result = out if out is not None and out.is_contiguous() else torch.empty(batch, tokens, heads, v_dim,
                                                                              dtype=q.dtype)
    lse = torch.empty(batch, heads, tokens, dtype=torch.float32)
    fn(q.contiguous(), cache.contiguous(), block_table.contiguous(), total, result, lse)
    if out is not None and result is not out:
        out.copy_(result)
        return out, lse
    return result, lse
