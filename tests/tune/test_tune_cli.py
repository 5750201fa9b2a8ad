"""`dsc tune` end to end: the tvm backend's llvm schedules on a tiny config in seconds,
the file it writes read back by the runtime, and bad requests refused in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from dsc.runtime import tuned
from dsc.runtime.device import cpu_name, slug
from util import installed


def dsc(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dsc", *args], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="2", **(env or {})))


TINY = ("--batches", "1,4", "--contexts", "64", "--prefill", "16", "--max-trials", "3")


@pytest.mark.skipif(not installed("tvm"), reason="tvm is not installed")
def test_tune_tvm_tiny_config_writes_a_file_the_runtime_reads(tmp_path):
    # by default into the user's cache directory (not the installed package), readable by all
    env = {"DSC_TUNED_DIR": "", "XDG_CACHE_HOME": str(tmp_path)}
    r = dsc("tune", "tiny-v3", "--backend", "tvm", *TINY, env=env)
    assert r.returncode == 0, r.stderr
    path = tmp_path / "dsc" / "tuned" / f"{slug(cpu_name())}.json"
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~_umask()
    data = json.loads(path.read_text())
    assert data["device"] == cpu_name() and data["versions"]["backend"] == "tvm"
    from dsc.codegen.tvm import fused_moe, gemm

    spaces = {s.kernel: s for s in (gemm.TUNING_NT, fused_moe.TUNING)}
    assert set(data["entries"]) == set(spaces)  # MLA's and MoE's projections, the routed experts
    n = 0
    for kernel, by_dtype in data["entries"].items():
        for key, rec in by_dtype["float32"].items():
            shape = tuned.parse_key(key)
            assert spaces[kernel].valid(rec["config"], shape, tuned.Limits("cpu", 0, 2)), (kernel, key, rec)
            assert 0 < rec["ms"] <= rec["default_ms"] and 1 <= rec["trials"] <= 3  # the heuristic is a candidate
            n += 1
    assert f"{n} kernel launches tuned" in r.stdout
    again = dsc("tune", "tiny-v3", "--backend", "tvm", *TINY, env=env)  # resumes: nothing left to do
    assert again.returncode == 0 and "0 kernel launches tuned" in again.stdout, again.stdout
    run = dsc("run", "--backend", "tvm", env=env)
    assert run.returncode == 0, run.stderr
    assert f"kernel configs: tuned kernel configs for {cpu_name()}: {path}" in run.stdout


def test_tune_refusals_are_one_line(tmp_path):
    cases = [("tune", "--batches", "1,x", "--backend", "tvm"), ("tune", "--max-trials", "0", "--backend", "tvm"),
             ("tune", "--layer", "moe", "--prefill", "1000000000000", "--backend", "tvm")]  # refused, not allocated
    if not torch.cuda.is_available():
        cases.append(("tune", "--backend", "triton"))
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": 1, "device": "Some Other Card", "entries": {}}))
    (tmp_path / "binary.json").write_bytes(b"\x00\xff\xfe\x80 not a tuned file")
    if installed("tvm"):
        cases += [("tune", "--backend", "tvm", "--out", str(other)),
                  ("tune", "--backend", "tvm", "--out", str(tmp_path / "binary.json")),  # refused, not overwritten
                  ("tune", "--backend", "tvm", "--out", str(tmp_path / "binary.json" / "x.json")),
                  ("tune", "--backend", "tvm", "--out", "/sys/dsc-tuned.json")]
    for args in cases:
        r = dsc(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("dsc: error:"), (args, r.stderr)
    assert ("dsc tune --backend triton times kernels on a CUDA device" in dsc("tune", "--backend", "triton").stderr
            or torch.cuda.is_available())
    assert (tmp_path / "binary.json").read_bytes() == b"\x00\xff\xfe\x80 not a tuned file"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_each_backend_says_where_it_tunes():
    """dsc tune reads the registry: the default backend is the first that tunes on this
    device, and a backend asked to tune elsewhere says why, in its own words."""
    from dsc.codegen.backend import default_backend, get_backend

    assert (get_backend("triton").tunes_on, get_backend("tvm").tunes_on) == ("cuda", "cpu")
    assert default_backend("cuda") == "triton" and default_backend("cpu") == "tvm"
    assert get_backend("triton").runs_on == ("cuda", "cpu") and get_backend("tvm").runs_on == ("cpu",)
    assert "CUDA" in get_backend("triton").tune_elsewhere and "--device cpu" in get_backend("tvm").tune_elsewhere
