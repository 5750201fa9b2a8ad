"""Kernel-level entry points for frameworks that bring their own cache and scheduler
(the integration issue registers these as torch custom ops).

They take tensors in the layouts vLLM, SGLang and FlashMLA use and run the Triton
kernels (natively on CUDA, under Triton's interpreter on a CPU).
"""

from __future__ import annotations

import torch

from dsc.errors import InputError


def mla_decode(q: torch.Tensor, kv_cache: torch.Tensor, block_table: torch.Tensor, cache_seqlens: torch.Tensor,
               softmax_scale: float, head_dim_v: int = 512, *, causal: bool = True, num_splits: int | None = None,
               validate: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Absorbed MLA attention over a paged latent cache (FlashMLA's contract).

    q [B, T, H, D] (T <= 2 for multi-token prediction; any H); kv_cache [pages,
    page_size, D] with each row [c_kv ; k_pe] and page_size 1, 16, 64 or any other;
    block_table [B, pages per row] int32; cache_seqlens [B] int32: each row's tokens,
    the new ones included (already written). With causal, query t of a row of length L
    sees positions 0 .. L - T + t. The value is the first head_dim_v columns of a row.

    Returns (out [B, T, H, head_dim_v] in q's dtype, lse [B, H, T] float32). validate
    reads cache_seqlens on the host to check them against the block table (a device
    sync: turn it off under CUDA graphs).
    """
    import dsc.codegen.triton  # noqa: F401  (enables the interpreter on a machine without CUDA)
    from dsc.codegen.triton.paged_attention import paged_mla_attention

    if validate and cache_seqlens.numel():
        capacity = block_table.shape[-1] * kv_cache.shape[1]
        lo, hi = int(cache_seqlens.min()), int(cache_seqlens.max())
        tokens = q.shape[1] if q.dim() == 4 else 0
        if lo < tokens or hi > capacity:
            raise InputError(f"mla_decode: cache_seqlens must lie in [{tokens}, {capacity}] (the query tokens are "
                             f"already in the cache; a row's block table holds {capacity}), got {lo}..{hi}")
    return paged_mla_attention(q, kv_cache, block_table, cache_seqlens, softmax_scale, head_dim_v,
                               causal=causal, num_splits=num_splits)
