"""The roofline of the machine a benchmark runs on, measured by the benchmark itself:
device copy bandwidth (bytes read + written) and a dense matmul's FLOP/s, so a
kernel's fraction of the roofline is taken against this card on this day."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from dsc.runtime.timing import CudaTimer, WallTimer


@dataclass(frozen=True)
class Roofline:
    copy_gbps: float  # bytes read + written per second / 1e9
    matmul_tflops: float
    matmul_dtype: str

    def floor_ms(self, nbytes: float, flops: float) -> float:
        """The least time the roofline allows for this much traffic and work."""
        return max(nbytes / (self.copy_gbps * 1e6), flops / (self.matmul_tflops * 1e9))

    @property
    def ridge(self) -> float:
        """FLOPs per byte where the machine turns from memory- to compute-bound."""
        return self.matmul_tflops * 1e12 / (self.copy_gbps * 1e9)

    def to_json(self) -> dict:
        return asdict(self)


def timer_for(device: torch.device, repeats: int = 10):
    return CudaTimer(device=device, repeats=repeats) if device.type == "cuda" else WallTimer(repeats=repeats)


def measure(device: torch.device, quick: bool = False) -> Roofline:
    """Copy 1 GiB (CUDA) / 256 MiB (CPU), multiply 8192^3 in bf16 (CUDA) / 2048^3 in
    float32 (CPU); quick: 16 MiB and 512^3, for tests."""
    timer = timer_for(device, repeats=5 if quick else 10)
    cuda = device.type == "cuda"
    n = (16 << 20) if quick else ((1 << 30) if cuda else (256 << 20))
    src = torch.empty(n, dtype=torch.uint8, device=device).random_(0, 255)
    dst = torch.empty_like(src)
    # a roof is a best case: the fastest of three medians (a busy neighbour only slows one)
    copy_ms = min(timer(lambda i: dst.copy_(src), 1) for _ in range(3))
    size = 512 if quick else (8192 if cuda else 2048)
    dtype = torch.bfloat16 if cuda else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    out = torch.empty_like(a)
    mm_ms = min(timer(lambda i: torch.matmul(a, b, out=out), 1) for _ in range(3))
    return Roofline(2 * n / copy_ms / 1e6, 2 * size ** 3 / mm_ms / 1e9, str(dtype).removeprefix("torch."))
