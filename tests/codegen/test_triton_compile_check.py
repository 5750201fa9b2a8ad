"""Every kernel the triton backend launches for the MLA and MoE layers compiles for sm_80 (A100)
and sm_90 (H100/H800) through triton.compile with a GPUTarget: GPU-only compile errors
caught on a machine without a GPU."""

import pytest
import torch

from dsc.codegen.schedule import schedule
from dsc.config import Config
from dsc.nn import MLA, MoE

pytest.importorskip("triton")
from dsc.codegen.triton.build import compile_all  # noqa: E402
from dsc.codegen.triton.lower import compile_jobs  # noqa: E402


def jobs(preset, dtype):
    mla = MLA(Config.preset(preset), dtype=dtype, target="sm90")
    found = [job for grp in schedule(mla.graph) for job in compile_jobs(grp)]
    kinds = {grp.kind for grp in schedule(mla.graph)}
    assert {"paged_append", "paged_attention", "attention", "gemm", "rowwise"} <= kinds
    return found


@pytest.mark.parametrize("arch", [80, 90])
@pytest.mark.parametrize("preset, dtype", [("deepseek-v3", torch.bfloat16), ("tiny-v2-lite", torch.float32)])
def test_every_mla_kernel_compiles(arch, preset, dtype):
    found = jobs(preset, dtype)
    results = compile_all(found, arch)
    assert len(results) == len(found) >= 6
    for (spec, _, _), res in zip(found, results):
        assert f".target sm_{arch}" in res["ptx"] and res["cubin_bytes"] > 0, spec.name


@pytest.mark.parametrize("arch", [80, 90])
@pytest.mark.parametrize("passes", ["default", "none"])
def test_every_moe_kernel_compiles(arch, passes):
    moe = MoE(Config.preset("tiny-v3"), dtype=torch.bfloat16, passes=passes)
    groups = schedule(moe.graph)
    assert "router" in {grp.kind for grp in groups}
    found = [job for grp in groups for job in compile_jobs(grp)]
    for (spec, _, _), res in zip(found, compile_all(found, arch)):
        assert f".target sm_{arch}" in res["ptx"] and res["cubin_bytes"] > 0, spec.name


FP8 = ["absorb", "fuse_experts", "fp8", "fp8_kv", "fold", "cse", "dce"]


@pytest.mark.parametrize("arch", [80, 90])
def test_every_fp8_kernel_compiles_for_the_target_it_was_compiled_for(arch):
    """FP8 graphs differ by target: FP8 x FP8 dots with activation quantization for sm_90,
    weight-only FP8 for sm_80; both with the FP8 latent cache."""
    cfg = Config.preset("deepseek-v3").replace(n_routed_experts=16, n_group=4, topk_group=2)
    found = []
    for layer in (MLA, MoE):
        module = layer(cfg, dtype=torch.bfloat16, passes=FP8, target=f"sm{arch}")
        groups = schedule(module.graph)
        assert {"fp8_gemm", "grouped_gemm_fp8"} & {grp.kind for grp in groups}
        found += [job for grp in groups for job in compile_jobs(grp)]
    for (spec, _, _), res in zip(found, compile_all(found, arch)):
        assert f".target sm_{arch}" in res["ptx"] and res["cubin_bytes"] > 0, spec.name
