"""Triton's own side of the dense attention kernel: its query tiles give one answer, and
it compiles for sm_80 and sm_90. Its numerics on both backends: tests/codegen/test_attention_kernels.py."""

import pytest
import torch

import dsc.codegen.triton  # noqa: F401  (before triton: enables its interpreter without CUDA)
from paged_reference import dense_case, dense_lse
from util import F32_TOL, assert_close

triton = pytest.importorskip("triton")
from dsc.codegen.triton.build import compile_for  # noqa: E402
from dsc.codegen.triton.dense_attention import flash_attention, signature  # noqa: E402


@pytest.mark.parametrize("block_m", [16, 32, 64])
def test_every_query_tile_gives_the_same_attention(block_m):
    g = torch.Generator().manual_seed(0)
    lens = torch.tensor([0, 21], dtype=torch.int32)
    q, k, v = dense_case(g, lens, 37, 60, 2, 1, 24, 16, torch.float32)
    out, lse = flash_attention(q, k, v, lens, 0.25, len_offset=37, block_m=block_m)
    ref, _ = flash_attention(q, k, v, lens, 0.25, len_offset=37, block_m=16)
    assert_close(out, ref, F32_TOL, f"block_m {block_m}")
    assert_close(lse, dense_lse(q, k, lens, 0.25), 1e-5, "lse")


@pytest.mark.parametrize("arch", [80, 90])
@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_compiles_for_a100_and_h100(arch, dtype):
    for spec, sig, const in signature(dtype):
        compiled = compile_for(spec, sig, const, arch)
        assert f".target sm_{arch}" in compiled["ptx"] and compiled["cubin_bytes"] > 0
