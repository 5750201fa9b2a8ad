"""Benchmark records and where they are written: benchmarks/results/<device>/<name>.json,
one record per (benchmark, backend, shape) with the device, the median time, achieved
GB/s and TFLOP/s and the fraction of the measured roofline."""

from __future__ import annotations

import datetime
import json
import os

import torch

from dsc.bench.machine import Roofline
from dsc.runtime.device import slug


def record(device: str, benchmark: str, backend: str, shape: dict, dtype: str, ms: float, nbytes: float,
           flops: float, roof: Roofline, **extra) -> dict:
    """One measurement. roofline_fraction = the time the roofline allows / the time taken."""
    return {"device": device, "benchmark": benchmark, "backend": backend, "shape": shape, "dtype": dtype,
            "median_ms": _sig(ms), "bytes": int(nbytes), "flops": int(flops), "achieved_gbps": _sig(nbytes / ms / 1e6),
            "achieved_tflops": _sig(flops / ms / 1e9), "roofline_fraction": _sig(roof.floor_ms(nbytes, flops) / ms),
            **extra}


def _sig(x: float) -> float:
    """Five significant figures: tiny fractions keep their digits, not round to zero."""
    return float(f"{x:.5g}")


def write(out: str, device: str, name: str, roof: Roofline, records: list[dict], **facts) -> str:
    """The report as <out>/<slug(device)>/<name>.json; returns its path."""
    folder = os.path.join(out, slug(device))
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{name}.json")
    report = {"device": device, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "date": datetime.date.today().isoformat(), "roofline": roof.to_json(), **facts, "records": records}
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=1, default=str)
    os.replace(tmp, path)
    return path
