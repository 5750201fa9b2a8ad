"""vLLM's fused-MoE acceptance tests (tests/kernels/moe/test_moe.py's test_fused_moe, and
test_block_fp8.py's block-scaled FP8 case), ported to dsc.compat.vllm.fused_experts and
sized for the CPU interpreter: their grid (tokens 1/33/64, 8 experts, top-2 and top-6,
expert parallelism over 1 or 2 ranks through expert_map, bf16 and fp16), their reference
(torch_moe: each expert on its tokens, SiLU-and-mul, weighted and summed; the expert map
turning other ranks' experts into -1), and their criteria (atol 2e-2 for bf16/fp16;
mean relative difference under 3% for FP8). Then apply_router_weight_on_input, inplace,
the quant_config form, and what dsc refuses."""

import types

import pytest
import torch

from dsc import ops
from dsc.compat.vllm import fused_experts, fused_topk
from dsc.errors import InputError
from util import COMPILED_BACKENDS, distinct_logits


def quant_rows(x, group=128):
    """vLLM's native_per_token_group_quant_fp8, dequantized: e4m3 per token per group."""
    xf = x.float().view(x.shape[0], -1, group)
    scale = xf.abs().amax(-1, keepdim=True).clamp(min=1e-10) / torch.finfo(torch.float8_e4m3fn).max
    return ((xf / scale).to(torch.float8_e4m3fn).float() * scale).view(x.shape).to(x.dtype)


def torch_moe(a, w1, w2, score, topk, expert_map=None, act_quant=False):
    """vLLM's reference (torch_moe; with act_quant its block-FP8 one's activations,
    quantized per token per 128 before each GEMM, on the dequantized weights)."""
    q = quant_rows if act_quant else (lambda t: t)
    b, d = a.shape
    a = a.view(b, -1, d).repeat(1, topk, 1).reshape(-1, d)
    out = torch.zeros(b * topk, w2.shape[1], dtype=a.dtype)
    weights, ids = torch.topk(torch.softmax(score, dim=-1, dtype=torch.float32), topk)
    weights, ids = weights.view(-1), ids.view(-1)
    if expert_map is not None:
        ids = expert_map[ids]
    for i in range(w1.shape[0]):
        mask = ids == i
        if mask.sum():
            h = q(a[mask]) @ w1[i].transpose(0, 1)
            half = h.shape[-1] // 2
            out[mask] = q(torch.nn.functional.silu(h[..., :half]) * h[..., half:]) @ w2[i].transpose(0, 1)
    return (out.view(b, -1, w2.shape[1]) * weights.view(b, -1, 1).to(out.dtype)).sum(dim=1)


def case(m, e, n, k, dtype, seed, ep_size=1):
    g = torch.Generator().manual_seed(seed)
    a = (torch.randn(m, k, generator=g) / 10).to(dtype)
    w1 = (torch.randn(e, 2 * n, k, generator=g) / 10).to(dtype)
    w2 = (torch.randn(e, k, n, generator=g) / 10).to(dtype)
    score = distinct_logits(g, m, e).to(dtype)  # no ties: both routers pick the same experts
    expert_map = None
    if ep_size > 1:  # this rank holds the experts of a random half, as vLLM's test draws them
        local = e // ep_size
        expert_map = torch.full((e,), -1, dtype=torch.int32)
        held = torch.randperm(e, generator=g)[:local]
        expert_map[held] = torch.arange(local, dtype=torch.int32)
        w1, w2 = w1[held], w2[held]
    return a, w1, w2, score, expert_map


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
@pytest.mark.parametrize("m", [1, 33, 64])
@pytest.mark.parametrize("topk", [2, 6])
@pytest.mark.parametrize("ep_size", [1, 2])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fused_moe_matches_vllm(backend, m, topk, ep_size, dtype):
    e, n, k = 8, 64, 128
    a, w1, w2, score, expert_map = case(m, e, n, k, dtype, seed=m + topk + ep_size, ep_size=ep_size)
    weights, ids, _ = fused_topk(a, score, topk, renormalize=False, backend=backend)
    out = fused_experts(a, w1, w2, weights, ids, global_num_experts=e, expert_map=expert_map, backend=backend)
    want = torch_moe(a, w1, w2, score, topk, expert_map)
    assert out.dtype == dtype and out.shape == a.shape
    torch.testing.assert_close(out, want, atol=2e-2, rtol=0)


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
def test_block_fp8_experts_match_vllm_s_criterion(backend):
    """use_fp8_w8a8 with block_shape [128, 128], weights as DeepSeek ships them (e4m3 and
    block scales): within 3% mean relative difference of vLLM's block-FP8 reference (the
    dequantized weights, activations quantized per token per 128; test_block_fp8's
    criterion)."""
    m, e, n, k, topk = 33, 8, 128, 256, 2
    a, w1, w2, score, _ = case(m, e, n, k, torch.bfloat16, seed=3)
    q1 = [ops.fp8_quant(w, 128, 128) for w in w1.float()]
    q2 = [ops.fp8_quant(w, 128, 128) for w in w2.float()]
    w1q, w1s = torch.stack([q for q, _ in q1]), torch.stack([s for _, s in q1])
    w2q, w2s = torch.stack([q for q, _ in q2]), torch.stack([s for _, s in q2])
    deq1 = (w1q.float() * w1s.repeat_interleave(128, 1).repeat_interleave(128, 2)).to(torch.bfloat16)
    deq2 = (w2q.float() * w2s.repeat_interleave(128, 1).repeat_interleave(128, 2)).to(torch.bfloat16)
    weights, ids, _ = fused_topk(a, score, topk, renormalize=False, backend=backend)
    out = fused_experts(a, w1q, w2q, weights, ids, use_fp8_w8a8=True, w1_scale=w1s, w2_scale=w2s,
                        block_shape=[128, 128], backend=backend)
    want = torch_moe(a, deq1, deq2, score, topk, act_quant=True)
    rel = (out.float() - want.float()).abs().mean() / want.float().abs().mean()
    assert rel < 0.03, rel
    config = types.SimpleNamespace(quant_dtype=torch.float8_e4m3fn, block_shape=[128, 128], w1_scale=w1s,
                                   w2_scale=w2s, a1_scale=None, a2_scale=None)
    again = fused_experts(a, w1q, w2q, weights, ids, quant_config=config, backend=backend)
    assert torch.equal(again, out)  # vLLM's current quant_config form, the same call


def test_router_weight_on_input_and_inplace():
    """apply_router_weight_on_input (top-1: the token scaled before the experts) and
    inplace (the result written into hidden_states and returned)."""
    a, w1, w2, score, _ = case(17, 8, 64, 128, torch.bfloat16, seed=5)
    weights, ids, _ = fused_topk(a, score, 1, renormalize=False)
    out = fused_experts(a, w1, w2, weights, ids, apply_router_weight_on_input=True)
    scaled = (a * weights.to(a.dtype)).to(a.dtype)
    want = fused_experts(scaled, w1, w2, torch.ones_like(weights), ids)
    torch.testing.assert_close(out, want, atol=2e-2, rtol=0)
    x = a.clone()
    same = fused_experts(x, w1, w2, weights, ids, inplace=True)
    assert same is x and torch.equal(x, fused_experts(a, w1, w2, weights, ids))


@pytest.mark.parametrize("kwargs, message", [
    ({"activation": "gelu"}, "activation 'gelu' is not served"),
    ({"use_int8_w8a8": True}, "use_int8_w8a8 is not served"),
    ({"use_fp8_w8a8": True, "w1_scale": torch.ones(8), "w2_scale": torch.ones(8)}, "per-tensor FP8"),
    ({"use_fp8_w8a8": True, "block_shape": [128, 128], "a1_scale": torch.ones(1)}, "a1_scale is not served"),
    ({"apply_router_weight_on_input": True}, "needs top-k 1"),
    ({"expert_map": torch.arange(8, dtype=torch.int32), "global_num_experts": 16}, "expert_map holds 8"),
])
def test_what_dsc_cannot_serve_is_refused_by_name(kwargs, message):
    a, w1, w2, score, _ = case(4, 8, 64, 128, torch.bfloat16, seed=7)
    weights, ids, _ = fused_topk(a, score, 2, renormalize=False)
    with pytest.raises(InputError, match=message):
        fused_experts(a, w1, w2, weights, ids, **kwargs)
