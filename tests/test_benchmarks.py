"""The benchmark scripts keep working: each runs at tiny sizes (--smoke) and writes its
JSON. Times on a CPU through Triton's interpreter mean nothing and are not checked."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def smoke_report(script: str, tmp_path, name: str) -> dict:
    """Run benchmarks/<script> --smoke into tmp_path; its one JSON report <device>/<name>."""
    r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), "--smoke", "--out",
                        str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    (path,) = list(tmp_path.glob(f"*/{name}"))
    return json.loads(path.read_text())


def test_kernel_benchmarks_smoke(tmp_path):
    pytest.importorskip("triton")
    report = smoke_report("kernels.py", tmp_path, "kernels-smoke.json")
    kinds = {(rec["benchmark"], rec["backend"]) for rec in report["records"]}
    assert kinds == {("mla_decode", "dsc-triton"), ("mla_decode", "torch-eager"), ("fused_moe", "dsc-triton"),
                     ("fused_moe", "torch-eager")}
    # MLA decode over rows of one length and over an uneven (varlen) batch
    assert {rec["shape"]["lengths"] for rec in report["records"] if rec["benchmark"] == "mla_decode"} == \
        {"ctx", "1..2ctx"}
    for rec in report["records"]:
        assert rec["device"] == report["device"] and rec["median_ms"] > 0
        assert {"shape", "GBps", "TFLOPs", "roofline_fraction"} <= set(rec)


def test_cpu_decode_benchmark_smoke(tmp_path):
    pytest.importorskip("tvm")
    pytest.importorskip("transformers")
    report = smoke_report("cpu_decode.py", tmp_path, "cpu-decode-smoke.json")
    mla = report["mla_decode"]
    for impl in ("tvm", "reference", "hf"):
        assert mla[impl]["ms"] > 0 and mla[impl]["cache_bytes"] > 0
    # the same layer on the same weights: dsc's decode step must be HF's
    assert mla["tvm"]["rel_err_vs_hf"] < 1e-4 and mla["reference"]["rel_err_vs_hf"] < 1e-4
    assert all(r["rel_err_tvm_vs_reference"] < 1e-4 and r["tvm"]["ms"] > 0 for r in report["moe"])


def test_hf_generate_benchmark_smoke(tmp_path):
    pytest.importorskip("transformers")
    report = smoke_report("hf_generate.py", tmp_path, "hf-generate-smoke.json")
    assert {"hf-eager", "dsc-reference"} <= set(report["results"])  # dsc-tvm too where TVM is installed
    for name, rec in report["results"].items():
        assert rec["decode_step_ms"] > 0 and rec["max_logits_rel_err"] < 1e-4, name
