"""Causal flash attention over dense, strided K/V (the naive MLA branch) against the IR's
attention op."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import dsc.codegen.triton  # noqa: F401  (before triton: enables its interpreter without CUDA)
from dsc.ir import interpret
from paged_reference import dense_case, dense_ir_attention, dense_lse
from strategies import seeds
from util import BF16_TOL, F32_TOL, assert_close

triton = pytest.importorskip("triton")
from dsc.codegen.triton.build import compile_for  # noqa: E402
from dsc.codegen.triton.dense_attention import flash_attention, signature  # noqa: E402

@given(seed=seeds, batch=st.integers(1, 2), tokens=st.integers(1, 40), heads=st.sampled_from([1, 2, 3]),
       shared_kv=st.booleans(), dk=st.sampled_from([8, 24, 40]), dv=st.sampled_from([8, 16, 20]),
       block_m=st.sampled_from([16, 32]), dtype=st.sampled_from([torch.float32, torch.bfloat16]), data=st.data())
def test_matches_the_ir_attention(seed, batch, tokens, heads, shared_kv, dk, dv, block_m, dtype, data):
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor(data.draw(st.lists(st.integers(0, 50), min_size=batch, max_size=batch)), dtype=torch.int32)
    s = int(lens.max()) + tokens + data.draw(st.integers(0, 9))
    hk = 1 if shared_kv else heads
    q, k, v = dense_case(g, lens, tokens, s, heads, hk, dk, dv, dtype)
    dt = "f32" if dtype == torch.float32 else "bf16"
    ref = interpret(dense_ir_attention(dk, dv, heads, hk, dt), {"q": q, "k": k, "v": v, "cache_seqlens": lens},
                    {})["out"]
    out, lse = flash_attention(q, k, v, lens, 0.25, len_offset=tokens, block_m=block_m)
    assert_close(out.float(), ref.float(), F32_TOL if dtype == torch.float32 else BF16_TOL, "flash attention")
    assert_close(lse, dense_lse(q, k, lens, 0.25), 1e-5 if dtype == torch.float32 else 1e-3, "lse")


@pytest.mark.parametrize("arch", [80, 90])
@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_compiles_for_a100_and_h100(arch, dtype):
    for spec, sig, const in signature(dtype):
        compiled = compile_for(spec, sig, const, arch)
        assert f".target sm_{arch}" in compiled["ptx"] and compiled["cubin_bytes"] > 0
