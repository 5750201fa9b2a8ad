"""MLA attention over the paged latent cache (split-KV + combine) against the IR's
attention op on the gathered cache, and its log-sum-exp against plain PyTorch."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import dsc.codegen.triton  # noqa: F401  (before triton: enables its interpreter without CUDA)
from dsc.errors import InputError
from dsc.ir import interpret
from paged_reference import ir_attention, paged_case, torch_lse
from strategies import seeds
from util import BF16_TOL, F32_TOL, assert_close

triton = pytest.importorskip("triton")
from dsc import ops  # noqa: E402
from dsc.codegen.triton.build import compile_for  # noqa: E402
from dsc.codegen.triton.paged_attention import signature  # noqa: E402

@given(seed=seeds, page=st.sampled_from([1, 16, 64]), batch=st.integers(1, 3), tokens=st.integers(1, 2),
       heads=st.sampled_from([1, 3, 8, 16]), dv=st.sampled_from([8, 24, 32]), rope=st.sampled_from([4, 8, 16]),
       splits=st.sampled_from([1, 2, 5]), dtype=st.sampled_from([torch.float32, torch.bfloat16]), data=st.data())
def test_split_kv_matches_the_ir_attention(seed, page, batch, tokens, heads, dv, rope, splits, dtype, data):
    g = torch.Generator().manual_seed(seed)
    # lengths before the call: 0 (only the new tokens), not multiples of the block, past one page
    lens = torch.tensor(data.draw(st.lists(st.integers(0, 70), min_size=batch, max_size=batch)), dtype=torch.int32)
    dk = dv + rope
    q, cache, table = paged_case(g, batch, tokens, heads, dk, page, lens, dtype)
    dt = "f32" if dtype == torch.float32 else "bf16"
    ref = interpret(ir_attention(dk, dv, page, dt),
                    {"q": q, "cache": cache, "block_table": table, "cache_seqlens": lens}, {})["out"]
    total = lens + tokens
    out, lse = ops.mla_decode(q, cache, table, total, 0.3, dv, num_splits=splits)
    assert out.dtype == dtype and lse.shape == (batch, heads, tokens)
    tol = F32_TOL if dtype == torch.float32 else BF16_TOL
    assert_close(out.float(), ref.float(), tol, "attention output")
    assert_close(lse, torch_lse(q, cache, table, total, 0.3), 1e-5 if dtype == torch.float32 else 1e-3, "lse")


def test_non_causal_sees_every_cached_token():
    g = torch.Generator().manual_seed(1)
    lens = torch.tensor([5, 17], dtype=torch.int32)
    q, cache, table = paged_case(g, 2, 2, 4, 24, 16, lens, torch.float32)
    out, lse = ops.mla_decode(q, cache, table, lens, 0.5, 16, causal=False, num_splits=2)
    rows = cache[table.long()].reshape(2, -1, 24)
    s = torch.einsum("bthd,bsd->bths", q, rows) * 0.5
    s = s.masked_fill(torch.arange(rows.shape[1])[None, None, None] >= lens[:, None, None, None], float("-inf"))
    ref = torch.einsum("bths,bsd->bthd", s.softmax(-1), rows[..., :16])
    assert_close(out, ref, F32_TOL, "non-causal output")
    assert_close(lse, s.logsumexp(-1).transpose(1, 2), F32_TOL, "non-causal lse")


def test_more_splits_than_cached_blocks_leaves_empty_splits_harmless():
    g = torch.Generator().manual_seed(2)
    lens = torch.tensor([0], dtype=torch.int32)
    q, cache, table = paged_case(g, 1, 1, 8, 40, 1, lens, torch.float32, spare_pages=40)
    out, lse = ops.mla_decode(q, cache, table, lens + 1, 1 / math.sqrt(40), 32, num_splits=7)
    # one visible token: softmax weight one, the output is that token's value row
    row = cache[table[0, 0].long(), 0]
    assert_close(out[0, 0], row[:32].expand(8, 32), F32_TOL, "single-token output")
    assert_close(lse[0, :, 0], q[0, 0] @ row / math.sqrt(40), F32_TOL, "single-token lse")


@pytest.mark.parametrize("bad, message", [
    (lambda q, c, t, n: (q[0], c, t, n), "q must have 4 dims"),
    (lambda q, c, t, n: (q, c[..., :-1], t, n), "kv_cache must have shape"),
    (lambda q, c, t, n: (q, c.double(), t, n), "kv_cache must be float32"),
    (lambda q, c, t, n: (q, c, t.long(), n), "block_table must be int32"),
    (lambda q, c, t, n: (q, c, t, n[:1]), "cache_seqlens must have shape"),
    (lambda q, c, t, n: (q, c, t, n + 10_000), "cache_seqlens must lie in"),
])
def test_bad_inputs_are_named(bad, message):
    g = torch.Generator().manual_seed(3)
    lens = torch.tensor([3, 4], dtype=torch.int32)
    q, cache, table = paged_case(g, 2, 1, 8, 24, 16, lens, torch.float32)
    with pytest.raises(InputError, match=message):
        ops.mla_decode(*bad(q, cache, table, lens + 1), 0.2, 16)


@pytest.mark.parametrize("arch", [80, 90])
@pytest.mark.parametrize("dtype, heads, tokens, page", [("bf16", 128, 1, 64), ("bf16", 16, 2, 1), ("fp32", 16, 1, 16)])
def test_compiles_for_a100_and_h100(arch, dtype, heads, tokens, page):
    for spec, sig, const in signature(dtype, heads, tokens, page):
        compiled = compile_for(spec, sig, const, arch)
        assert f".target sm_{arch}" in compiled["ptx"] and compiled["cubin_bytes"] > 0
