"""The traffic model (dsc.bench.traffic): its byte and FLOP counts restated by hand for
launches recorded as on an H100, its bound picking the resource that limits, and
`dsc bench --traffic` run as a user runs it, without a GPU."""

import json
import math
import subprocess
import sys

import pytest
import torch

pytest.importorskip("triton")
from dsc.bench import traffic  # noqa: E402
from dsc.bench.cards import CARDS, card_for  # noqa: E402
from dsc.codegen.triton import gemm, paged_attention  # noqa: E402
from dsc.codegen.triton.build import recorded_launches  # noqa: E402
from dsc.runtime.device import REFERENCE_CARDS  # noqa: E402
from util import clean_env  # noqa: E402

H100 = CARDS["h100-sxm"]


def recorded(fn):
    with recorded_launches(gpu=REFERENCE_CARDS["sm90"]) as launches:
        fn()
    return launches


def test_gemm_bytes_and_flops_are_its_operands_and_their_re_reads():
    m, n, k = 300, 1000, 512
    a, b = torch.empty(1, m, k, dtype=torch.bfloat16), torch.empty(1, k, n, dtype=torch.bfloat16)
    (spec, args, kwargs, grid), (reduce, rargs, rkwargs, rgrid) = recorded(
        lambda: gemm.bmm_into(a, b, torch.empty(1, m, n, dtype=torch.bfloat16)))
    bm, bn, split = kwargs["BLOCK_M"], kwargs["BLOCK_N"], kwargs["SPLIT_K"]
    assert split == 2 and reduce.name == "gemm_split_reduce"  # 40 output tiles on 132 SMs
    t = traffic.batched_gemm(args, kwargs, grid, kwargs["num_warps"], "wgmma", H100)
    tiles_m, tiles_n = math.ceil(m / bm), math.ceil(n / bn)
    assert t.hbm == 2 * (m * k + k * n) + 4 * split * m * n  # float32 partials instead of the output
    r = traffic.gemm_split_reduce(rargs, rkwargs, rgrid, 4, "none", H100)
    assert r.hbm == m * n * (4 * split + 2)
    assert t.l2 == 2 * (m * k * (tiles_n - 1) + k * n * (tiles_m - 1))
    assert t.flops == 2 * tiles_m * bm * n * k  # the padded rows of the last tile are computed too
    assert t.smem > 0 and not t.fp8


def test_paged_decode_reads_the_cache_once_from_hbm_and_again_per_row_block_from_l2():
    batch, heads, pages, page = 2, 128, 4, 64
    q = torch.empty(batch, 1, heads, 576, dtype=torch.bfloat16)
    cache = torch.empty(batch * pages, page, 576, dtype=torch.bfloat16)
    table = torch.zeros(batch, pages, dtype=torch.int32)
    lens = torch.zeros(batch, dtype=torch.int32)
    schedule, split, combine = recorded(lambda: paged_attention.paged_mla_attention(q, cache, table, lens, 0.1, 512))
    assert schedule[0].name == "mla_schedule" and schedule[3] == (1,)
    spec, args, kwargs, grid = split
    assert kwargs["BLOCK_M"] == 64 and kwargs["num_warps"] == 8  # Hopper's 64-row tile at >= 64 rows
    t = traffic.paged_mla_split(args, kwargs, grid, 8, "wgmma", H100)
    cache_bytes = batch * pages * page * 576 * 2
    items, row_blocks = grid
    parts = 132 // row_blocks  # one wave of H100's SMs
    assert row_blocks == heads // 64 and items == batch + parts - 1
    # 2 rows of 4 blocks (+5 overhead each) cut into 66 parts of one unit: 4 shares a row
    _, shares = paged_attention.schedule_reference([pages * page] * batch, parts)
    assert shares == [4, 4]
    assert t.hbm == cache_bytes + batch * heads * 576 * 2 + batch * 4 * heads * 513 * 4
    assert t.l2 == cache_bytes * (row_blocks - 1) + batch * heads * 576 * 2 * (4 - 1)
    assert t.flops == 2 * batch * heads * pages * page * (576 + 512)
    c = traffic.paged_mla_combine(combine[1], combine[2], combine[3], 4, "none", H100)
    assert c.hbm == items * heads * 513 * 4 + batch * heads * 512 * 2  # at most every item's share, read once
    # wgmma: the two warpgroups split the columns, so each reads all of q every step
    step = 64 * 576 * 2
    assert traffic._dot_smem(step, 0, 64, 8, "wgmma") == 2 * step
    assert traffic._dot_smem(step, 0, 32, 4, "mma.sync") == 2 * step  # 2 x 2 warps: q read twice


def test_the_bound_is_the_slowest_resource_over_the_grid_s_share_of_the_sms():
    card = CARDS["h100-sxm"]
    t = traffic.Traffic(hbm=3.35e9, l2=0, smem=0, flops=1e12)  # 1 ms of HBM, ~1 ms of tensor cores
    full = traffic.bound(t, card, 1000)
    assert full["limiter"] == "tensor" and full["seconds"] == pytest.approx(1e12 / 989.4e12)
    few = traffic.bound(traffic.Traffic(3.35e9, 0, 0, 0), card, 33)  # a quarter of the SMs
    assert few["limiter"] == "hbm (grid)" and few["seconds"] == pytest.approx(4e-3)
    fp8 = traffic.bound(traffic.Traffic(0, 0, 0, 1e12, fp8=True), card, 1000)
    assert fp8["seconds"] == pytest.approx(1e12 / 1978.9e12)
    assert traffic.bound(traffic.Traffic(0, 0, 0, 1e12, fp8=True), CARDS["a100"], 1000)["seconds"] == \
        pytest.approx(1e12 / 312e12)  # no FP8 tensor cores: bf16 dots
    assert card_for("NVIDIA H100 80GB HBM3") is card and card_for("NVIDIA A100-SXM4-80GB") is CARDS["a100"]
    assert card_for("NVIDIA H200") is CARDS["h200"] and card_for("Tesla T4") is None


def test_balanced_routing_touches_the_expected_experts():
    assert traffic.expected_experts(256, 1) == pytest.approx(1)
    assert traffic.expected_experts(256, 100000) == pytest.approx(256)
    assert 200 < traffic.expected_experts(257, 576) < 240
    # one expert's load is a binomial: its mass sums to one, its mean is slots / experts
    loads = traffic.expert_loads(256, 32768)
    assert sum(w for _, w in loads) == pytest.approx(1) and sum(x * w for x, w in loads) == pytest.approx(128)
    # 128 slots an expert on average, 128-row tiles: about half the experts need a second
    assert 1.3 * 256 < traffic.expected_tiles(256, 32768, 128) < 1.7 * 256
    assert traffic.expected_tiles(256, 16, 16) == pytest.approx(traffic.expected_experts(256, 16))
    assert traffic.expected_tiles(1, 40, 16) == 3


def test_grouped_gemm_re_reads_come_from_l2_only_when_the_launch_order_brings_them_close():
    """V3's gate+up at 4096 tokens: with GROUP_M 16 the activation tile's re-reads (16
    programs apart) and an expert's second tile (the next program) hit L2; launched a row
    tile at a time down every column (GROUP_M past the tile count: the old order), the
    activations come from HBM again for every column tile."""
    from dsc.codegen.triton import fused_moe

    tokens, experts, topk, hidden, inter = 4096, 256, 8, 7168, 2048
    x = torch.empty(tokens, hidden, dtype=torch.bfloat16)
    ids = torch.empty(tokens, topk, dtype=torch.int64)
    w13 = torch.empty(experts, 2 * inter, hidden, dtype=torch.bfloat16)
    slots = torch.empty(tokens * topk + experts * 15, dtype=torch.int32)
    with recorded_launches(gpu=REFERENCE_CARDS["sm90"]) as launches:
        fused_moe._grouped_gemm(x, slots, ids, w13, None, gather=True, swiglu=True, block=16)
    spec, args, kwargs, grid = launches[-1]
    assert spec.name == "grouped_gemm" and kwargs["GROUP_M"] == 16 and kwargs["BLOCK_M"] == 128
    near = traffic.grouped_gemm(args, kwargs, grid, 8, "wgmma", H100)
    far = traffic.grouped_gemm(args, {**kwargs, "GROUP_M": 10 ** 6}, grid, 8, "wgmma", H100)
    weights = experts * 2 * inter * hidden * 2
    acts = tokens * topk * hidden * 2
    tiles_n = 2 * inter // 2 // kwargs["BLOCK_N"]
    # HBM: the weights once (every expert is touched), x once, the layout's rows written, and
    # the second tiles' weights where a tile starts a new group (1 in 16: 512 programs on)
    second = (traffic.expected_tiles(experts, tokens * topk, 128) - experts) * weights / experts
    assert near.hbm == pytest.approx(weights + tokens * hidden * 2 + slots.shape[0] * inter * 2 + second / 16,
                                     rel=1e-6)
    # the old order: the activations again from HBM for every column tile (an expert's
    # next tile still follows its first, reading the same weight tile right after it)
    assert far.hbm - near.hbm == pytest.approx(acts * tiles_n - tokens * hidden * 2 - second / 16, rel=1e-5)
    assert near.l2 < 2 * weights  # the target: prefill L2 traffic within 2x the weights
    assert near.flops == far.flops > 2 * tokens * topk * 2 * inter * hidden  # padded tiles are computed


def test_dsc_bench_traffic_runs_without_a_gpu(tmp_path):
    done = subprocess.run([sys.executable, "-m", "dsc", "bench", "tiny-v3", "--traffic", "all", "--batch", "4",
                           "--context", "128", "--prefill", "64", "--tokens", "32", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=clean_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "bounds, not measurements" in done.stdout
    for card in CARDS.values():
        path = tmp_path / "model" / card.name.lower().replace(" ", "-") / "traffic-tiny-v3.json"
        found = json.loads(path.read_text())
        modelled = [r for r in found["kernels"] if "bound_us" in r]
        assert {"paged_mla_split", "grouped_gemm", "batched_gemm"} <= {r["kernel"] for r in modelled}
        assert all(r["bound_us"] > 0 and r["hbm_bytes"] > 0 for r in modelled)
        assert {r["where"].split()[0] for r in found["kernels"]} == {"bf16", "fp8"}
