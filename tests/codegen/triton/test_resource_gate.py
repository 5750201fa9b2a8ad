"""The static resource gate: every Triton kernel dsc launches at DeepSeek-V3's shapes
(dsc.bench.resources.v3_launches: MLA decode with 128 and 16 heads, MLA prefill, MoE at
64 and 4096 tokens, bf16 and the FP8 pipeline), compiled for sm_90 and sm_80 as the JIT
specializes each launch on that arch, spills nothing, and its dots compile to the
tensor-core instruction its design names (wgmma for 64-row tiles on sm_90). The gate is
defined for the GPU machines' toolchain, Triton 3.6 (.ci/run's second stage); the gate
itself is tested on planted kernels under any Triton."""

import pytest

import dsc.codegen.triton  # noqa: F401  (before triton: enables its interpreter without CUDA)

triton = pytest.importorskip("triton")
from dsc.bench.resources import records, report  # noqa: E402
from dsc.codegen.triton import resources  # noqa: E402
from dsc.codegen.triton.build import KernelSpec  # noqa: E402

GPU_TRITON = "3.6"


@pytest.mark.skipif(not triton.__version__.startswith(GPU_TRITON + "."),
                    reason=f"the gate holds the GPU machines' Triton {GPU_TRITON} (CI's second stage runs it); "
                           f"this is {triton.__version__}")
@pytest.mark.parametrize("arch", ["sm90", "sm80"])
def test_every_v3_kernel_meets_its_design(arch):
    found = report(arch)
    assert found["problems"] == [], "\n".join(found["problems"])
    names = {k["name"] for k in found["kernels"]}
    assert {"batched_gemm", "paged_mla_split", "flash_attention", "grouped_gemm", "fp8_gemm", "moe_router",
            "moe_align_place"} <= names
    assert all(k["registers"] for k in found["kernels"])
    # the rules are not vacuous: the 128-head decode is a 64-row wgmma tile on Hopper
    decode = [k for k in found["kernels"] if k["name"] == "paged_mla_split"
              and any("H=128" in label for label in k["launched_by"])]
    assert decode and {k["tensor_core"] for k in decode} == {"wgmma" if arch == "sm90" else "mma.sync"}
    # and the MoE's grouped GEMMs at 4096 tokens tile 64 rows and more: wgmma, e4m3 for FP8
    prefill = [k for k in found["kernels"] if k["name"] == "grouped_gemm"
               and any(label.endswith("moe N=4096") for label in k["launched_by"])]
    assert prefill and all(k["constants"]["BLOCK_M"] >= 64 for k in prefill if arch == "sm90")
    if arch == "sm90":
        assert {k["tensor_core"] for k in prefill} == {"wgmma"}
        assert all("e4m3" in k["mma_operands"] for k in prefill if k["constants"]["ACT_QUANT"])


PLANTED = '''
import triton
import triton.language as tl


@triton.jit
def spills(x_ptr, y_ptr, BLOCK: tl.constexpr):
    r = tl.arange(0, BLOCK)
    x = tl.load(x_ptr + r[:, None] * BLOCK + r[None, :])
    acc = x
    for i in range(8):  # every power of the tile stays live: far more than one warp's registers
        x = x * x + acc
        acc = tl.where(x > acc, x, acc) + tl.sum(x, axis=1)[:, None]
    tl.store(y_ptr + r[:, None] * BLOCK + r[None, :], acc + tl.trans(x))


@triton.jit
def no_dot(a_ptr, b_ptr, c_ptr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    m = tl.arange(0, BLOCK_M)
    n = tl.arange(0, BLOCK_N)
    k = tl.arange(0, BLOCK_K)
    a = tl.load(a_ptr + m[:, None] * BLOCK_K + k[None, :]).to(tl.float32)
    b = tl.load(b_ptr + k[:, None] * BLOCK_N + n[None, :]).to(tl.float32)
    c = tl.max(a[:, :, None] + b[None, :, :], axis=1)  # a (max, +) product: no tensor cores
    tl.store(c_ptr + m[:, None] * BLOCK_N + n[None, :], c.to(tl.bfloat16))
'''


def planted(name, sig, const, warps, dot_rows=None):
    spec = KernelSpec(name, PLANTED, dot_rows=dot_rows)
    return (spec, {**sig, **{k: "constexpr" for k in const}}, const, {"num_warps": warps})


@pytest.mark.parametrize("arch", [80, 90])
def test_the_gate_catches_a_spilling_kernel_and_a_missing_tensor_core(arch):
    jobs = [planted("spills", {"x_ptr": "*fp32", "y_ptr": "*fp32"}, {"BLOCK": 128}, 1),
            planted("no_dot", {"a_ptr": "*bf16", "b_ptr": "*bf16", "c_ptr": "*bf16"},
                    {"BLOCK_M": 64, "BLOCK_N": 16, "BLOCK_K": 16}, 4, dot_rows="BLOCK_M")]
    spilling, undotted = records([("planted", jobs)], arch)
    assert spilling["spill_store_bytes"] > 0 and spilling["expected_tensor_core"] is None
    said = resources.problems(spilling)
    assert len(said) == 1 and said[0].startswith(f"spills (sm_{arch}, BLOCK=128 warps=1") and "spills" in said[0]
    assert undotted["tensor_core"] == "none" and undotted["spill_store_bytes"] == 0
    assert undotted["expected_tensor_core"] == ("wgmma" if arch == 90 else "mma.sync")
    assert resources.problems(undotted) == [
        f"no_dot (sm_{arch}, {undotted['variant']}): its dots should compile to "
        f"{undotted['expected_tensor_core']}, the PTX has none"]


def test_expected_instruction_follows_triton_s_wgmma_rule():
    rule = resources.expected_tensor_core
    assert rule("BLOCK_M", {"BLOCK_M": 64}, 8, 90) == "wgmma"
    assert rule("BLOCK_M", {"BLOCK_M": 32}, 4, 90) == "mma.sync"  # below a warpgroup's 64 rows
    assert rule("BLOCK_M", {"BLOCK_M": 64}, 2, 90) == "mma.sync"  # no whole warpgroup
    assert rule("BLOCK_M", {"BLOCK_M": 128}, 4, 80) == "mma.sync"
    assert rule("BLOCK_M", {"BLOCK_M": 64, "DOT_F32": True}, 4, 90) is None
    assert rule(None, {}, 4, 90) is None
    assert resources.tensor_core("wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16") == "wgmma"
    assert resources.tensor_core("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32") == "mma.sync"
    assert resources.tensor_core("fma.rn.f32") == "none"
    assert resources.mma_operands("wgmma.mma_async.sync.aligned.m64n64k32.f32.e4m3.e4m3 {...}") == ["e4m3"]
    assert resources.mma_operands("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {}") == ["bf16"]
    fp8 = {"name": "k", "arch": 90, "variant": "v", "registers": 200, "spill_store_bytes": 0, "spill_load_bytes": 0,
           "expected_tensor_core": "wgmma", "tensor_core": "wgmma", "constants": {"ACT_QUANT": True}}
    assert resources.problems({**fp8, "mma_operands": ["e4m3"]}) == []
    assert resources.problems({**fp8, "mma_operands": ["f16"]}) == [
        "k (sm_90, v): FP8 x FP8 dots should be e4m3 wgmma, the PTX's are ['f16']"]


PTXAS = """ptxas info    : Compiling entry function 'k' for 'sm_90a'
ptxas info    : Function properties for k
    632 bytes stack frame, 748 bytes spill stores, 880 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 632 bytes cumulative stack size
"""


def test_ptxas_usage_reads_its_report():
    assert resources.ptxas_usage(PTXAS) == {"registers": 255, "stack_bytes": 632, "spill_store_bytes": 748,
                                            "spill_load_bytes": 880}
    assert resources.ptxas_usage("ptxas info : Used 40 registers") == {
        "registers": 40, "stack_bytes": None, "spill_store_bytes": None, "spill_load_bytes": None}
