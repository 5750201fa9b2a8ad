"""Triton kernel groups compiled natively on a CUDA device, at DeepSeek-V3 shapes,
against the IR's reference ops (run on the same device)."""

import pytest
import torch

from dsc.config import Config
from dsc.ir import interpret


@pytest.mark.parametrize("page", [1, 16, 64])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_latent_append_at_v3_shapes(page, dtype):
    pytest.importorskip("triton")
    from dsc.executor import make_runner
    from latent_append_reference import latent_case, reference_graph

    cfg = Config.preset("deepseek-v3")
    rank, rope = cfg.kv_lora_rank, cfg.qk_rope_head_dim
    g = torch.Generator(device="cuda").manual_seed(0)
    lens = torch.randint(0, 4000, (64,), generator=g, device="cuda", dtype=torch.int32)
    inputs, params, written = latent_case(g, rank, rope, page, lens, 2, dtype)
    graph = reference_graph(cfg, rank, rope, page, "f32" if dtype == torch.float32 else "bf16")
    cache = inputs["cache"]
    ref = interpret(graph, {**inputs, "cache": cache.clone()}, params)["cache"]
    out = make_runner(graph, "triton")({**inputs, "cache": cache.clone()}, params)["cache"]
    assert torch.equal(out[~written], cache[~written])
    err = float((out.float() - ref.float()).norm() / ref.float().norm())
    assert err < (1e-5 if dtype == torch.float32 else 1e-2), err


@pytest.mark.parametrize("page", [1, 16, 64])
@pytest.mark.parametrize("heads, tokens", [(128, 1), (16, 2), (8, 1)])
def test_mla_decode_at_v3_shapes(page, heads, tokens):
    pytest.importorskip("triton")
    from dsc import ops

    g = torch.Generator(device="cuda").manual_seed(0)
    batch, dk, dv = 16, 576, 512
    lens = torch.randint(tokens, 4096, (batch,), generator=g, device="cuda", dtype=torch.int32)
    per_row = -(-int(lens.max()) // page)
    table = torch.randperm(batch * per_row, generator=g, device="cuda").view(batch, per_row).to(torch.int32)
    cache = torch.randn(batch * per_row, page, dk, generator=g, device="cuda").to(torch.bfloat16)
    q = torch.randn(batch, tokens, heads, dk, generator=g, device="cuda").to(torch.bfloat16)
    scale = dk ** -0.5
    out, lse = ops.mla_decode(q, cache, table, lens, scale, dv)
    rows = cache[table.long()].reshape(batch, -1, dk).float()
    s = torch.einsum("bthd,bsd->bhts", q.float(), rows) * scale
    last = lens.long()[:, None] - tokens + torch.arange(tokens, device="cuda")[None]
    s = s.masked_fill(torch.arange(rows.shape[1], device="cuda")[None, None] > last[:, :, None][:, None], float("-inf"))
    ref = torch.einsum("bhts,bsd->bthd", s.softmax(-1), rows[..., :dv])
    err = float((out.float() - ref).norm() / ref.norm())
    assert err < 1e-2, err
    lse_err = float((lse - s.logsumexp(-1)).norm() / s.logsumexp(-1).norm())
    assert lse_err < 1e-3, lse_err


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_flash_attention_at_v3_naive_shapes(dtype):
    pytest.importorskip("triton")
    from dsc.codegen.triton.dense_attention import flash_attention

    g = torch.Generator(device="cuda").manual_seed(0)
    batch, tokens, heads, s = 2, 300, 16, 1100
    lens = torch.tensor([0, s - tokens], dtype=torch.int32, device="cuda")
    q = torch.randn(batch, tokens, heads, 192, generator=g, device="cuda").to(dtype)
    kv = torch.randn(batch, s, heads, 320, generator=g, device="cuda").to(dtype)
    k, v = kv[..., :192], kv[..., 192:]
    out, _ = flash_attention(q, k, v, lens, 192 ** -0.5, len_offset=tokens)
    sc = torch.einsum("bthd,bshd->bhts", q.float(), k.float()) * 192 ** -0.5
    last = lens.long()[:, None] + torch.arange(tokens, device="cuda")[None]
    sc = sc.masked_fill(torch.arange(s, device="cuda")[None, None] > last[:, :, None][:, None], float("-inf"))
    ref = torch.einsum("bhts,bshd->bthd", sc.softmax(-1), v.float())
    err = float((out.float() - ref).norm() / ref.norm())
    assert err < 2e-2, err


@pytest.mark.parametrize("passes", ["default", "none"])
def test_triton_backend_mla_layer_at_v3_shapes(passes):
    pytest.importorskip("triton")
    from dsc.nn import MLA, random_checkpoint

    cfg = Config.preset("deepseek-v3")
    sd = {k: v.cuda() for k, v in random_checkpoint(cfg, "mla", seed=0).items()}
    ref, tri = (MLA(cfg, backend=b, passes=passes, dtype=torch.bfloat16, device="cuda")
                for b in ("reference", "triton"))
    ref.load_state_dict(sd)
    tri.load_state_dict(sd)
    c_ref, c_tri = ref.new_cache(4, 600), tri.new_cache(4, 600)
    g = torch.Generator(device="cuda").manual_seed(0)
    for t in (512, 1, 2):
        start = torch.tensor(c_ref.lengths(), device="cuda")
        x = torch.randn(4, t, cfg.hidden_size, generator=g, device="cuda").to(torch.bfloat16)
        pos = start[:, None] + torch.arange(t, device="cuda")[None]
        a, b = ref(x, pos, c_ref).float(), tri(x, pos, c_tri).float()
        err = float((a - b).norm() / a.norm())
        assert err < 2e-2, (t, err)


@pytest.mark.parametrize("passes", ["default", "none"])
@pytest.mark.parametrize("tokens", [64, 1024])
def test_triton_backend_moe_at_v3_expert_shapes(passes, tokens):
    """DeepSeek-V3's router and expert widths (256 experts in 8 groups, top-8, one
    shared, 7168 -> 2048) with a quarter of the experts, to keep the weights small."""
    pytest.importorskip("triton")
    from dsc.nn import MoE, random_checkpoint

    cfg = Config.preset("deepseek-v3").replace(n_routed_experts=64, n_group=8, topk_group=4)
    sd = {k: v.cuda() for k, v in random_checkpoint(cfg, "moe", seed=0).items()}  # cast on load
    ref, tri = (MoE(cfg, backend=b, passes=passes, dtype=torch.bfloat16, device="cuda")
                for b in ("reference", "triton"))
    ref.load_state_dict(sd)
    tri.load_state_dict(sd)
    x = torch.randn(tokens, cfg.hidden_size, device="cuda").to(torch.bfloat16)
    a, b = ref(x).float(), tri(x).float()
    err = float((a - b).norm() / a.norm())
    assert err < 2e-2, err


@pytest.mark.parametrize("layer", ["mla", "moe"])
def test_triton_backend_fp8_pipeline_at_v3_widths(layer):
    """FP8 weights (activation quantization on sm_90, weight-only on sm_80) and the FP8
    latent cache, on the device's own target, against the reference backend."""
    pytest.importorskip("triton")
    from dsc.nn import MLA, MoE, random_checkpoint

    cfg = Config.preset("deepseek-v3").replace(n_routed_experts=32, n_group=8, topk_group=4)
    passes = ["absorb", "fuse_experts", "fp8", "fp8_kv", "fold", "cse", "dce"]
    cls = MLA if layer == "mla" else MoE
    sd = {k: v.cuda() for k, v in random_checkpoint(cfg, layer, seed=0).items()}
    ref, tri = (cls(cfg, backend=b, passes=passes, dtype=torch.bfloat16, device="cuda")
                for b in ("reference", "triton"))
    ref.load_state_dict(sd)
    tri.load_state_dict(sd)
    g = torch.Generator(device="cuda").manual_seed(0)
    if layer == "moe":
        x = torch.randn(256, cfg.hidden_size, generator=g, device="cuda").to(torch.bfloat16)
        a, b = ref(x).float(), tri(x).float()
    else:
        c_ref, c_tri = ref.new_cache(4, 300), tri.new_cache(4, 300)
        x = torch.randn(4, 257, cfg.hidden_size, generator=g, device="cuda").to(torch.bfloat16)
        pos = torch.arange(257, device="cuda").repeat(4, 1)
        a, b = ref(x, pos, c_ref).float(), tri(x, pos, c_tri).float()
    err = float((a - b).norm() / a.norm())
    assert err < 2e-2, err
