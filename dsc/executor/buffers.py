"""Intermediate buffers planned once per shape: one arena, offsets shared by lifetime.

Every kernel group that writes a fresh value gets a slice of one workspace. Two values
share bytes when their lifetimes (from the group that writes them to the last group
that reads them or a view of them) do not overlap; offsets are placed largest first at
the lowest free address (the greedy heap simulation of TVM's storage planner and XLA's
buffer assignment). Graph outputs are not planned: they are handed to the caller and
must outlive the next call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ALIGN = 256  # bytes: every buffer starts on a 256-byte boundary (vectorized and TMA-friendly)


@dataclass(frozen=True)
class Slot:
    offset: int
    nbytes: int
    shape: tuple[int, ...]
    dtype: torch.dtype


def place(sizes: list[int], lifetimes: list[tuple[int, int]]) -> tuple[list[int], int]:
    """Offsets for buffers of `sizes` alive over inclusive [first, last] group indices, and
    the arena size; buffers alive at the same time never overlap."""
    offsets = [0] * len(sizes)
    placed: list[int] = []
    for i in sorted(range(len(sizes)), key=lambda j: -sizes[j]):
        lo, hi = lifetimes[i]
        busy = sorted((offsets[j], offsets[j] + sizes[j]) for j in placed
                      if not (lifetimes[j][1] < lo or hi < lifetimes[j][0]))
        at = 0
        for start, end in busy:
            if at + sizes[i] <= start:
                break
            at = max(at, -(-end // ALIGN) * ALIGN)
        offsets[i] = at
        placed.append(i)
    total = max((offsets[i] + sizes[i] for i in range(len(sizes))), default=0)
    return offsets, total


class Arena:
    """The workspace of one plan on one device, allocated on first use and reused."""

    def __init__(self, slots: dict[int, Slot], total: int):
        self.slots, self.total = slots, total
        self._storage: dict[torch.device, torch.Tensor] = {}

    def tensor(self, node_id: int, device: torch.device) -> torch.Tensor | None:
        slot = self.slots.get(node_id)
        if slot is None:
            return None
        buf = self._storage.get(device)
        if buf is None:
            buf = self._storage[device] = torch.empty(self.total, dtype=torch.uint8, device=device)
        return buf[slot.offset:slot.offset + slot.nbytes].view(slot.dtype).view(slot.shape)
