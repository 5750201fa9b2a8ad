"""Timing a launch (the tuner's trials, the benchmarks): the median after warm-up,
rotating through copies of the inputs so that no trial is flattered by finding its
operands already in cache.

A timer is called as timer(run, copies) -> milliseconds, where run(i) launches on the
i-th input copy. CudaTimer uses CUDA events; WallTimer (the CPU, for the tvm backend's
llvm schedules) uses perf_counter. Tests pass a fake timer.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Protocol

import torch

Run = Callable[[int], object]


class Timer(Protocol):
    def __call__(self, run: Run, copies: int) -> float: ...


def copies_to_rotate(input_bytes: int, cache_bytes: int, most: int = 8) -> int:
    """Enough input copies that one pass over them overflows the last-level cache (a
    single copy when the inputs alone do)."""
    if input_bytes <= 0:
        return 1
    return max(1, min(most, -(-2 * cache_bytes // input_bytes)))


class WallTimer:
    def __init__(self, warmup: int = 1, repeats: int = 5, budget_s: float = 2.0):
        self.warmup, self.repeats, self.budget_s = warmup, repeats, budget_s

    def __call__(self, run: Run, copies: int) -> float:
        for i in range(self.warmup):
            run(i % copies)
        times, start = [], time.perf_counter()
        for i in range(self.repeats):
            t = time.perf_counter()
            run(i % copies)
            times.append((time.perf_counter() - t) * 1e3)
            if time.perf_counter() - start > self.budget_s and len(times) >= 3:
                break  # a slow candidate: three samples are enough to lose
        return statistics.median(times)


class CudaTimer:
    """CUDA events around each launch; warm-up by time (compilation and clocks settle)."""

    def __init__(self, warmup_ms: float = 25.0, repeats: int = 30, device: torch.device | str = "cuda"):
        self.warmup_ms, self.repeats, self.device = warmup_ms, repeats, torch.device(device)

    def __call__(self, run: Run, copies: int) -> float:
        run(0)  # compile
        torch.cuda.synchronize(self.device)
        t0, i = time.perf_counter(), 0
        while (time.perf_counter() - t0) * 1e3 < self.warmup_ms or i < 3:
            run(i % copies)
            i += 1
            torch.cuda.synchronize(self.device)
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(self.repeats)]
        for i, (start, end) in enumerate(events):
            start.record()
            run(i % copies)
            end.record()
        torch.cuda.synchronize(self.device)
        return statistics.median(s.elapsed_time(e) for s, e in events)


def last_level_cache_bytes(device: torch.device) -> int:
    """L2 of a CUDA card; the CPU's last-level cache from sysfs (32 MiB if unknown)."""
    if device.type == "cuda":
        return int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 50 << 20))
    best = 0
    try:
        import glob

        for path in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*/size"):
            with open(path) as f:
                text = f.read().strip()
            mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1], 1)
            best = max(best, int(text.rstrip("KMG")) * mult)
    except (OSError, ValueError):
        pass
    return best or (32 << 20)
