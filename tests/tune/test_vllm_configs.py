"""vLLM's fused-MoE config files in and out of dsc's tuned tables: the name and content
in vLLM's exact format, both grouped GEMMs of the model filled per batch size, the
launch reading an imported file (the tiles, group order, warps and stages reach the
kernel), the export in vLLM's naming, and every file dsc cannot take named."""

import json
import subprocess
import sys

import pytest
import torch

from dsc.codegen.triton import fused_moe
from dsc.codegen.triton.build import recorded_launches
from dsc.config import Config
from dsc.runtime import tuned
from dsc.runtime.device import ARCH_LIMITS, DeviceInfo
from dsc.runtime.tuned import TunedTable, TuningError, shape_key
from dsc.tune import vllm_configs
from util import clean_env

H100 = "NVIDIA H100 80GB HBM3"
CFG = Config.preset("tiny-v3").replace(moe_intermediate_size=128, hidden_size=256)  # tiles of 64 fit
NAME = "E=16,N=128,device_name=NVIDIA_H100_80GB_HBM3.json"
VLLM = {"triton_version": "3.4.0",
        "1": {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 32, "BLOCK_SIZE_K": 64, "GROUP_SIZE_M": 1, "num_warps": 4,
              "num_stages": 3},
        "64": {"BLOCK_SIZE_M": 64, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 64, "GROUP_SIZE_M": 32, "num_warps": 4,
               "num_stages": 4},
        "4096": {"BLOCK_SIZE_M": 256, "BLOCK_SIZE_N": 128, "BLOCK_SIZE_K": 64, "GROUP_SIZE_M": 16, "num_warps": 8,
                 "num_stages": 3}}


@pytest.fixture
def vllm_file(tmp_path):
    path = tmp_path / NAME
    path.write_text(json.dumps(VLLM, indent=4))
    return path


def test_an_imported_file_fills_both_grouped_gemms_per_batch_size(vllm_file):
    table = TunedTable(H100)
    lines = vllm_configs.import_file(str(vllm_file), CFG, table)
    shapes = vllm_configs.grouped_shapes(CFG, fp8=False)
    # gate+up (N = the intermediate size, K = hidden) and down, over the routed experts and the
    # shared one dsc appends
    assert {(s["N"], s["K"], s["swiglu"], s["experts"]) for s in shapes} == {(128, 256, True, 17), (256, 128, False, 17)}
    entries = table.entries[vllm_configs.KERNEL]["bfloat16"]
    for shape in shapes:
        got = entries[shape_key({**shape, "M": 64})]["config"]
        assert got == {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 32, "num_warps": 4, "num_stages": 4}
        assert shape_key({**shape, "M": 4096}) not in entries  # 256-row tiles: dsc's kernel stops at 128
    assert lines[0].endswith("4 configs for 3 batch sizes x 2 GEMMs")
    assert any("M=4096 gate+up: left out (BLOCK_M=256 is not one of dsc's [16, 32, 64, 128])" in x for x in lines)


def test_the_launch_reads_the_imported_tiles(vllm_file, tmp_path, monkeypatch):
    """Imported into the card's file, the grouped GEMM a 64-token batch launches on that
    card carries the file's tiles, launch order, warps and stages."""
    monkeypatch.setenv("DSC_TUNED_DIR", str(tmp_path / "tuned"))
    monkeypatch.setattr(tuned, "device_limits", lambda device: ARCH_LIMITS["sm90"])
    tuned.forget()
    table = TunedTable(H100)
    vllm_configs.import_file(str(vllm_file), CFG, table)
    table.save(tuned.file_for(H100))
    tuned.forget()  # (the import's own placeholder launches looked for the file before it existed)
    tokens, topk, experts, inter, hidden = 64, 5, 17, 128, 256
    x = torch.empty(tokens, hidden, dtype=torch.bfloat16)
    ids = torch.zeros(tokens, topk, dtype=torch.int64)
    w13 = torch.empty(experts, 2 * inter, hidden, dtype=torch.bfloat16)
    slots = torch.zeros(tokens * topk + experts * 15, dtype=torch.int32)
    try:
        with recorded_launches(gpu=DeviceInfo("cuda", H100, (9, 0))) as launches:
            fused_moe._grouped_gemm(x, slots, ids, w13, None, gather=True, swiglu=True, block=16)
    finally:
        tuned.forget()
    spec, _, kwargs, grid = launches[-1]
    assert spec.name == "grouped_gemm"
    assert {k: kwargs[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M", "num_warps", "num_stages")} == \
        {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 32, "num_warps": 4, "num_stages": 4}
    assert grid[0] == 32  # GROUP_M row tiles side by side in the launch order


def test_export_writes_vllm_s_name_and_format(vllm_file):
    table = TunedTable(H100)
    vllm_configs.import_file(str(vllm_file), CFG, table)
    files = vllm_configs.export_files(table, CFG)
    assert list(files) == [NAME]
    assert json.loads(files[NAME]) == {k: v for k, v in VLLM.items() if k in ("1", "64")}


def test_fp8_block_files_take_the_fp8_pipeline_s_gemms(tmp_path):
    name = "E=16,N=128,device_name=NVIDIA_H100_80GB_HBM3,dtype=fp8_w8a8,block_shape=[128, 128].json"
    cfg = {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 128, "GROUP_SIZE_M": 1, "num_warps": 4,
           "num_stages": 3}
    (tmp_path / name).write_text(json.dumps({"8": cfg, "16": {**cfg, "BLOCK_SIZE_K": 64}}))
    table = TunedTable(H100)
    lines = vllm_configs.import_file(str(tmp_path / name), CFG, table)
    keys = table.entries[vllm_configs.KERNEL]["bfloat16"]
    assert all("fp8=128" in k for k in keys) and len(keys) == 2  # batch 8, both GEMMs
    assert any("M=16 gate+up: left out (BLOCK_K must be 128 here" in x for x in lines)
    assert list(vllm_configs.export_files(table, CFG)) == [name]


@pytest.mark.parametrize("name, message", [
    ("E=16,N=128,device_name=NVIDIA_H100_80GB_HBM3,dtype=int8_w8a8.json", "dtype=int8_w8a8 has no dsc pipeline"),
    ("E=16,N=128,device_name=NVIDIA_H100_80GB_HBM3,dtype=fp8_w8a8.json", "no block_shape \\(per-tensor"),
    ("E=16,N=128,device_name=NVIDIA_H100_80GB_HBM3,dtype=fp8_w8a8,block_shape=[64, 64].json",
     "block_shape=\\[64, 64\\]"),
    ("moe_config.json", "not a vLLM fused-MoE config name"),
    ("E=8,N=128,device_name=NVIDIA_H100_80GB_HBM3.json", "is for E=8, N=128; .* runs 16 routed experts"),
    ("E=16,N=64,device_name=NVIDIA_H100_80GB_HBM3.json", "of intermediate size 128"),
])
def test_files_dsc_cannot_take_are_refused_by_name(tmp_path, name, message):
    (tmp_path / name).write_text(json.dumps({"1": VLLM["1"]}))
    with pytest.raises(TuningError, match=message):
        vllm_configs.import_file(str(tmp_path / name), CFG, TunedTable(H100))


def test_a_malformed_entry_or_another_card_s_table_is_refused(vllm_file, tmp_path):
    bad = tmp_path / "bad" / NAME
    bad.parent.mkdir()
    bad.write_text(json.dumps({"1": {"BLOCK_SIZE_M": 16}}))
    with pytest.raises(TuningError, match="batch size 1 must hold integer BLOCK_SIZE_M"):
        vllm_configs.import_file(str(bad), CFG, TunedTable(H100))
    with pytest.raises(TuningError, match="is for 'NVIDIA H100 80GB HBM3', the table for 'NVIDIA A100"):
        vllm_configs.import_file(str(vllm_file), CFG, TunedTable("NVIDIA A100-SXM4-80GB"))


def test_the_command_line_imports_and_exports(vllm_file, tmp_path):
    """dsc tune MODEL --import-vllm FILE --out PATH; --export-vllm DIR --from PATH; a file
    it cannot take is one line and exit 2."""
    model = tmp_path / "config.json"
    model.write_text(json.dumps(CFG.to_hf()))
    out = tmp_path / "h100.json"

    def dsc(*args):
        return subprocess.run([sys.executable, "-m", "dsc", "tune", str(model), *args], capture_output=True,
                              text=True, env=clean_env(), timeout=600)

    r = dsc("--import-vllm", str(vllm_file), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "4 configs for 3 batch sizes x 2 GEMMs" in r.stdout and TunedTable.load(str(out)).device == H100
    r = dsc("--export-vllm", str(tmp_path / "vllm"), "--from", str(out))
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "vllm" / NAME).read_text()) == {k: VLLM[k] for k in ("1", "64")}
    r = dsc("--import-vllm", str(tmp_path / "E=16,N=128,device_name=X,dtype=int8_w8a8.json"))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "int8_w8a8" in r.stderr
