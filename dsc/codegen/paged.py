"""Host-side checks shared by every backend's paged-cache kernels."""

from __future__ import annotations

import torch

from dsc.errors import CacheError


def check_pages_hold(table: torch.Tensor, lens: torch.Tensor, page: int, tokens: int) -> None:
    """A paged_append of `tokens` rows must fit in each row's block table: a kernel
    writing past it would corrupt another row's pages (a host sync)."""
    capacity = table.shape[1] * page
    if tokens and lens.numel() and int(lens.max()) + tokens > capacity:
        raise CacheError(f"paged_append: a row would hold {int(lens.max()) + tokens} tokens, "
                         f"its block table holds {capacity}")


def bad_page(table: torch.Tensor, lens: torch.Tensor, page: int, num_pages: int) -> tuple[int, int, int] | None:
    """(row, column, entry) of the first block-table entry a row uses (the first
    ceil(lens[b] / page) of its row) that names no page of a pool of num_pages, or None.
    A kernel would read or write there unchecked: garbage, another tensor's memory or a
    fault. One host sync when the table is sound."""
    if not table.numel() or not lens.numel():
        return None
    used = (lens.to(torch.int64).clamp(min=0) + page - 1) // page
    cols = torch.arange(table.shape[1], device=table.device)
    bad = (cols[None, :] < used[:, None]) & ((table < 0) | (table >= num_pages))
    if not bool(bad.any()):
        return None
    b, j = (int(i) for i in bad.nonzero()[0])
    return b, j, int(table[b, j])


def check_pages(table: torch.Tensor, lens: torch.Tensor, page: int, num_pages: int, error=CacheError,
                where: str = "block_table") -> None:
    """Raise `error` naming the entry when bad_page finds one."""
    found = bad_page(table, lens, page, num_pages)
    if found is not None:
        b, j, entry = found
        raise error(f"{where}[{b}, {j}] = {entry} names no page: the pool holds pages 0..{num_pages - 1} "
                    f"and row {b} uses its first {-(-int(lens[b]) // page)} entries")
