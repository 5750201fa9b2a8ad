"""Machine balance for cost-model decisions: peak dense FLOP/s and memory bandwidth.

The figures are the vendors' dense bf16 tensor-core peaks and HBM bandwidths (the CPU
line is measured on this project's CI machine). Only their ratio
moves a decision such as absorb's crossover.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Machine:
    name: str
    flops: float  # FLOP/s
    bandwidth: float  # bytes/s

    def seconds(self, flops: float, nbytes: float) -> float:
        return max(flops / self.flops, nbytes / self.bandwidth)


MACHINES = {
    "sm90": Machine("H100 SXM (sm90)", 989e12, 3.35e12),
    "sm80": Machine("A100 SXM (sm80)", 312e12, 2.0e12),
    "cpu": Machine("2-core CPU", 184e9, 34e9),
}
