"""vLLM's routing acceptance tests (tests/kernels/moe/test_grouped_topk.py and the
fused_topk checks of test_moe.py), ported to dsc.compat.vllm: their grid (tokens 1, 33,
64; 16 experts in 8 groups of which 2 are kept; top-2; renormalize on and off; softmax
and sigmoid; routed_scaling_factor 1 and 2.5; bf16, fp16 and fp32 logits; with and
without the correction bias; logits without ties), their reference (vLLM's torch grouped_topk and softmax
top-k, restated here from their semantics), their criterion (the same ids, weights
within atol 2e-2 once both are put in id order), and vLLM's return dtypes."""

import pytest
import torch

from dsc.compat.vllm import fused_topk, grouped_topk
from dsc.errors import InputError
from util import COMPILED_BACKENDS, distinct_logits


def reference_grouped_topk(gating, topk, renormalize, n_group, topk_group, scoring, scale, bias):
    """vLLM's torch grouped_topk."""
    scores = torch.softmax(gating.float(), -1) if scoring == "softmax" else gating.float().sigmoid()
    n = scores.shape[0]
    chosen = scores if bias is None else scores + bias[None]
    groups = chosen.view(n, n_group, -1)
    group_scores = groups.max(-1).values if bias is None else groups.topk(2, -1)[0].sum(-1)
    keep = torch.zeros_like(group_scores).scatter_(1, group_scores.topk(topk_group, -1)[1], 1)
    mask = keep[..., None].expand_as(groups).reshape(n, -1).bool()
    ids = chosen.masked_fill(~mask, float("-inf")).topk(topk, -1)[1]
    weights = scores.gather(1, ids)
    if renormalize:
        weights = weights / weights.sum(-1, keepdim=True)
    return weights * scale, ids.to(torch.int32)


def in_id_order(weights, ids):
    order = ids.long().argsort(-1)
    return weights.gather(1, order), ids.gather(1, order)


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
@pytest.mark.parametrize("tokens", [1, 33, 64])
@pytest.mark.parametrize("renormalize", [True, False])
@pytest.mark.parametrize("scoring, scale", [("softmax", 1.0), ("sigmoid", 2.5)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("biased", [False, True])
def test_grouped_topk_matches_vllm(backend, tokens, renormalize, scoring, scale, dtype, biased):
    g = torch.Generator().manual_seed(tokens + 7 * biased)
    hidden = torch.randn(tokens, 1024, generator=g).to(dtype)
    gating = distinct_logits(g, tokens, 16).to(dtype)
    bias = torch.randn(16, generator=g) if biased else None
    weights, ids = grouped_topk(hidden, gating, 2, renormalize, num_expert_group=8, topk_group=2,
                                scoring_func=scoring, routed_scaling_factor=scale, e_score_correction_bias=bias,
                                backend=backend)
    assert weights.dtype == torch.float32 and ids.dtype == torch.int32 and ids.shape == (tokens, 2)
    want_w, want_ids = reference_grouped_topk(gating, 2, renormalize, 8, 2, scoring, scale, bias)
    got_w, got_ids = in_id_order(weights, ids)
    want_w, want_ids = in_id_order(want_w, want_ids)
    assert torch.equal(got_ids, want_ids)
    torch.testing.assert_close(got_w, want_w, atol=2e-2, rtol=0)


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
@pytest.mark.parametrize("topk, renormalize", [(1, True), (2, False), (6, True)])
def test_fused_topk_matches_vllm(backend, topk, renormalize):
    """Softmax top-k; renormalize gives top_k = 1 a weight of one, as vLLM's does; the third
    output is vLLM's token_expert_indices (k * tokens + token)."""
    g = torch.Generator().manual_seed(topk)
    hidden = torch.randn(33, 64, generator=g).to(torch.bfloat16)
    gating = distinct_logits(g, 33, 64).to(torch.bfloat16)
    weights, ids, order = fused_topk(hidden, gating, topk, renormalize, backend=backend)
    want_w, want_ids = torch.softmax(gating.float(), -1).topk(topk, -1)
    if renormalize:
        want_w = want_w / want_w.sum(-1, keepdim=True)
    got_w, got_ids = in_id_order(weights, ids)
    want_w, want_ids = in_id_order(want_w, want_ids.to(torch.int32))
    assert ids.dtype == torch.int32 and torch.equal(got_ids, want_ids)
    torch.testing.assert_close(got_w, want_w, atol=2e-2, rtol=0)
    assert torch.equal(order, torch.arange(topk, dtype=torch.int32)[None] * 33 + torch.arange(33)[:, None])
    assert fused_topk(hidden, gating, topk, renormalize, indices_type=torch.int64, backend=backend)[1].dtype \
        == torch.int64


@pytest.mark.parametrize("kwargs, message", [
    ({"num_expert_group": 3}, "num_expert_group must divide num_experts \\(16\\), got 3"),
    ({"num_expert_group": 0}, "num_expert_group must be at least 1, got 0"),
    ({"topk_group": 9}, "topk_group must not exceed num_expert_group \\(8\\)"),
    ({"scoring_func": "sqrtsoftplus"}, "scoring_func must be one of softmax, sigmoid"),
    ({"e_score_correction_bias": torch.zeros(8)}, "e_score_correction_bias must be \\[16\\]"),
])
def test_routing_vllm_accepts_but_dsc_cannot_serve_is_named(kwargs, message):
    hidden, gating = torch.randn(4, 8), torch.randn(4, 16)
    args = {"num_expert_group": 8, "topk_group": 2, **kwargs}
    with pytest.raises(InputError, match=message):
        grouped_topk(hidden, gating, 2, True, **args)
