"""Host-side checks shared by every backend's paged-cache kernels."""

from __future__ import annotations

import torch

from dsc.errors import CacheError


def check_room(table: torch.Tensor, lens: torch.Tensor, page: int, tokens: int) -> None:
    """A paged_append of `tokens` rows must fit in each row's block table: a kernel
    writing past it would corrupt another row's pages (a host sync; see the notes)."""
    capacity = table.shape[1] * page
    if tokens and lens.numel() and int(lens.max()) + tokens > capacity:
        raise CacheError(f"paged_append: a row would hold {int(lens.max()) + tokens} tokens, "
                         f"its block table holds {capacity}")
