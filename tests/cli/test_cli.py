"""The command line: the main job works, and bad input is one line on stderr, exit 2."""

import json
import os
import subprocess
import sys

import pytest

from util import COMPILED_BACKENDS


def dsc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dsc", *args], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="2"))


def test_run_default_preset_reports_everything(tmp_path):
    out = tmp_path / "report.json"
    r = dsc("run", "--json", str(out))
    assert r.returncode == 0, r.stderr
    text = r.stdout
    for needle in ("dsc run tiny-v3", "rel err", "vs eager", "KV cache per token per layer", "vs MHA", "weights",
                   " ms"):
        assert needle in text, f"{needle!r} missing from:\n{text}"
    report = json.loads(out.read_text())
    mla, moe = report["layers"]["mla"], report["layers"]["moe"]
    assert mla["executed"] and moe["executed"]
    assert 0 <= mla["prefill"]["rel_err"] < 1e-5 and 0 <= mla["decode"]["rel_err"] < 1e-5
    assert 0 <= moe["forward"]["rel_err"] < 1e-5
    assert mla["kv_cache_bytes_per_token"] == 40 * 4 and mla["mha_kv_cache_bytes_per_token"] == 4 * 40 * 4
    table = mla["passes"]
    assert [row["after"] for row in table][:2] == ["naive", "absorb"]
    assert table[1]["decode_flops"] < table[0]["decode_flops"]  # absorption pays at decode
    assert all(row["kv_cache_bytes_per_token"] == 160 for row in table)


def test_run_deepseek_v3_executes_mla_and_reports_moe_too_large(tmp_path):
    out = tmp_path / "v3.json"
    r = dsc("run", "deepseek-v3", "--batch", "1", "--prompt-len", "4", "--json", str(out))
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    mla, moe = report["layers"]["mla"], report["layers"]["moe"]
    assert mla["executed"] and mla["decode"]["rel_err"] < 1e-5
    assert mla["kv_cache_bytes_per_token"] == 576 * 4 and mla["mha_kv_cache_bytes_per_token"] == 128 * 320 * 4
    assert moe["verified"] and not moe["executed"]  # 42 GiB of float32 experts: built, not run
    assert "not executed: running and checking it needs about" in r.stdout


def test_run_a_config_json(tmp_path):
    from dsc import Config

    path = tmp_path / "config.json"
    path.write_text(json.dumps(Config.preset("tiny-v2").to_hf()))
    r = dsc("run", str(path), "--layer", "moe", "--dtype", "bfloat16")
    assert r.returncode == 0, r.stderr
    assert "MoE  graph" in r.stdout and "MLA  graph" not in r.stdout


def test_show_prints_the_graphs_and_their_cost():
    r = dsc("show", "tiny-v2-lite", "--layer", "mla")
    assert r.returncode == 0, r.stderr
    assert "graph mla(" in r.stdout and "attention(" in r.stdout and "# cost per call: flops" in r.stdout
    assert "# after absorb" in r.stdout and "dispatch(" in r.stdout
    # the printed graph is valid IR text
    from dsc.ir import parse_graph

    body = r.stdout.split("# mla of tiny-v2-lite: the naive graph\n")[1].split("\n# ")[0]
    assert parse_graph(body).name == "mla"


def test_show_cost_prints_both_forms_and_the_crossover():
    r = dsc("show", "deepseek-v3", "--layer", "mla", "--cost", "--dtype", "bfloat16")
    assert r.returncode == 0, r.stderr
    assert "naive    flops = " in r.stdout and "absorbed flops = " in r.stdout
    assert "absorbed for T <= " in r.stdout and "S" in r.stdout.split("naive    flops = ")[1].split("\n")[0]
    r = dsc("show", "tiny-v3", "--layer", "mla", "--cost", "--passes", "none")
    assert "no absorb dispatch" in r.stdout


@pytest.mark.parametrize("args,message", [
    (("run", "deepseek-v9"), "unknown preset 'deepseek-v9'"),
    (("run", "missing.json"), "config file not found"),
    (("run", "--dtype", "float64"), "argument --dtype: invalid choice"),
    (("run", "--device", "cuda:0"), "CUDA is not available"),
    (("run", "--layer", "ffn"), "argument --layer: invalid choice"),
    (("run", "--batch", "0"), "--batch must be at least 1"),
    (("run", "--passes", "magic"), "passes: unknown pass 'magic'"),
    (("run", "--backend", "cuda"), "argument --backend: invalid choice"),
    (("run", "--artifacts", "somewhere"), "--artifacts runs CUDA kernels: pass --device cuda"),
    (("compile", "--backend", "tvm", "--target", "cpu", "--out", "x"), "--target cpu has nothing to write"),
    (("show", "deepseek-v9"), "unknown preset"),
    (("run", "--batch", "100000000000"), "--batch 100000000000 --prompt-len 16: the MLA prefill and decode would "
                                         "need about"),
    (("run", "--layer", "moe", "--tokens", "10000000000000"), "--tokens 10000000000000: the MoE call would need"),
    (("run", "--prompt-len", "1000000"), "this machine can give it"),
    (("bench", "--batch", "100000000000", "--backend", "reference"), "the MLA decode step would need about"),
    (("bench", "--layer", "moe", "--tokens", "10000000000000", "--backend", "reference"), "the MoE call would need"),
    (("run", "--seed", str(2 ** 70)), f"argument --seed: must be between 0 and 2**63 - 1, got {2 ** 70}"),
    (("run", "--seed", "-1"), "argument --seed: must be between 0 and 2**63 - 1"),
    (("bench", "--seed", str(2 ** 64)), "argument --seed: must be between 0 and 2**63 - 1"),
    (("compile", "--out", "/sys/dsc-kernels"), "--out /sys/dsc-kernels: cannot write in /sys"),  # even for root
    (("frobnicate",), "invalid choice"),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    r = dsc(*args)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
def test_run_mla_on_a_compiled_backend(backend):
    r = dsc("run", "--layer", "mla", "--backend", backend)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(" ok ") == 2 and f"backend {backend}" in r.stdout


def test_compile_writes_sources_and_a_manifest(tmp_path):
    import json

    r = dsc("compile", "tiny-v3", "--backend", "triton", "--out", str(tmp_path / "k"), "--dtype", "bfloat16")
    assert r.returncode == 0, r.stderr
    manifest = json.loads((tmp_path / "k" / "manifest.json").read_text())
    groups = {k["group"] for k in manifest["kernels"]}
    assert {"paged_append", "paged_attention", "attention", "gemm", "router", "moe_align", "grouped_gemm",
            "moe_combine"} <= groups
    for k in manifest["kernels"]:
        source = (tmp_path / "k" / k["file"]).read_text()
        assert f"def {k['kernel']}(" in source and k["grid"].startswith("(")
        assert all(v != "constexpr" for v in k["signature"].values()) and k["constexprs"]
    fused = [k["fuses"] for k in manifest["kernels"] if k["group"] == "paged_append"]
    assert fused == [["rms_norm", "rope", "concat", "paged_append"]]
    (tmp_path / "file").write_text("")
    r = dsc("compile", "tiny-v3", "--out", str(tmp_path / "file"))
    assert r.returncode == 2 and "is not a directory" in r.stderr


def test_malformed_and_invalid_config_files(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text('{"hidden_size": ')
    r = dsc("run", str(bad))
    assert r.returncode == 2 and "not valid JSON" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    from dsc import Config

    d = Config.preset("tiny-v3").to_hf()
    d["qk_rope_head_dim"] = 7
    bad.write_text(json.dumps(d))
    r = dsc("show", str(bad))
    assert r.returncode == 2 and "qk_rope_head_dim: must be even" in r.stderr


def test_console_script_is_installed():
    import shutil

    exe = shutil.which("dsc") or str(__import__("pathlib").Path(sys.executable).with_name("dsc"))
    r = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("dsc ")


def test_the_tvm_backend_without_tvm_is_one_line_and_exit_2():
    code = ("import sys; sys.modules['tvm'] = None  # as if TVM were not installed\n"
            "from dsc.cli import main\nsys.exit(main(['run', '--backend', 'tvm']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == "", (r.returncode, r.stdout, r.stderr)
    assert r.stderr.strip().splitlines() == ["dsc: error: backend 'tvm' needs Apache TVM: pip install 'dsc-compiler[tvm]' "
                                             "(apache-tvm 0.27)"]


def _one_line(r: subprocess.CompletedProcess, message: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dsc: error: ") and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("content, message", [
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "is not UTF-8 text (byte 0xff at offset 0)"),
    (b'{"a": ' * 100_000 + b"1" + b"}" * 100_000, "its JSON nests too deeply"),
    (b'{"hidden_size": 1e30}', "hidden_size: must be a positive integer, got 1e+30"),
    (b'{"hidden_size": 1' + b"0" * 30 + b"}", "hidden_size: must be at most 1048576 (2**20)"),
    (b'{"hidden_size": 7168.0}', "hidden_size: must be a positive integer, got 7168.0"),
])
def test_bad_config_files_are_one_line(tmp_path, content, message):
    from dsc import Config

    path = tmp_path / "config.json"
    if content.startswith(b'{"hidden_size"'):  # one bad field in an otherwise valid config
        content = json.dumps({**Config.preset("tiny-v3").to_hf(), **json.loads(content)}).encode()
    path.write_bytes(content)
    _one_line(dsc("run", str(path)), message)


def test_bad_output_paths_are_refused_before_the_work(tmp_path):
    """--json, --out: checked first, so that a long run never ends in a lost result."""
    (tmp_path / "file").write_text("")
    under_file = str(tmp_path / "file" / "out")
    cases = [
        (("run", "--json", under_file + ".json"), f"--json {under_file}.json: {tmp_path / 'file'} is not a directory"),
        (("run", "--json", str(tmp_path)), f"--json {tmp_path}: is a directory, expected a file path"),
        (("run", "--json", "/sys/dsc-report.json"), "cannot write in /sys (Permission denied)"),
        (("bench", "--backend", "reference", "--out", under_file), f"{tmp_path / 'file'} is not a directory"),
        (("bench", "--backend", "reference", "--out", str(tmp_path / "file")), "exists and is not a directory"),
        (("compile", "--out", str(tmp_path / "file" / "a" / "b")), f"{tmp_path / 'file'} is not a directory"),
    ]
    for args, message in cases:
        r = dsc(*args)
        _one_line(r, message)
        assert r.stdout == "", (args, r.stdout)  # refused before any work
    assert [p.name for p in tmp_path.iterdir()] == ["file"]  # and nothing left behind
