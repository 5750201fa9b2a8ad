"""The cards the traffic model bounds kernels on: published peak figures (NVIDIA's data
sheets: HBM bandwidth, dense tensor-core throughput, SMs and the boost clock the
throughput is quoted at), plus the two figures NVIDIA does not publish, stated as the
model's assumptions: shared memory serves 128 bytes per clock per SM (32 banks of 4
bytes), and L2 read bandwidth (microbenchmark-class figures, about 1.6x HBM on Hopper
SXM, 2.4x on the A100)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Card:
    name: str
    arch: str  # the sm the Triton kernels are compiled and tiled for
    hbm_gbps: float
    l2_gbps: float  # assumed (see the module's docstring)
    bf16_tflops: float  # dense
    fp8_tflops: float | None  # dense e4m3; None: no FP8 tensor cores (weight-only FP8 runs bf16 dots)
    sms: int
    clock_ghz: float
    l2_mb: float  # the L2 cache's capacity

    @property
    def smem_gbps(self) -> float:
        """All SMs' shared memory at 128 bytes per clock each."""
        return 128 * self.sms * self.clock_ghz


CARDS = {
    "h100-sxm": Card("H100 SXM", "sm90", 3350, 5500, 989.4, 1978.9, 132, 1.83, 50),
    "h800": Card("H800 SXM", "sm90", 3350, 5500, 989.4, 1978.9, 132, 1.83, 50),
    "h200": Card("H200 SXM", "sm90", 4800, 5500, 989.4, 1978.9, 132, 1.83, 50),
    "a100": Card("A100 SXM 80GB", "sm80", 2039, 4900, 312.0, None, 108, 1.41, 40),
}


def card_for(device_name: str) -> Card | None:
    """The card a CUDA device name is ("NVIDIA H100 80GB HBM3" -> h100-sxm), or None."""
    name = device_name.lower()
    for key, words in (("h200", ("h200",)), ("h800", ("h800",)), ("h100-sxm", ("h100",)), ("a100", ("a100",))):
        if any(w in name for w in words):
            return CARDS[key]
    return None
