"""Kernel group: causal flash attention over dense K/V (MLA prefill, the naive branch).

The naive MLA branch expands the cache through kv_b_proj into per-head K [B, S, H, 192]
and V [B, S, H, 128]; this kernel reads them through strides (V is a slice of the
expansion, K may be shared by all heads with a zero head stride), one program per
(query block, row, head), with an online softmax in float32 and keys past the block's
causal limit never loaded. Rows hold different lengths (varlen by cache_seqlens).
"""

from __future__ import annotations

import math

import torch

from dsc.codegen.triton.build import TRITON_TYPES, KernelSpec, choosing_for, load_kernel, next_pow2, with_helpers
from dsc.codegen.triton.kernels import KERNELS

SOURCE = '''
import triton
import triton.language as tl


@triton.jit
def flash_attention(q_ptr, sqb, sqt, sqh, k_ptr, skb, sks, skh, v_ptr, svb, svs, svh, lens_ptr, len_offset,
                    out_ptr, lse_ptr, T, H, scale_log2,
                    DK: tl.constexpr, DV: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                    BLOCK_DK: tl.constexpr, BLOCK_DV: tl.constexpr, DOT_F32: tl.constexpr):
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    t = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    t_ok = t < T
    total = tl.load(lens_ptr + b) + len_offset
    last = total - T + t
    stop = tl.minimum(total, total - T + tl.program_id(0) * BLOCK_M + BLOCK_M)

    dk = tl.arange(0, BLOCK_DK)
    dv = tl.arange(0, BLOCK_DV)
    q = tl.load(q_ptr + b.to(tl.int64) * sqb + t[:, None] * sqt + h * sqh + dk[None, :],
                mask=t_ok[:, None] & (dk[None, :] < DK), other=0.0)
    if DOT_F32:
        q = q.to(tl.float32)
    k_base = k_ptr + b.to(tl.int64) * skb + h * skh
    v_base = v_ptr + b.to(tl.int64) * svb + h * svh

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    for n0 in range(0, stop, BLOCK_N):
        s_idx = n0 + tl.arange(0, BLOCK_N)
        s_ok = s_idx < stop
        k = tl.load(k_base + s_idx[:, None].to(tl.int64) * sks + dk[None, :], mask=s_ok[:, None] & (dk[None, :] < DK),
                    other=0.0)
        v = tl.load(v_base + s_idx[:, None].to(tl.int64) * svs + dv[None, :], mask=s_ok[:, None] & (dv[None, :] < DV),
                    other=0.0)
        if DOT_F32:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        s = tl.dot(q, tl.trans(k))
        s = tl.where(s_idx[None, :] <= last[:, None], s * scale_log2, float("-inf"))
        p, m_i, l_i, acc = softmax_step(s, m_i, l_i, acc)
        acc += tl.dot(p.to(v.dtype), v)

    out, lse = softmax_finish(m_i, l_i, acc)
    o_row = ((b.to(tl.int64) * T + t) * H + h) * DV
    tl.store(out_ptr + o_row[:, None] + dv[None, :], to_out(out, out_ptr.dtype.element_ty),
             mask=t_ok[:, None] & (dv[None, :] < DV))
    # a query that saw no key: lse = +inf, FlashAttention's and FlashMLA's convention (out is 0)
    tl.store(lse_ptr + (b * H + h) * T + t, tl.where(lse == float("-inf"), float("inf"), lse), mask=t_ok)
'''

SPEC = KernelSpec("flash_attention", with_helpers(SOURCE), "(cdiv(T, BLOCK_M), B * H)", dot_rows="BLOCK_M")
BLOCK_N = 32


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor, scale: float, *,
                    len_offset: int = 0, block_m: int | None = None,
                    out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """q [B, T, H, DK]; k [B, S, H or 1, DK]; v [B, S, H or 1, DV] (any strides with a unit
    last stride); lengths [B] int32 + len_offset = tokens each row holds, the T queries
    last. Returns (out [B, T, H, DV] in q's dtype, lse [B, H, T] float32)."""
    batch, tokens, heads, dk = q.shape
    dv = v.shape[3]
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    if out is None:
        out = torch.empty(batch, tokens, heads, dv, dtype=q.dtype, device=q.device)
    lse = torch.empty(batch, heads, tokens, dtype=torch.float32, device=q.device)
    bm = block_m or max(16, min(64, next_pow2(tokens)))
    kh, vh = (0 if x.shape[2] == 1 else x.stride(2) for x in (k, v))
    kernel = load_kernel(SPEC, q.device)
    kernel[(-(-tokens // bm), batch * heads)](
        q, q.stride(0), q.stride(1), q.stride(2), k, k.stride(0), k.stride(1), kh, v, v.stride(0), v.stride(1), vh,
        lengths, len_offset, out, lse, tokens, heads, scale * math.log2(math.e),
        DK=dk, DV=dv, BLOCK_M=bm, BLOCK_N=BLOCK_N, BLOCK_DK=max(16, next_pow2(dk)), BLOCK_DV=max(16, next_pow2(dv)),
        DOT_F32=choosing_for(q).type != "cuda" or q.dtype == torch.float32)
    return out, lse


def signature(dtype: str, tokens: int = 128) -> list[tuple]:
    """(spec, signature, constexprs) at DeepSeek-V3's naive widths (192 / 128), for compile checks."""
    sig = {"q_ptr": f"*{dtype}", "sqb": "i32", "sqt": "i32", "sqh": "i32", "k_ptr": f"*{dtype}", "skb": "i32",
           "sks": "i32", "skh": "i32", "v_ptr": f"*{dtype}", "svb": "i32", "svs": "i32", "svh": "i32",
           "lens_ptr": "*i32", "len_offset": "i32", "out_ptr": f"*{dtype}", "lse_ptr": "*fp32", "T": "i32", "H": "i32",
           "scale_log2": "fp32"}
    const = {"DK": 192, "DV": 128, "BLOCK_M": max(16, min(64, next_pow2(tokens))), "BLOCK_N": BLOCK_N,
             "BLOCK_DK": 256, "BLOCK_DV": 128, "DOT_F32": dtype == "fp32"}
    return [(SPEC, {**sig, **{k: "constexpr" for k in const}}, const)]


@KERNELS.provides("attention")
def _attention(q, k, v, lengths, scale, *, len_offset, out=None):
    return flash_attention(q, k, v, lengths, scale, len_offset=len_offset, out=out)


@KERNELS.lists("attention")
def _jobs(group) -> list[tuple]:
    return signature(TRITON_TYPES[group.root.dtype.name])
