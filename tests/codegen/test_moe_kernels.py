"""The fused-MoE kernel groups (router, alignment, grouped GEMMs, combine) of both
compiled backends against the IR's reference ops, on drawn shapes and routings, edge
cases included: one token, an expert with no tokens, every token on one expert, lengths
not a multiple of the block."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from dsc.codegen.groups.router import RouterSpec
from dsc.ir.opdef import get_op
from strategies import configs, seeds
from backend_kernels import backend_kernels
from util import BF16_TOL, COMPILED_BACKENDS, F32_TOL, assert_close


def ref(op, *args, **attrs):
    opdef = get_op(op)
    return opdef.reference(list(args), opdef.check_attrs(attrs))


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
@given(cfg=configs(), seed=seeds, tokens=st.integers(1, 40), extra=st.integers(0, 2))
def test_router_matches_the_reference_chain(backend, cfg, seed, tokens, extra):
    g = torch.Generator().manual_seed(seed)
    e = cfg.n_routed_experts
    logits = torch.randn(tokens, e, generator=g) * 3
    bias = 0.1 * torch.randn(e, generator=g) if cfg.topk_method == "noaux_tc" else None
    spec = RouterSpec(func=cfg.scoring_func, method=cfg.topk_method, top_k=cfg.num_experts_per_tok,
                             n_group=cfg.n_group, topk_group=cfg.topk_group, normalize=cfg.norm_topk_prob,
                             eps=1e-20, scale=cfg.routed_scaling_factor, extra=extra, extra_start=e, extra_w=1.0)
    ids, w = backend_kernels(backend).route(logits, bias, spec)

    scores = ref("router_scores", logits, func=cfg.scoring_func)
    sel = ref("select_experts", scores, *([bias] if bias is not None else []), method=cfg.topk_method,
              top_k=cfg.num_experts_per_tok, n_group=cfg.n_group, topk_group=cfg.topk_group)
    weights = ref("gather", scores, sel)
    if cfg.norm_topk_prob:
        weights = ref("normalize_sum", weights, eps=1e-20)
    weights = ref("scale", weights, factor=cfg.routed_scaling_factor)
    if extra:
        sel = ref("append_iota", sel, start=e, count=extra)
        weights = ref("append_const", weights, value=1.0, count=extra)
    assert torch.equal(ids, sel), (ids, sel)
    assert_close(w, weights, F32_TOL, "routing weights")


@st.composite
def routings(draw):
    """ids [N, K] with distinct experts per token: random, all on the same experts, or
    leaving experts empty."""
    experts = draw(st.integers(1, 20))
    k = draw(st.integers(1, min(4, experts)))
    n = draw(st.integers(1, 40))
    kind = draw(st.sampled_from(["random", "same", "sparse"]))
    g = torch.Generator().manual_seed(draw(seeds))
    if kind == "same":  # every token on experts 0..k-1 (one expert takes all when k = 1)
        ids = torch.arange(k).repeat(n, 1)
    else:
        pool = experts if kind == "random" else min(experts, k + 1)  # "sparse": most experts get nothing
        ids = torch.stack([torch.randperm(pool, generator=g)[:k] for _ in range(n)])
    return ids.to(torch.int64), experts


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
@given(routing=routings(), block=st.sampled_from([1, 4, 16]))
def test_alignment_is_the_reference_layout(backend, routing, block):
    ids, experts = routing
    got = backend_kernels(backend).align(ids, experts, block)
    assert torch.equal(got, ref("moe_align", ids, experts=experts, block=block))


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
@given(routing=routings(), seed=seeds, hidden=st.sampled_from([8, 24, 64]), inter=st.sampled_from([8, 16, 40]),
       dtype=st.sampled_from([torch.float32, torch.bfloat16]))
def test_grouped_gemms_and_combine_match_the_reference(backend, routing, seed, hidden, inter, dtype):
    ids, experts = routing
    n, k = ids.shape
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, hidden, generator=g).to(dtype)
    w13 = (torch.randn(experts, 2 * inter, hidden, generator=g) / hidden ** 0.5).to(dtype)
    w2 = (torch.randn(experts, hidden, inter, generator=g) / inter ** 0.5).to(dtype)
    route = torch.rand(n, k, generator=g)
    slots = ref("moe_align", ids, experts=experts, block=16)

    h_ref = ref("grouped_gemm", x, slots, ids, w13, gather=True, swiglu=True)
    kernels = backend_kernels(backend)
    h = kernels.grouped_gemm(x, slots, ids, w13, None, block=16, gather=True, swiglu=True)
    tol = F32_TOL if dtype == torch.float32 else BF16_TOL
    assert_close(h.float(), h_ref.float(), tol, "gate+up with SiLU")
    y_ref = ref("grouped_gemm", h_ref, slots, ids, w2, route, gather=False)
    y = kernels.grouped_gemm(h_ref, slots, ids, w2, route, block=16, gather=False, swiglu=False)
    assert y.dtype == dtype == y_ref.dtype  # the model's dtype, as vLLM writes the down projection
    assert_close(y.float(), y_ref.float(), tol, "down with routing weights")
    padding = slots >= n * k
    assert torch.equal(y[padding], torch.zeros_like(y[padding]))  # padding rows are zero
    out = kernels.combine(y_ref, slots, ids, dtype)
    assert_close(out.float(), ref("moe_combine", y_ref, slots, ids, dtype="f32" if dtype == torch.float32
                                  else "bf16").float(), tol, "combine")


@pytest.mark.parametrize("arch", [80, 90])
def test_triton_compiles_for_a100_and_h100(arch):
    """At DeepSeek-V3's sizes (256 routed experts in 8 groups, top-8, one shared)."""
    pytest.importorskip("triton")
    from dsc.codegen.triton import fused_moe, router
    from dsc.codegen.triton.build import compile_all

    spec = RouterSpec("sigmoid", "noaux_tc", 8, 8, 4, True, 1e-20, 2.5, 1, 256, 1.0)
    # the router and the alignment do not depend on the activation dtype
    jobs = fused_moe.signature("bf16") + fused_moe.signature("fp32")[1:] + router.signature(spec, 256, True)
    for (s, _, _), res in zip(jobs, compile_all(jobs, arch)):
        assert f".target sm_{arch}" in res["ptx"] and res["cubin_bytes"] > 0, s.name


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
def test_a_slot_of_no_expert_adds_nothing(backend):
    """Expert parallelism's -1 ids (and ids of experts another rank holds, past E) hold no
    row of the layout: the alignment skips them, the combine adds nothing for them, on
    both backends, against plain PyTorch over the held slots only."""
    from dsc import ops

    g = torch.Generator().manual_seed(8)
    tokens, experts, hidden, inter = 9, 4, 32, 16
    x = torch.randn(tokens, hidden, generator=g)
    w13 = torch.randn(experts, 2 * inter, hidden, generator=g) / hidden ** 0.5
    w2 = torch.randn(experts, hidden, inter, generator=g) / inter ** 0.5
    ids = torch.tensor([[0, -1], [3, 1], [-1, -1], [2, 7], [1, 0], [-1, 2], [3, 3 + 5], [0, 1], [2, -1]])
    w = torch.rand(tokens, 2, generator=g)
    out = ops.fused_moe(x, w13, w2, w, ids, validate=False, backend=backend)
    want = torch.zeros(tokens, hidden)
    for t in range(tokens):
        for j in range(2):
            e = int(ids[t, j])
            if 0 <= e < experts:
                h = torch.nn.functional.silu(x[t] @ w13[e, :inter].T) * (x[t] @ w13[e, inter:].T)
                want[t] += w[t, j] * (h @ w2[e].T)
    assert bool(torch.isfinite(out).all())
    assert_close(out, want, F32_TOL, f"slots of no expert on {backend}")
    assert bool((out[2] == 0).all())  # a token none of whose slots is held
