"""FlashMLA's decode API (deepseek-ai/FlashMLA, flash_mla_interface) on dsc's paged MLA
kernels: `from dsc.compat.flash_mla import get_mla_metadata, flash_mla_with_kvcache`.

Both of FlashMLA's metadata conventions work:
- its first one, still vLLM's call: get_mla_metadata(cache_seqlens, s_q * h_q // h_kv,
  h_kv) -> (tile_scheduler_metadata, num_splits), int32 tensors built once per decode step
  and passed to every layer's flash_mla_with_kvcache;
- its current one: get_mla_metadata() -> (FlashMLASchedMeta, None), filled at the first
  flash_mla_with_kvcache and checked against the shapes of later calls.
Either way the metadata is dsc's decode schedule (DecodeSchedule): tile_scheduler_metadata
is its item table ([items, 3] int32, where FlashMLA's is [num_sm_parts, 8]) and num_splits
the prefix sum of each row's share count ([batch + 1] int32, FlashMLA's meaning). Callers
treat both as opaque; FlashMLA's own metadata is refused by its shape.

Served: k_cache [pages, page_size, 1, D] in q's dtype (any page size), head_dim_v, causal
(default False, as FlashMLA's), softmax_scale (default D ** -0.5), is_fp8_kvcache over
FlashMLA's 656-byte rows (512 e4m3 values, 4 float32 scales, 64 bf16 rope values: dsc's
kv_pack_fp8 layout, decoded as it is read), attn_sink, rows of length 0 (out 0, lse +inf).
Refused with an InputError naming the argument: more than one KV head, sparse attention
(indices, topk_length, extra_k_cache, ...), FP8 queries with descale factors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dsc.errors import InputError

FP8_GROUP = 128  # FlashMLA's FP8 rows: one float32 scale per 128 latent values
_SPARSE = ("indices", "topk_length", "extra_k_cache", "extra_indices_in_kvcache", "extra_topk_length")


def _fail(message: str) -> InputError:
    return InputError(f"dsc.compat.flash_mla: {message}")


@dataclass
class FlashMLASchedMeta:
    """FlashMLA's current metadata object: empty until its first flash_mla_with_kvcache,
    which records the call's shapes (later calls must match them) and builds the
    schedule from that call's cache_seqlens."""

    config: tuple | None = None  # (batch, s_q, h_q, page_size, h_k, causal, is_fp8_kvcache)
    schedule: object | None = None  # dsc's DecodeSchedule

    @property
    def have_initialized(self) -> bool:
        return self.config is not None

    @property
    def tile_scheduler_metadata(self) -> torch.Tensor | None:
        return None if self.schedule is None else self.schedule.items

    @property
    def num_splits(self) -> torch.Tensor | None:
        return None if self.schedule is None else self.schedule.splits


def _schedule_for(cache_seqlens: torch.Tensor, rows: int):
    """dsc's decode schedule over the rows' lengths, cut into as many parts as its kernel
    would choose for `rows` (token, head) query rows on this device."""
    from dsc.codegen.triton.build import choosing_for
    from dsc.codegen.triton.paged_attention import decode_schedule, default_block_m, default_parts

    device = choosing_for(cache_seqlens)
    parts = default_parts(-(-rows // default_block_m(rows, device)), device)
    return decode_schedule(cache_seqlens, parts)


def _check_lengths(cache_seqlens) -> None:
    if not isinstance(cache_seqlens, torch.Tensor) or cache_seqlens.dtype != torch.int32 or cache_seqlens.dim() != 1:
        raise _fail("cache_seqlens must be a 1-D int32 tensor (batch_size,), got "
                    + (f"{cache_seqlens.dtype} of shape {list(cache_seqlens.shape)}"
                       if isinstance(cache_seqlens, torch.Tensor) else type(cache_seqlens).__name__))


def get_mla_metadata(cache_seqlens: torch.Tensor | None = None, num_q_tokens_per_head_k: int | None = None,
                     num_heads_k: int | None = None, num_heads_q: int | None = None, is_fp8_kvcache: bool = False,
                     topk: int | None = None, *args, **kwargs):
    """FlashMLA's scheduling metadata. With cache_seqlens (FlashMLA's first convention):
    (tile_scheduler_metadata, num_splits) tensors for every layer of this decode step;
    without: (FlashMLASchedMeta(), None), built at its first use."""
    if topk is not None:
        raise _fail("sparse attention (topk) is not served by dsc's kernels")
    if cache_seqlens is None:
        return FlashMLASchedMeta(), None
    _check_lengths(cache_seqlens)
    if num_q_tokens_per_head_k is None or num_heads_k is None:
        raise _fail("get_mla_metadata(cache_seqlens, num_q_tokens_per_head_k, num_heads_k) needs all three")
    schedule = _schedule_for(cache_seqlens, num_q_tokens_per_head_k * num_heads_k)
    return schedule.items, schedule.splits


def _schedule_of(meta, num_splits, q, k_cache, cache_seqlens, causal: bool, fp8: bool):
    from dsc.codegen.triton.paged_attention import DecodeSchedule

    batch, s_q, h_q, _ = q.shape
    if isinstance(meta, FlashMLASchedMeta):
        if num_splits is not None:
            raise _fail("num_splits must be None with a FlashMLASchedMeta (get_mla_metadata() returns (meta, None))")
        config = (batch, s_q, h_q, k_cache.shape[1], k_cache.shape[2], causal, fp8)
        if meta.config is None:
            meta.config, meta.schedule = config, _schedule_for(cache_seqlens, s_q * h_q)
        elif meta.config != config:
            names = ("batch_size", "seq_len_q", "num_heads_q", "page_block_size", "num_heads_k", "causal",
                     "is_fp8_kvcache")
            diff = ", ".join(f"{n} {a} (was {b})" for n, a, b in zip(names, config, meta.config) if a != b)
            raise _fail(f"this call's {diff} differ from the first call on this tile_scheduler_metadata")
        return meta.schedule
    if not isinstance(meta, torch.Tensor) or not isinstance(num_splits, torch.Tensor):
        raise _fail("tile_scheduler_metadata and num_splits must come from dsc.compat.flash_mla.get_mla_metadata")
    if meta.dtype != torch.int32 or meta.dim() != 2 or meta.shape[1] != 3 or meta.shape[0] < batch:
        raise _fail(f"tile_scheduler_metadata of shape {list(meta.shape)} ({meta.dtype}) was not made by "
                    "dsc.compat.flash_mla.get_mla_metadata for this batch (FlashMLA's own metadata has another layout)")
    if num_splits.dtype != torch.int32 or tuple(num_splits.shape) != (batch + 1,):
        raise _fail(f"num_splits must be int32 of shape [{batch + 1}] (batch_size + 1), got {num_splits.dtype} "
                    f"of shape {list(num_splits.shape)}")
    return DecodeSchedule(meta, num_splits)


def flash_mla_with_kvcache(q: torch.Tensor, k_cache: torch.Tensor, block_table: torch.Tensor | None,
                           cache_seqlens: torch.Tensor | None, head_dim_v: int, tile_scheduler_metadata,
                           num_splits: torch.Tensor | None = None, softmax_scale: float | None = None,
                           causal: bool = False, is_fp8_kvcache: bool = False, indices: torch.Tensor | None = None,
                           attn_sink: torch.Tensor | None = None, extra_k_cache: torch.Tensor | None = None,
                           extra_indices_in_kvcache: torch.Tensor | None = None,
                           topk_length: torch.Tensor | None = None, extra_topk_length: torch.Tensor | None = None,
                           descale_q: torch.Tensor | None = None, descale_k: torch.Tensor | None = None, *,
                           backend: str = "triton") -> tuple[torch.Tensor, torch.Tensor]:
    """FlashMLA's decode attention over the paged latent cache: q [batch, s_q, h_q, D];
    k_cache [pages, page_size, 1, D] (FP8: [pages, page_size, 1, 656] bytes); block_table
    [batch, pages per row] int32; cache_seqlens [batch] int32. Returns (out [batch, s_q,
    h_q, head_dim_v] in q's dtype, lse [batch, h_q, s_q] float32). backend (dsc's, keyword
    only): whose generated kernels run it, "triton" or "tvm"."""
    from dsc.ops import _kernels

    given = {"indices": indices, "topk_length": topk_length, "extra_k_cache": extra_k_cache,
             "extra_indices_in_kvcache": extra_indices_in_kvcache, "extra_topk_length": extra_topk_length}
    sparse = [name for name in _SPARSE if given[name] is not None]
    if sparse:
        raise _fail(f"sparse attention ({', '.join(sparse)}) is not served by dsc's kernels")
    if descale_q is not None or descale_k is not None:
        raise _fail("FP8 queries with descale_q / descale_k are not served; dsc's FP8 cache is FlashMLA's "
                    "656-byte rows (is_fp8_kvcache=True) with bf16 queries")
    if block_table is None or cache_seqlens is None:
        raise _fail("block_table and cache_seqlens are needed for dense attention")
    _check_lengths(cache_seqlens)
    if q.dim() != 4:
        raise _fail(f"q must be [batch_size, seq_len_q, num_heads_q, head_dim], got shape {list(q.shape)}")
    batch, _, h_q, dk = q.shape
    if k_cache.dim() != 4:
        raise _fail(f"k_cache must be [num_blocks, page_block_size, num_heads_k, head_dim], got shape "
                    f"{list(k_cache.shape)}")
    if k_cache.shape[2] != 1:
        raise _fail(f"k_cache holds {k_cache.shape[2]} KV heads: dsc's MLA kernels read one latent head "
                    "(num_heads_k = 1)")
    if block_table.dtype != torch.int32 or block_table.dim() != 2 or block_table.shape[0] != batch:
        raise _fail(f"block_table must be int32 [batch_size={batch}, max_num_blocks_per_seq], got "
                    f"{block_table.dtype} of shape {list(block_table.shape)}")
    if cache_seqlens.shape[0] != batch:
        raise _fail(f"cache_seqlens has {cache_seqlens.shape[0]} rows for a batch of {batch}")
    if not 0 < head_dim_v <= dk:
        raise _fail(f"head_dim_v must lie in 1 .. head_dim ({dk}), got {head_dim_v}")
    if is_fp8_kvcache:
        from dsc.ir.ops.fp8 import packed_width

        if head_dim_v % FP8_GROUP:
            raise _fail(f"an FP8 cache's head_dim_v must be a multiple of {FP8_GROUP}, got {head_dim_v}")
        width = packed_width(head_dim_v, dk - head_dim_v, FP8_GROUP)
        if k_cache.element_size() != 1 or k_cache.shape[-1] != width:
            raise _fail(f"an FP8 k_cache holds {width}-byte rows for head_dim {dk} (e4m3 latent, float32 scales, "
                        f"bf16 rope), got {k_cache.dtype} rows of {k_cache.shape[-1]}")
        cache = k_cache.view(torch.uint8)[:, :, 0]
    else:
        if k_cache.dtype != q.dtype or k_cache.shape[-1] != dk:
            raise _fail(f"k_cache must be {q.dtype} rows of head_dim {dk} (like q), got {k_cache.dtype} rows of "
                        f"{k_cache.shape[-1]}")
        cache = k_cache[:, :, 0]
    schedule = _schedule_of(tile_scheduler_metadata, num_splits, q, k_cache, cache_seqlens, causal, is_fp8_kvcache)
    scale = dk ** -0.5 if softmax_scale is None else softmax_scale
    out, lse = _kernels("flash_mla_with_kvcache", backend).paged_attention(
        q, cache, block_table, cache_seqlens, scale, head_dim_v, len_offset=0, causal=causal, schedule=schedule,
        fp8_group=FP8_GROUP if is_fp8_kvcache else None)
    if attn_sink is not None:  # out * exp(lse) / (exp(lse) + exp(sink)); lse itself unchanged
        if attn_sink.shape != (h_q,):
            raise _fail(f"attn_sink must be [num_heads_q={h_q}], got shape {list(attn_sink.shape)}")
        keep = torch.sigmoid(lse - attn_sink.float()[None, :, None]).nan_to_num(nan=1.0)  # (inf - inf: out is 0)
        out = (out.float() * keep.transpose(1, 2)[..., None]).to(out.dtype)
    return out, lse
