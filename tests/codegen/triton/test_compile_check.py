"""Every kernel the triton backend launches for the MLA and MoE layers compiles for sm_80 (A100)
and sm_90 (H100/H800) through triton.compile with a GPUTarget: GPU-only compile errors
caught on a machine without a GPU. Each kernel is compiled as Triton's JIT specializes it at a
real launch (launch_jobs records the arguments of a call; compile_all specializes them with
the installed Triton's own code): the variant a GPU runs, not an unspecialized one."""

import pytest
import torch

from dsc.config import Config
from dsc.nn import MLA, MoE

pytest.importorskip("triton")
from dsc.codegen.triton.build import compile_all  # noqa: E402
from dsc.executor.launches import launch_jobs  # noqa: E402


def mla_jobs(module):
    """launch_jobs of a decode step, and of a prefill long enough for the naive branch."""
    g = module.graph
    page = next(n for n in g.inputs if n.name == "cache").shape[1]
    found = launch_jobs(g, {"B": 2, "T": 1, "NB": 4, "P": 2})
    for d in (n for n in g.nodes() if n.op == "dispatch"):
        tokens = d.attrs["le"] + 1
        pages = -(-tokens // page)
        found += launch_jobs(g, {"B": 1, "T": tokens, "NB": pages, "P": pages})
    return found


def check(found, results, arch):
    """Each compiled for the architecture, and specialized as the JIT specializes its launch:
    ints equal to 1 (and None) become constants, ints and pointers that are multiples of 16
    are known to be."""
    assert len(results) == len(found)
    for (spec, sig, _, options), res in zip(found, results):
        assert f".target sm_{arch}" in res["ptx"] and res["cubin_bytes"] > 0, spec.name
        runtime = [k for k, v in sig.items() if v != "constexpr"]
        assert len(options["args"]) == len(runtime), spec.name
        named = dict(zip(runtime, options["args"]))
        ints = {k: a for k, a in named.items() if type(a) is int}
        constant = sorted([k for k, a in ints.items() if a == 1] + [k for k, a in named.items() if a is None])
        divisible = sorted([k for k, a in ints.items() if a != 1 and a % 16 == 0]
                           + [k for k, a in named.items() if isinstance(a, torch.Tensor) and a.data_ptr() % 16 == 0])
        assert sorted(res["specialized"]["constexpr"]) == constant, spec.name
        assert sorted(res["specialized"]["divisible"]) == divisible, spec.name


@pytest.mark.parametrize("arch", [80, 90])
@pytest.mark.parametrize("preset, dtype", [("deepseek-v3", torch.bfloat16), ("tiny-v2-lite", torch.float32)])
def test_every_mla_kernel_compiles(arch, preset, dtype):
    found = mla_jobs(MLA(Config.preset(preset), dtype=dtype, target="sm90"))
    names = {spec.name for spec, *_ in found}
    assert {"batched_gemm", "paged_mla_split", "paged_mla_combine", "flash_attention"} <= names
    assert any(name.startswith("row_") and name.count("paged_append") for name in names)
    assert len(found) >= 12
    check(found, compile_all(found, arch), arch)


def test_unit_strides_are_constants_and_widths_multiples_of_16():
    """What the JIT gives a linear at V3's widths: x and the output row-major, the weight read
    transposed (unit K stride), so the loads are contiguous and vectorized; before, the check
    compiled every stride as an unknown i32."""
    found = [job for job in mla_jobs(MLA(Config.preset("deepseek-v3"), dtype=torch.bfloat16, target="sm90"))
             if job[0].name == "batched_gemm"]
    res = compile_all(found[:1], 90)[0]["specialized"]
    assert {"sak", "sbk", "scn"} <= set(res["constexpr"])
    assert {"a_ptr", "b_ptr", "c_ptr", "sam", "sbn", "scm", "N", "K"} <= set(res["divisible"])


@pytest.mark.parametrize("arch", [80, 90])
@pytest.mark.parametrize("passes, tokens", [("default", 1), ("none", 48)])
def test_every_moe_kernel_compiles(arch, passes, tokens):
    moe = MoE(Config.preset("tiny-v3"), dtype=torch.bfloat16, passes=passes)
    found = launch_jobs(moe.graph, {"N": tokens})
    assert {"moe_router", "moe_align_count", "moe_align_offsets", "moe_align_place", "grouped_gemm",
            "moe_combine"} <= {spec.name for spec, *_ in found}
    check(found, compile_all(found, arch), arch)


FP8 = ["absorb", "fuse_experts", "fp8", "fp8_kv", "fold", "cse", "dce"]


@pytest.mark.parametrize("arch", [80, 90])
def test_every_fp8_kernel_compiles_for_the_target_it_was_compiled_for(arch):
    """FP8 graphs differ by target: FP8 x FP8 dots with activation quantization for sm_90,
    weight-only FP8 for sm_80; both with the FP8 latent cache."""
    cfg = Config.preset("deepseek-v3").replace(n_routed_experts=16, n_group=4, topk_group=2)
    found = []
    for layer, env in ((MLA, {"B": 2, "T": 1, "NB": 4, "P": 2}), (MoE, {"N": 16})):
        module = layer(cfg, dtype=torch.bfloat16, passes=FP8, target=f"sm{arch}")
        found += launch_jobs(module.graph, env)
    assert {"fp8_gemm", "grouped_gemm"} <= {spec.name for spec, *_ in found}
    check(found, compile_all(found, arch), arch)
