"""Attention as TensorIR for llvm: MLA's absorbed decode over the paged latent cache, and
dense causal attention (the naive prefill branch).

Both share one staged softmax: on a CPU a whole score row fits in cache, so scores,
their maximum, the sum of exponentials and the weighted sum of values are stages of
their own rather than an online (flash) softmax; every (row, token, head) runs in
parallel. Token t of row b attends to keys 0 .. total[b] - T + t (the T queries are the
last T of the row's tokens), so keys past a row's length are never read.

The paged kernel has the contract of the Triton one (codegen/triton/paged_attention.py):
q [B, T, H, DK], pages [NB, PS, DK] addressed through block_table, V the first DV
columns of each row, read through the table inside the expressions (no gathered copy),
and with an FP8 cache (kv_pack_fp8's rows) decoded as it is read.
"""

from __future__ import annotations

import torch

from dsc.codegen.tvm import fp8
from dsc.codegen.tvm.build import KernelDef, compiled, deliver, output_buffer, require_tvm, store_as, tvm_dtype
from dsc.codegen.tvm.gemm import TVM_OF_TORCH
from dsc.codegen.tvm.kernels import KERNELS

def _softmax_stages(te, tir, q, key, value, total, shape, s_len, dk: int, dv: int, scale: float, dt: str):
    """out [B, T, H, dv] and lse [B, H, T] stages; key(b, s, h, d) and value(b, s, h, d)
    are float32 expressions of the keys and values."""
    b_, t_, h_ = shape

    def visible(b, t, s):
        return s <= total[b].astype("int64") - (t_ - t)

    rd = te.reduce_axis((0, dk), name="d")
    dots = te.compute([b_, t_, h_, s_len], lambda b, t, h, s: te.sum(
        q[b, t, h, rd].astype("float32") * key(b, s, h, rd), axis=rd), name="dots")
    scores = te.compute([b_, t_, h_, s_len], lambda b, t, h, s: tir.if_then_else(
        visible(b, t, s), dots[b, t, h, s] * scale, tir.const(float("-inf"), "float32")), name="scores")
    rs = te.reduce_axis((0, s_len), name="s")
    mx = te.compute([b_, t_, h_], lambda b, t, h: te.max(scores[b, t, h, rs], axis=rs), name="mx")
    probs = te.compute([b_, t_, h_, s_len], lambda b, t, h, s: tir.if_then_else(
        visible(b, t, s), te.exp(scores[b, t, h, s] - mx[b, t, h]), tir.const(0.0, "float32")), name="probs")
    rs2 = te.reduce_axis((0, s_len), name="s2")
    den = te.compute([b_, t_, h_], lambda b, t, h: te.sum(probs[b, t, h, rs2], axis=rs2), name="den")
    rs3 = te.reduce_axis((0, s_len), name="s3")
    # a position the query does not see adds nothing, whatever its row holds (a page past a
    # row's length may hold NaN: 0 * NaN would poison the sum)
    acc = te.compute([b_, t_, h_, dv], lambda b, t, h, v: te.sum(tir.if_then_else(
        visible(b, t, rs3), probs[b, t, h, rs3] * value(b, rs3, h, v), tir.const(0.0, "float32")), axis=rs3),
        name="acc")
    # a query that sees no position: out 0 and lse +inf (FlashMLA's convention, as the Triton kernels)
    seen = lambda b, t, h: den[b, t, h] > tir.const(0.0, "float32")  # noqa: E731
    out = te.compute([b_, t_, h_, dv], lambda b, t, h, v: store_as(tir.if_then_else(
        seen(b, t, h), acc[b, t, h, v] / den[b, t, h], tir.const(0.0, "float32")), dt), name="out")
    lse = te.compute([b_, h_, t_], lambda b, h, t: tir.if_then_else(
        seen(b, t, h), mx[b, t, h] + te.log(den[b, t, h]), tir.const(float("inf"), "float32")), name="lse")
    return out, lse


def _cpu_schedule(sch, dk: int):
    """Every stage parallel over (row, token, head), but the two products, which do nearly
    all the work, walk the keys in the outer loop and the heads inside: MLA's heads
    share one latent row, so each cached row is read from memory once for all heads
    (scores) or for a chunk of four heads (the weighted sum, whose float32 accumulators
    of four heads stay in L1), instead of once per head. Scores are dot products over DK
    in vector lanes (rfactor); the weighted sum is an axpy over DV per key, which LLVM
    vectorizes (TVM's vectorize refuses a reduction block). Measured on this issue's CPU
    at V2-Lite's decode shape: 4x less time than head-outer loops."""
    lanes = next(v for v in (16, 8, 4, 2, 1) if dk % v == 0)
    dots = sch.get_sblock("dots")
    b, t, h, s, d = sch.get_loops(dots)
    _, di = sch.split(d, [None, lanes])
    rf = sch.rfactor(di, factor_axis=4)
    b, t, h, s, do, di = sch.get_loops(rf)
    sch.reorder(s, h)
    sch.parallel(sch.fuse(b, t, s))
    sch.vectorize(di)
    loops = sch.get_loops(dots)
    sch.parallel(sch.fuse(loops[0], loops[1], loops[2]))
    acc = sch.get_sblock("acc")
    b, t, h, v, s = sch.get_loops(acc)
    ho, hi = sch.split(h, [None, 4])
    sch.reorder(ho, s, hi, v)
    sch.parallel(sch.fuse(b, t, ho))
    sch.decompose_reduction(acc, s)
    for stage in ("scores", "mx", "probs", "den", "out", "lse"):
        loops = sch.get_loops(sch.get_sblock(stage))
        sch.parallel(sch.fuse(loops[0], loops[1], loops[2]))


def define_paged(dt: str, dk: int, dv: int, page: int, scale: float, fp8_group: int | None,
                 row_bytes: int) -> KernelDef:
    tvm = require_tvm()
    te, tir = tvm.te, tvm.tirx
    b_, t_, h_, n_pages, p_ = (te.var(n, "int64") for n in ("B", "T", "H", "NB", "P"))
    q = te.placeholder([b_, t_, h_, dk], dt, name="q")
    cache = te.placeholder([n_pages, page, row_bytes], dt if fp8_group is None else "uint8", name="cache")
    table = te.placeholder([b_, p_], "int32", name="block_table")
    total = te.placeholder([b_], "int32", name="total")

    # each key's page, once per (row, key), so the inner loops see a plain load and
    # vectorize; table entries past a row's length are never read
    pages = te.compute([b_, p_ * page], lambda b, s: tir.if_then_else(
        s < total[b].astype("int64"), table[b, s // page].astype("int64"), tir.const(0, "int64")), name="pages")

    def row(b, s, h, d):
        if fp8_group is None:
            return cache[pages[b, s], s % page, d].astype("float32")
        latent = fp8.unpack_latent(lambda j: cache[pages[b, s], s % page, j], d, dv, fp8_group)
        return store_as(latent, dt).astype("float32")  # kv_unpack_fp8 yields the latent in q's dtype

    out, lse = _softmax_stages(te, tir, q, row, row, total, (b_, t_, h_), p_ * page, dk, dv, scale, dt)
    return KernelDef.from_te(f"paged_mla_{dt}_{dk}_{dv}_p{page}" + (f"_fp8g{fp8_group}" if fp8_group else ""),
                             [q, cache, table, total, out, lse], lambda sch: _cpu_schedule(sch, dk))


def define_dense(dt: str, dk: int, dv: int, shared_kv: bool, scale: float) -> KernelDef:
    tvm = require_tvm()
    te, tir = tvm.te, tvm.tirx
    b_, t_, h_, s_ = (te.var(n, "int64") for n in ("B", "T", "H", "S"))
    hk = 1 if shared_kv else h_
    q = te.placeholder([b_, t_, h_, dk], dt, name="q")
    k = te.placeholder([b_, s_, hk, dk], dt, name="k")
    v = te.placeholder([b_, s_, hk, dv], dt, name="v")
    total = te.placeholder([b_], "int32", name="total")
    head = (lambda h: 0) if shared_kv else (lambda h: h)
    out, lse = _softmax_stages(te, tir, q, lambda b, s, h, d: k[b, s, head(h), d].astype("float32"),
                               lambda b, s, h, d: v[b, s, head(h), d].astype("float32"), total, (b_, t_, h_), s_,
                               dk, dv, scale, dt)
    return KernelDef.from_te(f"attention_{dt}_{dk}_{dv}" + ("_mqa" if shared_kv else ""),
                             [q, k, v, total, out, lse], lambda sch: _cpu_schedule(sch, dk))


def paged_mla_attention(q: torch.Tensor, cache: torch.Tensor, block_table: torch.Tensor, lengths: torch.Tensor,
                        scale: float, v_dim: int, *, len_offset: int = 0, out: torch.Tensor | None = None,
                        fp8_group: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(out [B, T, H, v_dim] in q's dtype, lse [B, H, T] float32); lengths + len_offset are
    each row's tokens, the T queries last. fp8_group: the cache holds kv_pack_fp8 rows
    (uint8) whose c_kv is quantized in groups of that many values."""
    batch, tokens, heads, dk = q.shape
    if fp8_group is not None:
        cache = cache.view(torch.uint8)
    fn = compiled(define_paged, TVM_OF_TORCH[q.dtype], dk, v_dim, cache.shape[1], float(scale), fp8_group,
                  cache.shape[2])
    total = (lengths.to(torch.int32) + len_offset).contiguous()
    result = output_buffer(out, (batch, tokens, heads, v_dim), q.dtype, q.device)
    lse = torch.empty(batch, heads, tokens, dtype=torch.float32, device=q.device)
    if result.numel():
        fn(q.contiguous(), cache.contiguous(), block_table.to(torch.int32).contiguous(), total, result, lse)
    return deliver(result, out), lse


@KERNELS.provides("attention")
def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor, scale: float, *,
              len_offset: int | None = None, out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """q [B, T, H, DK], k [B, S, H or 1, DK], v [B, S, H or 1, DV]; lengths + len_offset
    (default T: the IR's attention op) are each row's tokens, its T queries last.
    (out, lse [B, H, T])."""
    batch, tokens, heads, dk = q.shape
    fn = compiled(define_dense, TVM_OF_TORCH[q.dtype], dk, v.shape[3], k.shape[2] == 1 and heads != 1, float(scale))
    total = (lengths.to(torch.int32) + (tokens if len_offset is None else len_offset)).contiguous()
    result = output_buffer(out, (batch, tokens, heads, v.shape[3]), q.dtype, q.device)
    lse = torch.empty(batch, heads, tokens, dtype=torch.float32, device=q.device)
    if result.numel():
        fn(q.contiguous(), k.contiguous(), v.contiguous(), total, result, lse)
    return deliver(result, out), lse


@KERNELS.provides("paged_attention")
def _paged_attention(q, cache, table, lengths, scale, v_dim, *, len_offset, causal=True, num_splits=None,
                     schedule=None, fp8_group=None, out=None):
    """The group kinds' convention on this kernel. num_splits and schedule steer the GPU
    kernels' split-KV; the CPU kernel has no split and ignores both. Non-causal attention is the
    causal kernel on the T queries folded into the heads as one token that sees every
    position (one latent head serves all heads, as FlashMLA folds them)."""
    if causal or q.shape[1] == 1:
        return paged_mla_attention(q, cache, table, lengths, scale, v_dim, len_offset=len_offset, out=out,
                                   fp8_group=fp8_group)
    batch, tokens, heads, dk = q.shape
    o, lse = paged_mla_attention(q.reshape(batch, 1, tokens * heads, dk), cache, table, lengths, scale, v_dim,
                                 len_offset=len_offset, fp8_group=fp8_group)
    lse = lse.view(batch, tokens, heads).transpose(1, 2).contiguous()
    return deliver(o.view(batch, tokens, heads, v_dim), out), lse


@KERNELS.lists("attention")
def _dense_defs(group, d) -> list:
    n = group.root
    q, k, v, _ = n.srcs
    return [d(define_dense, tvm_dtype(q), q.shape[3], v.shape[3], k.shape[2] == 1 and q.shape[2] != 1,
              float(n.attrs["scale"]))]


@KERNELS.lists("paged_attention")
def _paged_defs(group, d) -> list:
    n = group.root
    q, cache = group.inputs[:2]
    unpack = next((m for m in group.nodes if m.op == "kv_unpack_fp8"), None)
    return [d(define_paged, tvm_dtype(q), q.shape[3], n.shape[-1], cache.shape[1], float(n.attrs["scale"]),
              unpack.attrs["group"] if unpack else None, cache.shape[2])]
