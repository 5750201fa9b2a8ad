"""The paged latent cache an MLA module reads and appends to.

One row of `pages` per token holds the compressed c_kv and the roped k_pe
(kv_lora_rank + qk_rope_head_dim values): the whole per-token KV state of MLA.
Each batch row owns the pages its `block_table` row lists; `seqlens[b]` counts the
tokens it holds. Rows may hold different lengths (`truncate` rolls rows back, e.g.
after rejected speculative tokens).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dsc.codegen.paged import check_pages
from dsc.errors import CacheError


@dataclass
class LatentCache:
    pages: torch.Tensor  # [num_pages, page_size, row_width]: a latent row, or its packed FP8 bytes
    block_table: torch.Tensor  # [batch, pages_per_row] int32
    seqlens: torch.Tensor  # [batch] int32
    max_seq_len: int

    @staticmethod
    def allocate(batch_size: int, max_seq_len: int, page_size: int, row_width: int, dtype: torch.dtype,
                 device: torch.device) -> "LatentCache":
        for name, v in (("batch_size", batch_size), ("max_seq_len", max_seq_len)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise CacheError(f"{name} must be a positive int, got {v!r}")
        per_row = math.ceil(max_seq_len / page_size)
        pages = torch.zeros(batch_size * per_row, page_size, row_width, dtype=dtype, device=device)
        table = torch.arange(batch_size * per_row, dtype=torch.int32, device=device).view(batch_size, per_row)
        seqlens = torch.zeros(batch_size, dtype=torch.int32, device=device)
        return LatentCache(pages, table, seqlens, max_seq_len)

    @property
    def batch_size(self) -> int:
        return self.block_table.shape[0]

    @property
    def page_size(self) -> int:
        return self.pages.shape[1]

    @property
    def row_width(self) -> int:
        return self.pages.shape[2]

    def lengths(self) -> list[int]:
        return [int(n) for n in self.seqlens.tolist()]

    def truncate(self, lengths) -> None:
        """Roll rows back to the given lengths (each no longer than it is now)."""
        want = torch.as_tensor(lengths, dtype=torch.int32, device=self.seqlens.device).reshape(-1)
        if want.shape[0] != self.batch_size:
            raise CacheError(f"truncate: expected {self.batch_size} lengths, got {want.shape[0]}")
        if bool((want < 0).any()) or bool((want > self.seqlens).any()):
            raise CacheError(f"truncate: lengths {want.tolist()} must lie in 0..{self.lengths()} row by row")
        self.seqlens.copy_(want)

    def resized(self, rows: torch.Tensor, max_seq_len: int) -> "LatentCache":
        """A new cache whose row i is a copy of this cache's row rows[i] (rows may repeat,
        drop or reorder rows: beam search), with room for max_seq_len tokens per row."""
        rows = rows.to(device=self.block_table.device, dtype=torch.long)
        held = int(self.seqlens.max()) if self.seqlens.numel() else 0
        if max_seq_len < held:
            raise CacheError(f"resized: max_seq_len {max_seq_len} is below the {held} tokens a row holds")
        new = LatentCache.allocate(rows.shape[0], max_seq_len, self.page_size, self.row_width, self.pages.dtype,
                                   self.pages.device)
        kept = min(self.block_table.shape[1], new.block_table.shape[1])
        new.pages[new.block_table[:, :kept].long()] = self.pages[self.block_table[rows, :kept].long()]
        new.seqlens.copy_(self.seqlens[rows])
        return new

    def reset(self) -> None:
        self.seqlens.zero_()


def check_call(pages: torch.Tensor, block_table: torch.Tensor, seqlens: torch.Tensor, max_seq_len: int,
               new_tokens: int) -> None:
    """Raise CacheError unless every row can take new_tokens more (check_capacity) and every
    block-table entry the call reads or writes names one of the cache's pages: a bad
    entry would have the kernels write another tensor's memory (reads the table on the
    host)."""
    check_capacity(seqlens, max_seq_len, new_tokens)
    check_pages(block_table, seqlens + new_tokens, pages.shape[1], pages.shape[0], CacheError,
                "LatentCache.block_table")


def check_capacity(seqlens: torch.Tensor, max_seq_len: int, new_tokens: int) -> None:
    """Raise CacheError if a row holding seqlens[b] tokens cannot take new_tokens more, or
    holds a negative count (reads the lengths on the host)."""
    held = seqlens.tolist()
    if any(n < 0 for n in held):
        raise CacheError(f"LatentCache.seqlens must be >= 0, got {held}")
    full = [(b, n) for b, n in enumerate(held) if n + new_tokens > max_seq_len]
    if full:
        rows = ", ".join(f"row {b} holds {n}" for b, n in full)
        raise CacheError(f"cache full: appending {new_tokens} token(s) would pass max_seq_len "
                         f"{max_seq_len} ({rows}); the cache is unchanged")
