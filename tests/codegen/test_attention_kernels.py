"""The attention kernel groups of both compiled backends, called by the names the kinds
declare (dsc/codegen/groups/attention.py): MLA attention over the paged latent cache
against the IR's attention op on the gathered cache, dense causal attention over strided
K/V against the IR's attention op, and each one's log-sum-exp against plain PyTorch."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from backend_kernels import backend_kernels
from dsc.errors import InputError
from dsc.ir import interpret
from paged_reference import dense_case, dense_ir_attention, dense_lse, ir_attention, paged_case, torch_lse
from strategies import seeds
from util import BF16_TOL, COMPILED_BACKENDS, F32_TOL, assert_close


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
@given(seed=seeds, page=st.sampled_from([1, 16, 64]), batch=st.integers(1, 3), tokens=st.integers(1, 2),
       heads=st.sampled_from([1, 3, 8, 16]), dv=st.sampled_from([8, 24, 32]), rope=st.sampled_from([4, 8, 16]),
       splits=st.sampled_from([None, 1, 2, 5]), dtype=st.sampled_from([torch.float32, torch.bfloat16]),
       data=st.data())
def test_paged_attention_matches_the_ir_attention(backend, seed, page, batch, tokens, heads, dv, rope, splits, dtype,
                                                  data):
    g = torch.Generator().manual_seed(seed)
    # lengths before the call: 0 (only the new tokens), not multiples of the block, past one page
    lens = torch.tensor(data.draw(st.lists(st.integers(0, 70), min_size=batch, max_size=batch)), dtype=torch.int32)
    dk = dv + rope
    q, cache, table = paged_case(g, batch, tokens, heads, dk, page, lens, dtype)
    dt = "f32" if dtype == torch.float32 else "bf16"
    want = interpret(ir_attention(dk, dv, page, dt),
                     {"q": q, "cache": cache, "block_table": table, "cache_seqlens": lens}, {})["out"]
    # table entries past a row's tokens are garbage in real servers: they must never be read
    unused = torch.arange(table.shape[1])[None] * page >= (lens + tokens)[:, None]
    out, lse = backend_kernels(backend).paged_attention(q, cache, table.masked_fill(unused, -1), lens, 0.3, dv,
                                                        len_offset=tokens, num_splits=splits)
    assert out.dtype == dtype and lse.shape == (batch, heads, tokens)
    tol = F32_TOL if dtype == torch.float32 else BF16_TOL
    assert_close(out.float(), want.float(), tol, f"paged attention on {backend}")
    assert_close(lse, torch_lse(q, cache, table, lens + tokens, 0.3), 1e-5 if dtype == torch.float32 else 1e-3,
                 f"lse on {backend}")


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
def test_non_causal_sees_every_cached_token(backend):
    g = torch.Generator().manual_seed(1)
    lens = torch.tensor([5, 17], dtype=torch.int32)
    q, cache, table = paged_case(g, 2, 2, 4, 24, 16, lens, torch.float32)
    out, lse = backend_kernels(backend).paged_attention(q, cache, table, lens, 0.5, 16, len_offset=0, causal=False,
                                                        num_splits=2)
    rows = cache[table.long()].reshape(2, -1, 24)
    s = torch.einsum("bthd,bsd->bths", q, rows) * 0.5
    s = s.masked_fill(torch.arange(rows.shape[1])[None, None, None] >= lens[:, None, None, None], float("-inf"))
    ref = torch.einsum("bths,bsd->bthd", s.softmax(-1), rows[..., :16])
    assert_close(out, ref, F32_TOL, f"non-causal output on {backend}")
    assert_close(lse, s.logsumexp(-1).transpose(1, 2), F32_TOL, f"non-causal lse on {backend}")


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
def test_one_visible_token_is_that_tokens_value_row(backend):
    """More splits than cached blocks (Triton's split-KV) leaves the empty splits harmless."""
    g = torch.Generator().manual_seed(2)
    lens = torch.tensor([0], dtype=torch.int32)
    q, cache, table = paged_case(g, 1, 1, 8, 40, 1, lens, torch.float32, spare_pages=40)
    out, lse = backend_kernels(backend).paged_attention(q, cache, table, lens + 1, 1 / math.sqrt(40), 32,
                                                        len_offset=0, num_splits=7)
    # one visible token: softmax weight one, the output is that token's value row
    row = cache[table[0, 0].long(), 0]
    assert_close(out[0, 0], row[:32].expand(8, 32), F32_TOL, f"single-token output on {backend}")
    assert_close(lse[0, :, 0], q[0, 0] @ row / math.sqrt(40), F32_TOL, f"single-token lse on {backend}")


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
def test_a_query_that_sees_nothing_gets_zero_and_infinite_lse(backend):
    """FlashMLA's convention for an idle slot of a serving batch (a row of length 0)."""
    g = torch.Generator().manual_seed(4)
    lens = torch.tensor([0, 9], dtype=torch.int32)
    q, cache, table = paged_case(g, 2, 1, 4, 24, 16, lens, torch.float32)
    out, lse = backend_kernels(backend).paged_attention(q, cache, table, lens, 0.5, 16, len_offset=0)
    assert bool((out[0] == 0).all()) and bool(torch.isposinf(lse[0]).all())
    assert bool(out[1].abs().sum() > 0) and bool(torch.isfinite(lse[1]).all())


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
def test_nan_in_positions_no_query_sees_never_reaches_the_output(backend):
    """A page slot past a row's length, or a page no row uses, may hold anything, NaN
    included (FlashMLA's test fills them so): the output must be what the clean cache
    gives, on the paged and the dense kernels alike."""
    g = torch.Generator().manual_seed(6)
    lens = torch.tensor([3, 40], dtype=torch.int32)
    q, cache, table = paged_case(g, 2, 2, 4, 24, 16, lens, torch.float32, spare_pages=2)
    clean = backend_kernels(backend).paged_attention(q, cache, table, lens, 0.5, 16, len_offset=2)
    dirty = cache.clone()
    flat = dirty.view(-1, 24)
    used = torch.zeros(flat.shape[0], dtype=torch.bool)
    for b, n in enumerate((lens + 2).tolist()):
        for s in range(n):
            used[int(table[b, s // 16]) * 16 + s % 16] = True
    flat[~used] = float("nan")
    out, lse = backend_kernels(backend).paged_attention(q, dirty, table, lens, 0.5, 16, len_offset=2)
    assert_close(out, clean[0], F32_TOL, f"paged output beside NaN on {backend}")
    assert_close(lse, clean[1], F32_TOL, f"paged lse beside NaN on {backend}")
    qd, k, v = dense_case(g, lens, 2, 48, 4, 1, 24, 16, torch.float32)
    want = backend_kernels(backend).attention(qd, k, v, lens, 0.25, len_offset=2)[0]
    k, v = k.clone(), v.clone()
    for b, n in enumerate((lens + 2).tolist()):
        k[b, n:], v[b, n:] = float("nan"), float("nan")
    assert_close(backend_kernels(backend).attention(qd, k, v, lens, 0.25, len_offset=2)[0], want, F32_TOL,
                 f"dense output beside NaN on {backend}")


@pytest.mark.parametrize("bad, message", [
    (lambda q, c, t, n: (q[0], c, t, n), "q must have 4 dims"),
    (lambda q, c, t, n: (q, c[..., :-1], t, n), "kv_cache must have shape"),
    (lambda q, c, t, n: (q, c.double(), t, n), "kv_cache must be float32"),
    (lambda q, c, t, n: (q, c, t.long(), n), "block_table must be int32"),
    (lambda q, c, t, n: (q, c, t, n[:1]), "cache_seqlens must have shape"),
    (lambda q, c, t, n: (q, c, t, n + 10_000), "cache_seqlens must lie in"),
])
def test_bad_decode_inputs_are_named(bad, message):
    pytest.importorskip("triton")
    from dsc import ops

    g = torch.Generator().manual_seed(3)
    lens = torch.tensor([3, 4], dtype=torch.int32)
    q, cache, table = paged_case(g, 2, 1, 8, 24, 16, lens, torch.float32)
    with pytest.raises(InputError, match=message):
        ops.mla_decode(*bad(q, cache, table, lens + 1), 0.2, 16)


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
@given(seed=seeds, batch=st.integers(1, 2), tokens=st.integers(1, 40), heads=st.sampled_from([1, 2, 3]),
       shared_kv=st.booleans(), dk=st.sampled_from([8, 24, 40]), dv=st.sampled_from([8, 16, 20]),
       dtype=st.sampled_from([torch.float32, torch.bfloat16]), data=st.data())
def test_dense_attention_matches_the_ir_attention(backend, seed, batch, tokens, heads, shared_kv, dk, dv, dtype, data):
    """The naive branch's causal attention: ragged rows, K/V strided views, one shared KV head or one per head."""
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor(data.draw(st.lists(st.integers(0, 50), min_size=batch, max_size=batch)), dtype=torch.int32)
    s = int(lens.max()) + tokens + data.draw(st.integers(0, 9))
    hk = 1 if shared_kv else heads
    q, k, v = dense_case(g, lens, tokens, s, heads, hk, dk, dv, dtype)
    dt = "f32" if dtype == torch.float32 else "bf16"
    want = interpret(dense_ir_attention(dk, dv, heads, hk, dt), {"q": q, "k": k, "v": v, "cache_seqlens": lens},
                     {})["out"]
    out, lse = backend_kernels(backend).attention(q, k, v, lens, 0.25, len_offset=tokens)
    assert_close(out.float(), want.float(), F32_TOL if dtype == torch.float32 else BF16_TOL,
                 f"dense attention on {backend}")
    assert_close(lse, dense_lse(q, k, lens, 0.25), 1e-5 if dtype == torch.float32 else 1e-3, f"lse on {backend}")
