"""Kernel group: RMSNorm + RoPE + latent-cache write (MLA's per-token cache update).

One program per new token: it normalises the token's c_kv (kv_lora_rank wide) in
float32, rotates its k_pe with the YaRN frequencies at its position, and writes the
row [c_kv ; k_pe] straight into its slot of the paged cache, so the normalised latent
never makes a round trip through memory. The host turns (block_table, cache_seqlens)
into one slot index per token, as vLLM's slot_mapping does.
"""

from __future__ import annotations

import torch

from dsc.codegen.triton.build import KernelSpec, load_kernel, next_pow2, with_helpers

SOURCE = '''
import triton
import triton.language as tl


@triton.jit
def latent_append(kv_ptr, kv_stride, w_ptr, pos_ptr, slot_ptr, inv_freq_ptr, cache_ptr, mscale, eps,
                  RANK: tl.constexpr, ROPE: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_H: tl.constexpr,
                  INTERLEAVE: tl.constexpr):
    row = tl.program_id(0)
    src = kv_ptr + row.to(tl.int64) * kv_stride
    dst = cache_ptr + tl.load(slot_ptr + row).to(tl.int64) * (RANK + ROPE)
    out_ty = cache_ptr.dtype.element_ty

    # RMSNorm of c_kv in float32; DeepSeek casts back before scaling by the weight
    r = tl.arange(0, BLOCK_R)
    rm = r < RANK
    c = tl.load(src + r, mask=rm, other=0.0).to(tl.float32)
    inv_rms = 1.0 / tl.sqrt(tl.sum(c * c, axis=0) / RANK + eps)
    w = tl.load(w_ptr + r, mask=rm, other=0.0).to(tl.float32)
    normed = to_out(c * inv_rms, out_ty).to(tl.float32) * w
    tl.store(dst + r, to_out(normed, out_ty), mask=rm)

    # RoPE of k_pe; the result is written de-interleaved (first halves, then second halves)
    h = tl.arange(0, BLOCK_H)
    hm = h < ROPE // 2
    if INTERLEAVE:
        i1 = RANK + 2 * h
        i2 = i1 + 1
    else:
        i1 = RANK + h
        i2 = i1 + ROPE // 2
    x1 = tl.load(src + i1, mask=hm, other=0.0).to(tl.float32)
    x2 = tl.load(src + i2, mask=hm, other=0.0).to(tl.float32)
    angle = tl.load(pos_ptr + row).to(tl.float32) * tl.load(inv_freq_ptr + h, mask=hm, other=0.0)
    cos = tl.cos(angle) * mscale
    sin = tl.sin(angle) * mscale
    tl.store(dst + RANK + h, to_out(x1 * cos - x2 * sin, out_ty), mask=hm)
    tl.store(dst + RANK + ROPE // 2 + h, to_out(x2 * cos + x1 * sin, out_ty), mask=hm)
'''

SPEC = KernelSpec("latent_append", with_helpers(SOURCE), "(new tokens,)")


def slot_mapping(block_table: torch.Tensor, cache_seqlens: torch.Tensor, tokens: int, page_size: int) -> torch.Tensor:
    """The cache slot (page * page_size + offset) of every new token, row-major [B * T]."""
    idx = cache_seqlens.to(torch.int64)[:, None] + torch.arange(tokens, device=block_table.device)
    pages = block_table.to(torch.int64).gather(1, idx // page_size)
    return (pages * page_size + idx % page_size).reshape(-1)


def signature(dtype: str) -> tuple[dict, dict]:
    """Triton signature and constexprs for a compile check at one dtype (fp32, bf16, fp16)."""
    sig = {"kv_ptr": f"*{dtype}", "kv_stride": "i32", "w_ptr": f"*{dtype}", "pos_ptr": "*i64", "slot_ptr": "*i64",
           "inv_freq_ptr": "*fp32", "cache_ptr": f"*{dtype}", "mscale": "fp32", "eps": "fp32"}
    const = {"RANK": 512, "ROPE": 64, "BLOCK_R": 512, "BLOCK_H": 32, "INTERLEAVE": True}
    return {**sig, **{k: "constexpr" for k in const}}, const


def latent_append(kv: torch.Tensor, norm_weight: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor,
                  inv_freq: torch.Tensor, mscale: float, eps: float, cache: torch.Tensor, rank: int,
                  interleave: bool) -> torch.Tensor:
    """kv [N, rank + rope] (kv_a_proj_with_mqa's output rows); writes cache[slot] for each row."""
    n, width = kv.shape
    rope = width - rank
    kernel = load_kernel(SPEC, kv.device)
    kernel[(n,)](kv, kv.stride(0), norm_weight, positions.reshape(-1).to(torch.int64), slots,
                 inv_freq.to(device=kv.device, dtype=torch.float32), cache, float(mscale), float(eps),
                 RANK=rank, ROPE=rope, BLOCK_R=next_pow2(rank), BLOCK_H=next_pow2(rope // 2), INTERLEAVE=interleave)
    return cache
