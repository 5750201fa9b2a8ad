"""FP8: the quantisation ops against e4m3's precision, and the fp8 / fp8_kv passes
against the bound derived in dsc.passes.fp8.error_bound."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from dsc import Config, ConfigError
from dsc.builders import build_mla, build_moe
from dsc.ir import verify
from dsc.ir.cost import cache_bytes_per_token, weight_bytes
from dsc.ir.ops.fp8 import E4M3_MAX, KvPackFp8, KvUnpackFp8, dequantize, quantize, tile_scales
from dsc.passes import PassContext, PassManager, resolve_pipeline
from dsc.passes.fp8 import error_bound
from graph_inputs import checkpoint_params, mla_inputs, moe_inputs, run
from strategies import SOME, fp8_configs, seeds
from util import rel_err


@SOME
@given(seeds, st.integers(1, 300), st.integers(1, 300), st.sampled_from([(128, 128), (1, 128), (64, 32)]))
def test_block_quantisation_keeps_e4m3_precision(seed, n, k, tile):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g) * torch.exp(torch.randn(n, 1, generator=g))  # rows of different scale
    s = tile_scales(w, tile)
    assert s.shape == (-(-n // tile[0]), -(-k // tile[1]))  # edge tiles partial
    q = quantize(w, s, tile)
    assert q.dtype == torch.float8_e4m3fn and torch.isfinite(q.float()).all()
    back = dequantize(q, s, tile)
    # every value keeps 3 mantissa bits (2^-4 relative) unless it falls below e4m3's normal range
    # relative to its tile's largest value, where the absolute error is at most 2^-10 of that scale
    err = (back - w).abs()
    full_scale = s.repeat_interleave(tile[0], 0)[:n].repeat_interleave(tile[1], 1)[:, :k]
    assert torch.all(err <= 2 ** -4 * w.abs() + 2 ** -9 * full_scale + 1e-12)
    assert float(q.float().abs().max()) <= E4M3_MAX


def test_each_tile_uses_the_full_e4m3_range():
    w = torch.zeros(200, 130)
    w[5, 7], w[150, 129] = 3.0, -0.25
    s = tile_scales(w, (128, 128))
    q = quantize(w, s, (128, 128))
    assert float(q.float()[5, 7]) == E4M3_MAX and float(q.float()[150, 129]) == -E4M3_MAX
    assert torch.equal(dequantize(q, s, (128, 128)), w)  # powers of two and zeros round trip exactly


def test_kv_rows_pack_to_flashmla_layout():
    cfg = Config.preset("deepseek-v3")
    latent = torch.randn(3, 5, cfg.latent_dim)
    attrs = {"rank": 512, "group": 128}
    packed = KvPackFp8().reference([latent], attrs)
    assert packed.dtype == torch.uint8 and packed.shape == (3, 5, 656)
    # bytes 512..527 are the four float32 scales, 528.. the bf16 rope values
    scales = packed[..., 512:528].contiguous().view(torch.float32)
    assert torch.allclose(scales, latent[..., :512].abs().reshape(3, 5, 4, 128).amax(-1) / E4M3_MAX)
    rope = packed[..., 528:].contiguous().view(torch.bfloat16)
    assert torch.equal(rope, latent[..., 512:].bfloat16())
    back = KvUnpackFp8().reference([packed], {**attrs, "dtype": "f32"})
    assert rel_err(back[..., :512], latent[..., :512]) < 2 ** -4
    assert torch.equal(back[..., 512:], latent[..., 512:].bfloat16().float())


@st.composite
def fp8_cases(draw):
    cfg = draw(fp8_configs())
    layer = draw(st.sampled_from(["mla", "moe"]))
    seed = draw(seeds)
    target = draw(st.sampled_from(["sm90", "sm80"]))
    kv = layer == "mla" and draw(st.booleans())
    if layer == "mla":
        batch = draw(st.integers(1, 2))
        past = draw(st.lists(st.integers(0, 70), min_size=batch, max_size=batch))
        g, inputs = build_mla(cfg), mla_inputs(cfg, batch, draw(st.integers(1, 6)), past, seed)
    else:
        g, inputs = build_moe(cfg), moe_inputs(cfg, draw(st.integers(4, 32)), seed)
    return cfg, layer, g, inputs, seed, target, kv


@given(case=fp8_cases())
def test_fp8_stays_within_its_derived_bound(case):
    cfg, layer, g, inputs, seed, target, kv = case
    params = checkpoint_params(cfg, layer, seed)
    ref = run(g, inputs, params)["out"]
    pipeline = ["absorb", "fuse_experts", "fp8"] + (["fp8_kv"] if kv else []) + ["fold", "cse", "dce"]
    pm = PassManager(resolve_pipeline(pipeline), PassContext(target=target))
    out = pm.run(g)
    verify(out)
    bound = error_bound(out)
    assert 0 < bound < 0.5
    err = rel_err(run(out, inputs, params)["out"], ref)
    assert err <= bound, f"FP8 error {err:.3f} above its bound {bound:.3f} ({pipeline}, {target})"
    again, _ = PassManager(resolve_pipeline(["fp8"] + (["fp8_kv"] if kv else [])),
                           PassContext(target=target)).run(out), None
    assert again == out  # idempotent


def test_fp8_reports_and_shrinks_weights_and_cache():
    cfg = Config.preset("deepseek-v3")
    for layer, build in (("mla", build_mla), ("moe", build_moe)):
        base = PassManager(resolve_pipeline("default")).run(build(cfg, "bf16"))
        pm = PassManager(resolve_pipeline(["absorb", "fuse_experts", "fp8", "fp8_kv", "fold", "cse", "dce"]))
        out = pm.run(build(cfg, "bf16"))
        assert any("bytes" in line for line in pm.ctx.log if line.startswith("fp8:"))
        ratio = weight_bytes(out) / weight_bytes(base)
        if layer == "moe":
            assert 0.5 <= ratio < 0.51  # e4m3 + one float32 per 128 x 128 block, against bf16
        else:
            assert ratio < 0.6  # the absorbed W_UK / W_UV stay bf16
    assert cache_bytes_per_token(build_mla(cfg, "bf16")) == 1152
    assert cache_bytes_per_token(out if layer == "mla" else pm.run(build_mla(cfg, "bf16"))) == 656


def test_weight_only_fp8_on_sm80():
    pm = PassManager(resolve_pipeline(["fuse_experts", "fp8"]), PassContext(target="sm80"))
    out = pm.run(build_moe(Config.preset("tiny-v3")))
    gemms = [n for n in out.nodes() if n.op == "grouped_gemm_fp8"]
    assert len(gemms) == 2 and not any(n.attrs["act_quant"] for n in gemms)
    assert "weight-only FP8 (sm80)" in pm.ctx.log[-1]


def test_fp8_must_follow_absorb_and_fusion():
    with pytest.raises(ConfigError, match="fp8 must run after absorb"):
        resolve_pipeline(["fp8", "absorb"])
    with pytest.raises(ConfigError, match="fp8 must run after fuse_experts"):
        resolve_pipeline(["fp8", "fuse_experts", "fold"])


def test_fp8_on_unfused_moe_says_what_it_skipped():
    pm = PassManager(resolve_pipeline(["fp8"]))
    pm.run(build_moe(Config.preset("tiny-v3")))
    assert any("run fuse_experts first" in line for line in pm.ctx.log)


ALL_PASSES = ["absorb", "fuse_experts", "fp8", "fp8_kv", "fold", "cse", "dce"]


@given(case=fp8_cases(), order=st.permutations(ALL_PASSES))
def test_every_order_the_manager_allows_gives_the_same_result(case, order):
    cfg, layer, g, inputs, seed, target, _ = case
    try:
        pipeline = resolve_pipeline(list(order))
    except ConfigError:
        return  # an order the manager refuses (fp8 before absorb or fuse_experts)
    params = checkpoint_params(cfg, layer, seed)
    canonical = PassManager(resolve_pipeline(ALL_PASSES), PassContext(target=target)).run(g)
    reordered = PassManager(pipeline, PassContext(target=target)).run(g)
    a, b = run(canonical, inputs, params)["out"], run(reordered, inputs, params)["out"]
    # the same roundings happen in either order: the results agree to float32 rounding
    assert rel_err(b, a) <= 1e-5, f"order {order}"


def test_modules_take_a_target():
    from dsc.nn import MoE

    moe = MoE(Config.preset("tiny-v3"), passes=["fuse_experts", "fp8"], target="sm80")
    assert moe.target == "sm80"
    assert not any(n.attrs.get("act_quant", False) for n in moe.graph.nodes())
    with pytest.raises(ConfigError, match="target: expected one of sm90, sm80, cpu"):
        MoE(Config.preset("tiny-v3"), target="tpu")
