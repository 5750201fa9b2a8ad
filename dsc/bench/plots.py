"""The benchmark's PNG plots (matplotlib, off-screen): the roofline chart of every timed
kernel group and layer, decode latency against context length, and the KV-cache bytes
of MLA against MHA."""

from __future__ import annotations

import math

from dsc.bench.machine import Roofline
from dsc.errors import DscError, install_hint


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise DscError(f"dsc bench draws its plots with matplotlib: {install_hint('bench')} (or pass --no-plots)") \
            from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def roofline(records: list[dict], roof: Roofline, title: str, path: str) -> str:
    """Achieved FLOP/s against arithmetic intensity, under the measured roofs."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    pts = [r for r in records if r["flops"] > 0 and r["bytes"] > 0 and r["median_ms"] > 0]
    if pts:
        lo = min(r["flops"] / r["bytes"] for r in pts) / 4
        hi = max(max(r["flops"] / r["bytes"] for r in pts) * 4, roof.ridge * 4)
    else:
        lo, hi = 0.01, roof.ridge * 4
    xs = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    peak = roof.matmul_tflops * 1e12
    bw = roof.copy_gbps * 1e9
    ax.plot(xs, [min(peak, bw * x) for x in xs], "k-", lw=1.5,
            label=f"roofline: {roof.copy_gbps:,.0f} GB/s copy, {roof.matmul_tflops:,.2f} TFLOP/s {roof.matmul_dtype}")
    markers = {"dsc": "o", "torch-eager": "x", "torch-compile": "+", "hf": "s"}
    for backend in sorted({r["backend"] for r in pts}):
        mine = [r for r in pts if r["backend"] == backend]
        family = "dsc" if backend.startswith("dsc") else backend
        ax.scatter([r["flops"] / r["bytes"] for r in mine], [r["flops"] / (r["median_ms"] * 1e-3) for r in mine],
                   marker=markers.get(family, "o"), s=28, alpha=0.75, label=backend)
    for r in pts:
        if r["backend"].startswith("dsc") and r.get("group_kind"):
            ax.annotate(r["group_kind"], (r["flops"] / r["bytes"], r["flops"] / (r["median_ms"] * 1e-3)),
                        fontsize=6, alpha=0.6, xytext=(3, 2), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP per byte moved)")
    ax.set_ylabel("achieved FLOP/s")
    ax.set_title(title, fontsize=10)
    return _save(plt, fig, ax, path, legend={"fontsize": 7, "loc": "lower right"})


def decode_latency(records: list[dict], title: str, path: str) -> str:
    """MLA decode-step time against the context length, one line per implementation."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    decode = [r for r in records if r["benchmark"] == "mla decode"]
    for backend in sorted({r["backend"] for r in decode}):
        mine = sorted((r["shape"]["context"], r["median_ms"]) for r in decode if r["backend"] == backend)
        ax.plot([c for c, _ in mine], [m for _, m in mine], marker="o", label=backend)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _pos: f"{v:g}" if v < 1024 else f"{v / 1024:g}k"))
    ax.set_xlabel("context length (cached tokens)")
    ax.set_ylabel("decode step (ms)")
    ax.set_title(title, fontsize=10)
    return _save(plt, fig, ax, path, legend={"fontsize": 8})


def kv_cache_bytes(rows: list[dict], path: str, max_context: int = 131072) -> str:
    """Bytes one sequence's KV cache takes per layer against context: MLA's latent (bf16
    and FP8) and MHA's per-head keys and values (bf16), per model."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ctx = [2 ** i for i in range(10, int(math.log2(max_context)) + 1)]
    names = {"mha_bf16": "MHA bf16", "mla_bf16": "MLA latent bf16", "mla_fp8": "MLA latent fp8"}
    styles = {"mha_bf16": "--", "mla_bf16": "-", "mla_fp8": ":"}
    lines: dict[tuple[str, int], list[str]] = {}  # models sharing a line share its label
    for row in rows:
        for key in names:
            if row.get(key):
                lines.setdefault((key, row[key]), []).append(row["model"].removeprefix("deepseek-"))
    for i, ((key, per_token), models) in enumerate(sorted(lines.items(), key=lambda kv: -kv[0][1])):
        ax.plot(ctx, [per_token * c for c in ctx], styles[key], color=f"C{i}",
                label=f"{names[key]} ({', '.join(models)}): {per_token:,} B/token")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.yaxis.set_major_formatter(plt.FuncFormatter(_human_bytes))
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _pos: f"{v / 1024:g}k"))
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("KV-cache bytes per sequence per layer")
    ax.set_title("KV cache: MLA's latent vs MHA's per-head keys and values", fontsize=10)
    return _save(plt, fig, ax, path, legend={"fontsize": 7})


def _save(plt, fig, ax, path: str, legend: dict) -> str:
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(**legend)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _human_bytes(value: float, _pos=None) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            return f"{value:g} {unit}"
        value /= 1024
    return f"{value:g} PiB"
