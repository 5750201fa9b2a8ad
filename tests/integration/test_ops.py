"""dsc's torch custom ops: each passes torch.library.opcheck (schema, fake tensor, AOT
dispatch) and computes what an independent plain-PyTorch implementation computes on
drawn shapes and weights; bad tensors raise InputError naming the argument."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import dsc.ops as ops
from dsc import Config
from dsc.eager.moe import _gate, gate_from_logits
from dsc.errors import InputError
from strategies import SOME, LAYOUTS, as_layout, configs, layouts, poison, poisoned_rows, seeds
from util import BF16_TOL, COMPILED_BACKENDS, F32_TOL, assert_close

pytest.importorskip("triton")
# opcheck's schema test compares inputs before and after with torch.allclose, which
# torch has no CPU kernel for on float8_e4m3fn: ops taking FP8 tensors run the other
# three tests there, and test_fp8_inputs_are_left_unchanged checks the schema's promise.
NO_SCHEMA = ("test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
ALL_TESTS = ("test_schema", *NO_SCHEMA)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def decode_case(g, batch=2, tokens=1, heads=4, dk=24, page=16, pages=4, lens=(5, 20), dtype=torch.float32):
    q = torch.randn(batch, tokens, heads, dk, generator=g).to(dtype)
    cache = torch.randn(batch * pages, page, dk, generator=g).to(dtype)
    perm = torch.randperm(batch * pages, generator=g).to(torch.int32)  # pages out of order
    return q, cache, perm.view(batch, pages), torch.tensor(lens, dtype=torch.int32)


def prefill_case(g, batch=2, tokens=3, heads=4, keys=9, hk=1, dk=24, dv=16, lens=(4, 9), dtype=torch.float32):
    q = torch.randn(batch, tokens, heads, dk, generator=g).to(dtype)
    k = torch.randn(batch, keys, hk, dk, generator=g).to(dtype)
    v = torch.randn(batch, keys, hk, dv, generator=g).to(dtype)
    return q, k, v, torch.tensor(lens, dtype=torch.int32)


def moe_case(g, tokens=5, hidden=16, inter=12, experts=8, top_k=2, dtype=torch.float32):
    x = torch.randn(tokens, hidden, generator=g).to(dtype)
    w13 = (torch.randn(experts, 2 * inter, hidden, generator=g) / math.sqrt(hidden)).to(dtype)
    w2 = (torch.randn(experts, hidden, inter, generator=g) / math.sqrt(inter)).to(dtype)
    ids = torch.stack([torch.randperm(experts, generator=g)[:top_k] for _ in range(tokens)])
    w = torch.rand(tokens, top_k, generator=g) + 0.1
    return x, w13, w2, w, ids


def opcheck_cases():
    g = _gen(0)
    wq, ws = ops.fp8_quant(torch.randn(24, 40, generator=g), 16, 16)
    x, w13, w2, w, ids = moe_case(g)
    w13q, s13 = ops.fp8_quant(w13, 16, 16)
    w2q, s2 = ops.fp8_quant(w2, 16, 16)
    return {
        "mla_decode": (ops.mla_decode, (*decode_case(g), 0.3, 16), {}, ALL_TESTS),
        "mla_decode_mtp": (ops.mla_decode, (*decode_case(g, tokens=2), 0.3, 16), {"num_splits": 3}, ALL_TESTS),
        "mla_prefill": (ops.mla_prefill, (*prefill_case(g), 0.2), {}, ALL_TESTS),
        "moe_route": (ops.moe_route, (torch.randn(5, 8, generator=g), torch.randn(8, generator=g), 2),
                      {"n_group": 4, "topk_group": 2, "topk_method": "noaux_tc", "scoring_func": "sigmoid",
                       "norm_topk_prob": True, "routed_scaling_factor": 2.5}, ALL_TESTS),
        "fused_moe": (ops.fused_moe, (x, w13, w2, w, ids), {}, ALL_TESTS),
        "fused_moe_fp8": (ops.fused_moe, (x, w13q, w2q, w, ids, s13, s2, 16), {"act_quant": True}, NO_SCHEMA),
        "fp8_quant": (ops.fp8_quant, (torch.randn(3, 40, 70, generator=g), 32, 32), {}, ALL_TESTS),
        "fp8_gemm": (ops.fp8_gemm, (torch.randn(3, 40, generator=g), wq, ws), {"block_size": 16}, NO_SCHEMA),
        # the same contracts through the tvm backend's kernels
        "mla_decode_tvm": (ops.mla_decode, (*decode_case(g, tokens=2), 0.3, 16), {"causal": False, "backend": "tvm"},
                           ALL_TESTS),
        "mla_prefill_tvm": (ops.mla_prefill, (*prefill_case(g), 0.2), {"backend": "tvm"}, ALL_TESTS),
        "fp8_gemm_tvm": (ops.fp8_gemm, (torch.randn(3, 40, generator=g), wq, ws), {"block_size": 16, "backend": "tvm"},
                         NO_SCHEMA),
    }


@pytest.mark.parametrize("case", list(opcheck_cases()))
def test_opcheck(case):
    if case.endswith("_tvm"):
        pytest.importorskip("tvm")
    op, args, kwargs, tests = opcheck_cases()[case]
    result = torch.library.opcheck(op, args, kwargs, test_utils=tests)
    assert result == {t: "SUCCESS" for t in tests}


def test_every_op_is_registered_under_dsc():
    for name in ("mla_decode", "mla_prefill", "moe_route", "fused_moe", "fp8_quant", "fp8_gemm"):
        assert getattr(torch.ops.dsc, name).default._schema.name == f"dsc::{name}"


def test_fp8_inputs_are_left_unchanged():
    """What opcheck's schema test would check, for the ops it cannot check on FP8."""
    for case in ("fused_moe_fp8", "fp8_gemm", "fp8_gemm_tvm"):
        if case.endswith("_tvm"):
            pytest.importorskip("tvm")
        op, args, kwargs, _ = opcheck_cases()[case]
        before = [a.view(torch.uint8).clone() if a.dtype == ops.E4M3 else a.clone() for a in args
                  if isinstance(a, torch.Tensor)]
        out = op(*args, **kwargs)
        after = [a.view(torch.uint8) if a.dtype == ops.E4M3 else a for a in args if isinstance(a, torch.Tensor)]
        assert all(torch.equal(b, a) for b, a in zip(before, after)), case
        assert all(out.untyped_storage().data_ptr() != a.untyped_storage().data_ptr() for a in after)


# -- numerics against plain PyTorch -----------------------------------------------------------------

def plain_attention(q, k, v, lens, scale, causal=True):
    """q [B, T, H, D]; k [B, S, H or 1, D]; v [B, S, H or 1, Dv]; row b holds lens[b] keys,
    its T queries last. -> (out [B, T, H, Dv], lse [B, H, T])."""
    B, T, H, _ = q.shape
    k, v = (x.expand(-1, -1, H, -1).float() for x in (k, v))
    s = torch.einsum("bthd,bshd->bhts", q.float(), k) * scale
    j = torch.arange(k.shape[1])[None, None, None, :]
    last = (lens.long() - T)[:, None, None, None] + torch.arange(T)[None, None, :, None]
    allowed = (j < lens.long()[:, None, None, None]) & ((j <= last) if causal else True)
    s = s.masked_fill(~allowed, float("-inf"))
    out = torch.einsum("bhts,bshd->bthd", s.softmax(-1), v)
    return out, s.logsumexp(-1)


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
@given(seed=seeds, batch=st.integers(1, 3), tokens=st.integers(1, 2), heads=st.sampled_from([1, 4, 16]),
       page=st.sampled_from([1, 16, 64]), causal=st.booleans(), dtype=st.sampled_from([torch.float32, torch.bfloat16]),
       data=st.data())
def test_mla_decode_matches_plain_attention(backend, seed, batch, tokens, heads, page, causal, dtype, data):
    g = _gen(seed)
    dv, dk = 16, 24
    pages = -(-70 // page)
    # rows of length 0 (idle slots of a serving batch) beside rows holding their queries and more
    lens = data.draw(st.lists(st.one_of(st.just(0), st.integers(tokens, pages * page)), min_size=batch,
                              max_size=batch).filter(any))
    q, cache, table, lens = decode_case(g, batch, tokens, heads, dk, page, pages, lens, dtype)
    out, lse = torch.ops.dsc.mla_decode(q, cache, table, lens, 0.25, dv, causal, backend=backend)
    rows = cache[table.long()].reshape(batch, -1, 1, dk)
    ref, ref_lse = plain_attention(q, rows, rows[..., :dv], lens, 0.25, causal)
    tol = F32_TOL if dtype == torch.float32 else BF16_TOL
    assert out.dtype == dtype
    held = lens > 0
    # FlashMLA's answer for an empty row: out 0, lse +inf
    assert bool((out[~held] == 0).all()) and bool(torch.isposinf(lse[~held]).all())
    assert_close(out[held].float(), ref[held], tol, f"mla_decode out on {backend}")
    assert_close(lse[held], ref_lse[held], 1e-5 if dtype == torch.float32 else 1e-3, f"mla_decode lse on {backend}")


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
@given(seed=seeds, batch=st.integers(1, 3), tokens=st.integers(1, 5), heads=st.sampled_from([1, 3]),
       hk=st.sampled_from([1, "H"]), dtype=st.sampled_from([torch.float32, torch.bfloat16]), data=st.data())
def test_mla_prefill_matches_plain_attention(backend, seed, batch, tokens, heads, hk, dtype, data):
    g = _gen(seed)
    keys = 12
    lens = data.draw(st.lists(st.integers(tokens, keys), min_size=batch, max_size=batch))
    q, k, v, lens = prefill_case(g, batch, tokens, heads, keys, heads if hk == "H" else 1, 20, 12, lens, dtype)
    out, lse = torch.ops.dsc.mla_prefill(q, k, v, lens, 0.3, backend=backend)
    ref, ref_lse = plain_attention(q, k, v, lens, 0.3)
    assert_close(out.float(), ref, F32_TOL if dtype == torch.float32 else BF16_TOL, f"mla_prefill out on {backend}")
    assert_close(lse, ref_lse, 1e-5 if dtype == torch.float32 else 1e-3, f"mla_prefill lse on {backend}")


def check_route_against_deepseeks_gate(cfg, seed, tokens, backend="triton"):
    g = _gen(seed)
    x = torch.randn(tokens, cfg.hidden_size, generator=g)
    w = {"gate.weight": torch.randn(cfg.n_routed_experts, cfg.hidden_size, generator=g)}
    bias = None
    if cfg.topk_method == "noaux_tc":
        bias = w["gate.e_score_correction_bias"] = torch.randn(cfg.n_routed_experts, generator=g) * 0.1
    ref_ids, ref_w = _gate(cfg, w, x)
    ids, weights = ops.moe_route(x @ w["gate.weight"].T, bias, cfg.num_experts_per_tok, cfg.n_group,
                                 cfg.topk_group, cfg.topk_method, cfg.scoring_func, cfg.norm_topk_prob,
                                 cfg.routed_scaling_factor, backend=backend)
    assert ids.dtype == torch.int64 and weights.dtype == torch.float32
    order, ref_order = ids.argsort(-1), ref_ids.argsort(-1)
    assert torch.equal(ids.gather(1, order), ref_ids.gather(1, ref_order))
    assert_close(weights.gather(1, order), ref_w.gather(1, ref_order), F32_TOL, f"routing weights on {backend}")


@SOME
@given(cfg=configs(), seed=seeds, tokens=st.integers(1, 9))
def test_moe_route_matches_deepseeks_gate(cfg, seed, tokens):
    check_route_against_deepseeks_gate(cfg, seed, tokens)


@SOME
@given(cfg=configs(), seed=seeds, tokens=st.integers(2, 9), data=st.data())
def test_moe_route_keeps_k_distinct_experts_and_finite_weights_on_non_finite_logits(cfg, seed, tokens, data):
    """vLLM's rule: non-finite scores count as 0 before selection. Every row still gets
    top_k distinct in-range experts with finite weights, the rule matches DeepSeek's gate
    with it applied (dsc.eager), and clean rows route exactly as they would alone."""
    g = _gen(seed)
    E, k = cfg.n_routed_experts, cfg.num_experts_per_tok
    x = torch.randn(tokens, cfg.hidden_size, generator=g)
    w = {"gate.weight": torch.randn(E, cfg.hidden_size, generator=g)}
    bias = None
    if cfg.topk_method == "noaux_tc":
        bias = w["gate.e_score_correction_bias"] = torch.randn(E, generator=g) * 0.1
    clean = x @ w["gate.weight"].T
    bad = data.draw(poisoned_rows(tokens, E))
    logits = poison(clean, bad)
    args = (k, cfg.n_group, cfg.topk_group, cfg.topk_method, cfg.scoring_func, cfg.norm_topk_prob,
            cfg.routed_scaling_factor)
    ids, weights = ops.moe_route(logits, bias, *args)
    assert bool(((ids >= 0) & (ids < E)).all()) and bool(torch.isfinite(weights).all())
    assert all(len(set(row)) == k for row in ids.tolist()), ids
    ref_ids, ref_w = ops.moe_route(clean, bias, *args)
    kept = [r for r in range(tokens) if r not in bad]
    assert torch.equal(ids[kept], ref_ids[kept]) and torch.equal(weights[kept], ref_w[kept])
    # the same rule in DeepSeek's gate gives the same weights (ids may differ among tied zeroed scores)
    _, eager_w = gate_from_logits(cfg, logits, bias)
    assert_close(weights.sort(-1).values, eager_w.sort(-1).values, F32_TOL, "weights beside DeepSeek's gate")


def plain_experts(x, w13, w2, w, ids):
    inter = w13.shape[1] // 2
    out = torch.zeros(x.shape, dtype=torch.float32)
    for t in range(x.shape[0]):
        for k in range(ids.shape[1]):
            e = int(ids[t, k])
            h = F.silu(x[t].float() @ w13[e, :inter].float().T) * (x[t].float() @ w13[e, inter:].float().T)
            out[t] += w[t, k] * (h @ w2[e].float().T)
    return out


@given(seed=seeds, tokens=st.integers(1, 20), experts=st.integers(1, 9), data=st.data(),
       dtype=st.sampled_from([torch.float32, torch.bfloat16]), id_dtype=st.sampled_from([torch.int32, torch.int64]),
       layout=st.tuples(layouts, layouts, layouts))
def test_fused_moe_matches_a_loop_over_experts(seed, tokens, experts, data, dtype, id_dtype, layout):
    top_k = data.draw(st.integers(1, experts))
    x, w13, w2, w, ids = moe_case(_gen(seed), tokens, 16, 8, experts, top_k, dtype)
    x, w13, w2 = (as_layout(t, lay) for t, lay in zip((x, w13, w2), layout))
    out = torch.ops.dsc.fused_moe(x, w13, w2, w, ids.to(id_dtype))
    assert out.dtype == dtype
    assert_close(out.float(), plain_experts(x, w13, w2, w, ids), F32_TOL if dtype == torch.float32 else BF16_TOL,
                 "fused_moe")


def dequant(q, s, bn, bk):
    full = s.repeat_interleave(bn, -2)[..., :q.shape[-2], :].repeat_interleave(bk, -1)[..., :q.shape[-1]]
    return q.float() * full


@given(seed=seeds, shape=st.sampled_from([(5, 7), (40, 70), (2, 33, 130)]),
       block=st.sampled_from([(1, 128), (16, 16), (128, 128)]))
def test_fp8_quant_round_trips_within_e4m3_precision(seed, shape, block):
    x = torch.randn(shape, generator=_gen(seed)) * 3
    q, s = ops.fp8_quant(x, *block)
    assert q.dtype == ops.E4M3 and s.shape == (*shape[:-2], -(-shape[-2] // block[0]), -(-shape[-1] // block[1]))
    back = dequant(q, s, *block)
    # each element within half an e4m3 ulp (2^-4 relative) of itself, and each tile's
    # largest magnitude mapped onto 448
    assert bool(((back - x).abs() <= x.abs() * 2 ** -4 + s.max() * 2 ** -9).all())
    assert torch.allclose(back.abs().amax(), x.abs().amax())


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
@given(seed=seeds, m=st.integers(1, 9), act_quant=st.booleans(), block=st.sampled_from([16, 32]),
       dtype=st.sampled_from([torch.float32, torch.bfloat16]))
def test_fp8_gemm_matches_dequantized_linear(backend, seed, m, act_quant, block, dtype):
    g = _gen(seed)
    x = torch.randn(2, m, 40, generator=g).to(dtype)
    wq, ws = ops.fp8_quant(torch.randn(24, 40, generator=g), block, block)
    out = ops.fp8_gemm(x, wq, ws, act_quant, block, backend=backend)
    xs = x.float()
    if act_quant:  # activations per token per block, as the kernel's prologue does
        xq, xscale = ops.fp8_quant(x.reshape(-1, 40), 1, block)
        xs = dequant(xq, xscale, 1, block).reshape(x.shape)
    ref = xs @ dequant(wq, ws, block, block).T
    # under the interpreter the prologue's FP8 rounding is our own (NOTES.md); bf16 out
    tol = (2e-2 if act_quant else F32_TOL) if dtype == torch.float32 else BF16_TOL
    assert out.shape == (2, m, 24) and out.dtype == dtype
    assert_close(out.float(), ref, tol, f"fp8_gemm on {backend}")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_fused_moe_fp8_matches_dequantized_experts(layout):
    x, w13, w2, w, ids = moe_case(_gen(4), tokens=7)
    w13q, s13 = ops.fp8_quant(w13, 16, 16)
    w2q, s2 = ops.fp8_quant(w2, 16, 16)
    ref = plain_experts(x, dequant(w13q, s13, 16, 16), dequant(w2q, s2, 16, 16), w, ids)
    w13q, w2q, s13, s2 = (as_layout(t, layout) for t in (w13q, w2q, s13, s2))  # strided FP8 experts too
    out = ops.fused_moe(x, w13q, w2q, w, ids, s13, s2, 16, act_quant=False)
    assert_close(out, ref, 1e-4, "weight-only fp8 fused_moe")


# -- bad input ----------------------------------------------------------------------------------

def _meta(t):
    return t.to("meta")


BAD = {
    "mla_decode": [
        (lambda q, c, t, n: (q[0], c, t, n, 0.3, 16), "q must have 4 dims"),
        (lambda q, c, t, n: (q, c[..., :-1], t, n, 0.3, 16), r"kv_cache must have shape \[\*, \*, 24\]"),
        (lambda q, c, t, n: (q, c.double(), t, n, 0.3, 16), "kv_cache must be float32, got float64"),
        (lambda q, c, t, n: (q, _meta(c), t, n, 0.3, 16), "kv_cache must be on cpu"),
        (lambda q, c, t, n: (q, c, t.long(), n, 0.3, 16), "block_table must be int32"),
        (lambda q, c, t, n: (q, c, t, n[:1], 0.3, 16), r"cache_seqlens must have shape \[2\]"),
        (lambda q, c, t, n: (q, c, t, n + 10_000, 0.3, 16), "cache_seqlens must lie in"),
        (lambda q, c, t, n: (q, c, t, n, 0.3, 25), "head_dim_v must be in 1..24"),
        (lambda q, c, t, n: (q, c, t, n - 100, 0.3, 16), "cache_seqlens must lie in"),
        # row 1 (20 tokens in 16-token pages) uses entries 0 and 1 of its block table; the pool has 8 pages
        *[(lambda q, c, t, n, page=page: (q, c, _with(t, (1, 1), page), n, 0.3, 16),
           rf"block_table\[1, 1\] = {page} names no page: the pool holds pages 0..7") for page in (8, -1, 10 ** 6)],
    ],
    "mla_prefill": [
        (lambda q, k, v, n: (q.half(), k, v, n, 0.2), "k must be float16"),
        (lambda q, k, v, n: (q, k[:, :, :, :-1], v, n, 0.2), "k must have shape"),
        (lambda q, k, v, n: (q, k, v[:, :3], n, 0.2), "v must have shape"),
        (lambda q, k, v, n: (q, k, v, n + 50, 0.2), "seqlens must lie in"),
    ],
}


def _with(t, index, value):
    t = t.clone()
    t[index] = value
    return t


@pytest.mark.parametrize("bad, message", BAD["mla_decode"])
def test_mla_decode_names_bad_arguments(bad, message):
    args = decode_case(_gen(3))
    with pytest.raises(InputError, match=message):
        ops.mla_decode(*bad(*args))


def test_mla_decode_ignores_block_table_entries_no_row_uses():
    """Serving frameworks pad block tables (with -1 or stale pages) past each row's length."""
    q, cache, table, lens = decode_case(_gen(3))
    want = ops.mla_decode(q, cache, table, lens, 0.3, 16)
    padded = _with(_with(table, (0, slice(1, None)), -1), (1, 3), 10 ** 6)  # row 0 uses 1 entry, row 1 uses 2
    got = ops.mla_decode(q, cache, padded, lens, 0.3, 16)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.parametrize("bad, message", BAD["mla_prefill"])
def test_mla_prefill_names_bad_arguments(bad, message):
    args = prefill_case(_gen(3))
    with pytest.raises(InputError, match=message):
        ops.mla_prefill(*bad(*args))


def test_moe_and_fp8_ops_name_bad_arguments():
    g = _gen(5)
    x, w13, w2, w, ids = moe_case(g)
    cases = [
        (lambda: ops.moe_route(torch.randn(5, 8).half(), None, 2), "router_logits must be float32"),
        (lambda: ops.moe_route(torch.randn(5, 8), torch.randn(7), 2, topk_method="noaux_tc"),
         r"e_score_correction_bias must have shape \[8\]"),
        (lambda: ops.moe_route(torch.randn(5, 8), None, 2, topk_method="noaux_tc"), "needed by noaux_tc"),
        (lambda: ops.moe_route(torch.randn(5, 8), None, 9), r"top_k: must not exceed experts \(8\)"),
        (lambda: ops.moe_route(torch.randn(5, 8), None, 2, scoring_func="relu"), "scoring_func"),
        (lambda: ops.moe_route(torch.randn(5, 8), torch.randn(8), 2, n_group=8, topk_group=2,
                               topk_method="noaux_tc"), "at least 2 experts per group"),
        (lambda: ops.fused_moe(x, w13, w2, w, ids.masked_fill(ids == ids[0, 0], -1)), r"topk_ids must lie in \[0, 7\]"),
        (lambda: ops.fused_moe(x, w13, w2, w, ids + 8), r"topk_ids must lie in \[0, 7\]"),
        (lambda: ops.fused_moe(x, *ops.fp8_quant(w13, 24, 24)[:1], *ops.fp8_quant(w2, 24, 24)[:1], w, ids,
                               ops.fp8_quant(w13, 24, 24)[1], ops.fp8_quant(w2, 24, 24)[1], 24),
         "block_size must be a power of two"),
        (lambda: ops.fp8_gemm(torch.randn(3, 40), *ops.fp8_quant(torch.randn(24, 40), 8, 8), block_size=8),
         "block_size must be a power of two >= 16"),
        (lambda: ops.fused_moe(x, w13[:, :-1], w2, w, ids), "w13 must have shape"),
        (lambda: ops.fused_moe(x, w13, w2.half(), w, ids), "w2 must be float32"),
        (lambda: ops.fused_moe(x, w13, w2, w.double(), ids), "topk_weights must be float32"),
        (lambda: ops.fused_moe(x, w13, w2, w, ids.float()), "topk_ids must be int32 or int64"),
        (lambda: ops.fused_moe(x, w13, _meta(w2), w, ids), "w2 must be on cpu"),
        (lambda: ops.fused_moe(x, w13.to(ops.E4M3), w2.to(ops.E4M3), w, ids, None, torch.ones(8, 1, 1)),
         "need both w13_scale and w2_scale"),
        (lambda: ops.fp8_quant(torch.randn(4), 1, 128), "at least 2 dims"),
        (lambda: ops.fp8_gemm(torch.randn(3, 40), torch.randn(24, 40), torch.ones(1, 1)), "weight must be float8"),
        (lambda: ops.fp8_gemm(torch.randn(3, 41), *ops.fp8_quant(torch.randn(24, 40))), "in features 40"),
        (lambda: ops.fp8_gemm(torch.randn(3, 40), ops.fp8_quant(torch.randn(24, 40))[0], torch.ones(2, 2)),
         r"weight_scale must have shape \[1, 1\]"),
    ]
    for call, message in cases:
        with pytest.raises(InputError, match=message):
            call()


# -- the same ops on the tvm backend (through the lowering's kernel convention) ------------------

@pytest.mark.parametrize("layout", LAYOUTS)
def test_fused_moe_on_tvm_matches_a_loop_over_experts_and_triton(layout):
    pytest.importorskip("tvm")
    x, w13, w2, w, ids = moe_case(_gen(5), tokens=9, experts=6, top_k=2)
    x, w13, w2 = (as_layout(t, layout) for t in (x, w13, w2))
    out = ops.fused_moe(x, w13, w2, w, ids, backend="tvm")
    assert_close(out, plain_experts(x, w13, w2, w, ids), F32_TOL, "fused_moe on tvm")
    assert_close(out, ops.fused_moe(x, w13, w2, w, ids), F32_TOL, "fused_moe tvm vs triton")


def test_fused_moe_fp8_on_tvm_matches_dequantized_experts():
    pytest.importorskip("tvm")
    x, w13, w2, w, ids = moe_case(_gen(4), tokens=7)
    w13q, s13 = ops.fp8_quant(w13, 16, 16)
    w2q, s2 = ops.fp8_quant(w2, 16, 16)
    ref = plain_experts(x, dequant(w13q, s13, 16, 16), dequant(w2q, s2, 16, 16), w, ids)
    out = ops.fused_moe(x, w13q, w2q, w, ids, s13, s2, 16, act_quant=False, backend="tvm")
    assert_close(out, ref, 1e-4, "weight-only fp8 fused_moe on tvm")


@pytest.mark.parametrize("name", ["tiny-v2", "tiny-v3"])
def test_moe_route_on_tvm_matches_deepseeks_gate(name):
    pytest.importorskip("tvm")
    check_route_against_deepseeks_gate(Config.preset(name), seed=3, tokens=6, backend="tvm")


def test_ops_name_an_unknown_backend():
    x, w13, w2, w, ids = moe_case(_gen(1))
    with pytest.raises(InputError, match="dsc.ops.fused_moe: backend must be one of triton, tvm, got 'cuda'"):
        ops.fused_moe(x, w13, w2, w, ids, backend="cuda")
    with pytest.raises(InputError, match="dsc.ops.moe_route: backend must be one of triton, tvm, got 'cuda'"):
        ops.moe_route(torch.randn(5, 8), None, 2, backend="cuda")
    g = _gen(2)
    with pytest.raises(InputError, match="dsc.ops.mla_decode: backend must be one of triton, tvm, got 'cuda'"):
        ops.mla_decode(*decode_case(g), 0.3, 16, backend="cuda")
    with pytest.raises(InputError, match="dsc.ops.mla_prefill: backend must be one of triton, tvm, got 'cuda'"):
        ops.mla_prefill(*prefill_case(g), 0.2, backend="cuda")
    wq, ws = ops.fp8_quant(torch.randn(24, 40, generator=g), 16, 16)
    with pytest.raises(InputError, match="dsc.ops.fp8_gemm: backend must be one of triton, tvm, got 'cuda'"):
        ops.fp8_gemm(torch.randn(3, 40), wq, ws, block_size=16, backend="cuda")
