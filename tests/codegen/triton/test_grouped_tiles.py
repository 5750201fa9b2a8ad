"""Triton's grouped GEMMs at every row tile a GPU can pick (BLOCK_M 16 to 128 over the
16-row expert runs, cut by moe_tiles so no tile mixes experts) and launch order (GROUP_M
row tiles at a time), drawn under the
interpreter against the reference ops: gate+up with SiLU, down with routing weights and
zero padding rows, and the FP8 weights, on balanced, skewed and one-expert routings.
Both backends at their default tiles: tests/codegen/test_moe_kernels.py."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import dsc.codegen.triton  # noqa: F401  (before triton: enables its interpreter without CUDA)

pytest.importorskip("triton")
from dsc.codegen.triton import fused_moe  # noqa: E402
from dsc.ir.opdef import get_op  # noqa: E402
from dsc.runtime.device import ARCH_LIMITS, REFERENCE_CARDS  # noqa: E402
from strategies import seeds  # noqa: E402
from util import BF16_TOL, F32_TOL, assert_close  # noqa: E402


def ref(op, *args, **attrs):
    opdef = get_op(op)
    return opdef.reference(list(args), opdef.check_attrs(attrs))


@given(seed=seeds, tokens=st.integers(1, 50), topk=st.integers(1, 3), experts=st.integers(1, 6),
       routing=st.sampled_from(["balanced", "skewed", "one"]), block_m=st.sampled_from([16, 32, 64, 128]),
       group_m=st.sampled_from([1, 3, 16]), fp8=st.booleans(), dtype=st.sampled_from([torch.float32, torch.bfloat16]))
def test_every_row_tile_matches_the_reference(seed, tokens, topk, experts, routing, block_m, group_m, fp8, dtype):
    topk = min(topk, experts)
    g = torch.Generator().manual_seed(seed)
    if routing == "one":  # every token's first choice is expert 0: one long run, tiles of it
        ids = torch.arange(topk).repeat(tokens, 1)
    else:
        pool = min(experts, topk + 1) if routing == "skewed" else experts
        ids = torch.stack([torch.randperm(pool, generator=g)[:topk] for _ in range(tokens)])
    ids = ids.to(torch.int64)
    hidden, inter = 64, 96  # three 32-column tiles of gate+up: groups walk several columns
    x = torch.randn(tokens, hidden, generator=g).to(dtype)
    w13 = (torch.randn(experts, 2 * inter, hidden, generator=g) / 8)
    w2 = (torch.randn(experts, hidden, inter, generator=g) / 8)
    route = torch.rand(tokens, topk, generator=g)
    slots = ref("moe_align", ids, experts=experts, block=16)
    # GROUP_M: the launch order's row-tile groups, a last group short of it (3) included
    config = {"BLOCK_M": block_m, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": group_m, "num_warps": 4, "num_stages": 1}
    tol = F32_TOL if dtype == torch.float32 else BF16_TOL
    if fp8:
        scales = ref("fp8_scale", w13, tile_n=32, tile_k=32)
        wq = ref("fp8_quant", w13, scales, tile_n=32, tile_k=32)
        want = ref("grouped_gemm_fp8", x, slots, ids, wq, scales, gather=True, swiglu=True, act_quant=False,
                   block=32)
        got = fused_moe._grouped_gemm(x, slots, ids, wq, None, gather=True, swiglu=True, block=16, scales=scales,
                                      scale_block=32, config={**config, "BLOCK_K": 32})
        assert_close(got.float(), want.float(), tol, f"fp8 gate+up at {config}")
        return
    h = fused_moe._grouped_gemm(x, slots, ids, w13.to(dtype), None, gather=True, swiglu=True, block=16,
                                config=config)
    assert_close(h.float(), ref("grouped_gemm", x, slots, ids, w13.to(dtype), gather=True, swiglu=True).float(),
                 tol, f"gate+up at {config}")
    y = fused_moe._grouped_gemm(h, slots, ids, w2.to(dtype), route, gather=False, swiglu=False, block=16,
                                config=config)
    assert_close(y, ref("grouped_gemm", h, slots, ids, w2.to(dtype), route, gather=False), tol, f"down at {config}")
    padding = slots >= ids.numel()
    assert torch.equal(y[padding], torch.zeros_like(y[padding]))  # every padding row written, as zeros


def test_the_row_tile_follows_the_batch_bucket():
    """A decode batch keeps 16-row tiles; a prefill's experts get 64-128 rows each, so the
    tiles grow (wgmma on Hopper; each expert's weights streamed once per tile)."""
    h100, a100 = REFERENCE_CARDS["sm90"], REFERENCE_CARDS["sm80"]
    shape = {"N": 4096, "K": 7168, "experts": 257, "topk": 9, "block": 16, "swiglu": True, "fp8": 0, "itemsize": 2}
    picks = {m: fused_moe.TUNING.default({**shape, "M": m}, h100)["BLOCK_M"] for m in (1, 64, 512, 1024, 4096)}
    assert picks == {1: 16, 64: 16, 512: 32, 1024: 64, 4096: 128}
    for m in (1, 512, 4096):  # the defaults are configs the tuner could also pick
        for card, fp8 in ((h100, 0), (h100, 128), (a100, 0), (a100, 128)):
            at = {**shape, "M": m, "fp8": fp8}
            assert fused_moe.fits(fused_moe.TUNING.default(at, card), at, ARCH_LIMITS[card.arch]), (m, card, fp8)
    assert fused_moe.TUNING.default({**shape, "M": 4096, "fp8": 128}, a100)["BLOCK_M"] == 32
    assert fused_moe.TUNING.default({**shape, "M": 4096}, torch.device("cpu"))["BLOCK_M"] == 16
