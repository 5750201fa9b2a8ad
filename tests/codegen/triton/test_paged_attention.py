"""Triton's own side of MLA attention over the paged cache: the split-KV kernel and its
combine compile for sm_80 and sm_90. Its numerics on both backends (split counts drawn):
tests/codegen/test_attention_kernels.py."""

import pytest

import dsc.codegen.triton  # noqa: F401  (before triton: enables its interpreter without CUDA)

triton = pytest.importorskip("triton")
from dsc.codegen.triton.build import compile_for  # noqa: E402
from dsc.codegen.triton.paged_attention import signature  # noqa: E402


@pytest.mark.parametrize("arch", [80, 90])
@pytest.mark.parametrize("dtype, heads, tokens, page", [("bf16", 128, 1, 64), ("bf16", 16, 2, 1), ("fp32", 16, 1, 16)])
def test_compiles_for_a100_and_h100(arch, dtype, heads, tokens, page):
    for spec, sig, const in signature(dtype, heads, tokens, page):
        compiled = compile_for(spec, sig, const, arch)
        assert f".target sm_{arch}" in compiled["ptx"] and compiled["cubin_bytes"] > 0
