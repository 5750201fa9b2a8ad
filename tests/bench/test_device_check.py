"""The one-call GPU check (benchmarks/device_check.sh) in its --smoke mode, run as a user
runs it: every stage runs and records its outcome, and the resource scan reads what a
kernel compiled to for sm_90 (registers, spills, shared memory, tensor-core instruction)."""

import json
import os
import subprocess
import sys

import pytest

from util import clean_env, installed

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


@pytest.mark.skipif(not installed("triton"), reason="needs triton")
def test_smoke_check_runs_every_stage_and_reads_the_compiled_kernel(tmp_path):
    env = clean_env() | {"OUT": str(tmp_path), "PYTHON": sys.executable}
    done = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "device_check.sh"), "--smoke"],
                          capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    stages = [json.loads(line) for line in (tmp_path / "status.jsonl").read_text().splitlines()]
    assert [s["stage"] for s in stages] == ["install", "environment", "gpu-tests", "kernels", "compile-sample",
                                            "resources"]
    assert all(s["rc"] == 0 for s in stages), stages
    assert json.loads((tmp_path / "env.json").read_text())["device"] == "cpu"
    bench = json.loads((tmp_path / "kernels.json").read_text())
    assert bench["smoke"] is True and {"mla_decode", "fused_moe"} <= {r["benchmark"] for r in bench["records"]}
    kernels = json.loads((tmp_path / "resources.json").read_text())["kernels"]
    gemm = next(k for k in kernels if k["name"] == "batched_gemm")
    assert gemm["arch"] == 90 and gemm["registers"] > 0 and gemm["shared_bytes"] > 0
    assert gemm["tensor_core"] == "wgmma"  # bf16 64x128 tiles with 4 warps on sm_90


def test_a_failing_stage_fails_the_check(tmp_path):
    """A check whose stage fails must not report success (here: no python at all)."""
    env = clean_env() | {"OUT": str(tmp_path), "PYTHON": "/nonexistent/python"}
    done = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "device_check.sh"), "--smoke"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1 and "a stage failed" in done.stdout
    stages = [json.loads(line) for line in (tmp_path / "status.jsonl").read_text().splitlines()]
    assert any(s["rc"] != 0 for s in stages)
