"""`dsc bench` end to end at tiny sizes (times on this CPU mean little and are not
checked), and the arithmetic of its records."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dsc.bench.machine import Roofline
from dsc.bench.records import record
from util import installed

FIELDS = {"device", "benchmark", "backend", "shape", "dtype", "median_ms", "achieved_gbps", "achieved_tflops",
          "roofline_fraction"}


def test_record_arithmetic():
    roof = Roofline(copy_gbps=100.0, matmul_tflops=2.0, matmul_dtype="float32")
    r = record("cpu", "x", "dsc-tvm", {"n": 1}, "float32", ms=2.0, nbytes=4e8, flops=1e9, roof=roof)
    assert r["achieved_gbps"] == 200.0 and r["achieved_tflops"] == 0.5  # 4e8 B in 2 ms; 1e9 FLOP in 2 ms
    assert r["roofline_fraction"] == 2.0  # the roofline allows 4 ms (bytes-bound), it took 2: the bound is wrong
    r = record("cpu", "x", "dsc-tvm", {}, "float32", ms=10.0, nbytes=1e6, flops=4e10, roof=roof)
    assert r["roofline_fraction"] == 2.0  # compute-bound: 20 ms allowed
    assert roof.ridge == 20.0 and FIELDS <= set(r)


@pytest.mark.skipif(not (installed("tvm") and installed("matplotlib") and installed("transformers")),
                    reason="needs tvm, matplotlib and transformers")
def test_bench_tiny_writes_records_and_plots(tmp_path):
    r = subprocess.run([sys.executable, "-m", "dsc", "bench", "tiny-v3", "--backend", "tvm", "--quick",
                        "--contexts", "32,128", "--prefill", "16", "--tokens", "8", "--batch", "2", "--repeat", "2",
                        "--compare", "eager,hf", "--out", str(tmp_path)], capture_output=True, text=True,
                       timeout=600, env=dict(os.environ, OMP_NUM_THREADS="2"))
    assert r.returncode == 0, r.stdout + r.stderr
    (path,) = tmp_path.glob("*/bench-tiny-v3-tvm-float32.json")
    report = json.loads(path.read_text())
    assert report["roofline"]["copy_gbps"] > 0 and report["roofline"]["matmul_tflops"] > 0
    recs = report["records"]
    for rec in recs:
        assert FIELDS <= set(rec) and rec["device"] == report["device"] and rec["median_ms"] > 0, rec
        assert rec["roofline_fraction"] > 0 and rec["bytes"] > 0
    groups = {(rec["benchmark"], rec["group_kind"]) for rec in recs if "group_kind" in rec}
    assert {("mla decode group", "paged_attention"), ("mla decode group", "gemm"), ("mla decode group",
            "paged_append"), ("mla prefill group", "paged_append")} <= groups
    assert {("mla prefill group", "attention"), ("mla prefill group", "paged_attention")} & groups
    assert {k for b, k in groups if b.startswith("moe")} >= {"router", "grouped_gemm", "moe_combine"}
    dsc_groups = [rec for rec in recs if "group_kind" in rec and rec["backend"] == "dsc-tvm"]
    assert all(rec["speedup_vs_torch_eager"] > 0 for rec in dsc_groups)
    decode = [rec for rec in recs if rec["benchmark"] == "mla decode"]
    assert {(rec["backend"], rec["shape"]["context"]) for rec in decode} == {
        (b, c) for b in ("dsc-tvm", "torch-eager", "hf") for c in (32, 128)}
    for rec in recs:
        if "rel_err" in rec:  # same weights, same cached latents: every implementation computes one layer
            assert rec["rel_err"] < 1e-4, (rec["benchmark"], rec["backend"], rec["rel_err"])
    folder = path.parent
    for png in ("bench-tiny-v3-tvm-float32-roofline.png", "bench-tiny-v3-tvm-float32-decode-latency.png",
                "kv-cache-bytes.png"):
        data = (folder / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, png
        import matplotlib.image

        img = matplotlib.image.imread(str(folder / png))
        assert img.shape[0] > 300 and img.shape[1] > 500 and img.std() > 0.01  # drawn on, not blank


def test_bench_refusals_are_one_line():
    for args in (("bench", "--compare", "eager,bogus"), ("bench", "--contexts", "0"), ("bench", "--batch", "0")):
        r = subprocess.run([sys.executable, "-m", "dsc", *args], capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith("dsc: error:"), (args,
                                                                                                        r.stderr)


@pytest.mark.skipif(not installed("tvm"), reason="tvm is not installed")
def test_group_bytes_count_the_cache_rows_in_use_not_its_allocation():
    import torch

    from dsc import Config
    from dsc.bench.groups import GroupTimer
    from dsc.bench.layers import layer_weights
    from dsc.nn import MLA

    cfg = Config.preset("tiny-v3")
    mla = MLA(cfg, backend="tvm")
    layer_weights(mla, 0)
    batch, context = 2, 40
    cache = mla.new_cache(batch, 4096)  # far more pages than the rows in use
    cache.seqlens.fill_(context)
    cache.pages.normal_()
    gt = GroupTimer(lambda run, copies: 1.0, used_rows=batch * (context + 1))
    with mla.launch_hook(gt):
        mla(torch.randn(batch, 1, cfg.hidden_size), torch.full((batch, 1), context), cache)
    (attn,) = [t for t in gt.timings if t.kind == "paged_attention"]
    row = cache.row_width * cache.pages.element_size()
    whole = cache.pages.numel() * cache.pages.element_size()
    assert batch * (context + 1) * row <= attn.nbytes < batch * (context + 1) * row + whole // 10
    assert attn.flops >= 2 * batch * cfg.num_attention_heads * context * cfg.latent_dim  # q.k over the latent rows
    (append,) = [t for t in gt.timings if t.kind == "paged_append"]
    assert append.nbytes < whole // 10  # the rows it writes, not the cache it writes into
    assert all(t.ms == 1.0 and t.eager_ms == 1.0 and t.nbytes > 0 for t in gt.timings)


@pytest.mark.skipif(not (installed("tvm") and installed("transformers")), reason="needs tvm and transformers")
def test_bench_seeds_hf_v2_cache_in_its_own_rope_layout(tmp_path):
    """HF's V2 caches k_pe interleaved, dsc de-interleaved: the seeded history must mean
    the same keys to both, or HF's decode would be another layer's (relative error ~0.9)."""
    r = subprocess.run([sys.executable, "-m", "dsc", "bench", "tiny-v2-lite", "--backend", "tvm", "--layer", "mla",
                        "--quick", "--contexts", "32", "--prefill", "8", "--repeat", "1", "--compare", "hf",
                        "--no-plots", "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    (path,) = tmp_path.glob("*/bench-tiny-v2-lite-tvm-float32.json")
    hf = [rec for rec in json.loads(path.read_text())["records"] if rec["backend"] == "hf"]
    assert {rec["benchmark"] for rec in hf} == {"mla decode", "mla prefill"}
    assert all(rec["rel_err"] < 1e-4 for rec in hf), [rec["rel_err"] for rec in hf]


def test_bench_reference_backend_times_layers_only(tmp_path):
    r = subprocess.run([sys.executable, "-m", "dsc", "bench", "--backend", "reference", "--layer", "moe", "--quick",
                        "--compare", "none", "--no-plots", "--tokens", "4", "--repeat", "1", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    (path,) = tmp_path.glob("*/bench-tiny-v3-reference-float32.json")
    recs = json.loads(path.read_text())["records"]
    assert {(rec["benchmark"], rec["backend"]) for rec in recs} == {("moe forward", "dsc-reference")}
    assert all(rec["rel_err"] < 1e-5 for rec in recs)
