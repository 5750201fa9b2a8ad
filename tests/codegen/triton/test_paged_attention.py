"""Triton's own side of MLA attention over the paged cache: the schedule, the split-KV
kernel and its combine compile for sm_80 and sm_90; the schedule balances uneven rows and
matches its host reference; every tile choice a GPU can make (query rows, cache positions
per step, parts) computes the same attention. Its numerics on both
backends at the default tiles (split counts drawn): tests/codegen/test_attention_kernels.py."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import dsc.codegen.triton  # noqa: F401  (before triton: enables its interpreter without CUDA)

triton = pytest.importorskip("triton")
from dsc.codegen.triton.build import compile_for  # noqa: E402
from dsc.codegen.triton.paged_attention import (UNIT, decode_schedule, paged_mla_attention,  # noqa: E402
                                                schedule_reference, signature)
from dsc.ir import interpret  # noqa: E402
from dsc.ir.opdef import get_op  # noqa: E402
from paged_reference import ir_attention, paged_case  # noqa: E402
from strategies import seeds  # noqa: E402
from util import BF16_TOL, assert_close  # noqa: E402


@pytest.mark.parametrize("arch", [80, 90])
@pytest.mark.parametrize("dtype, heads, tokens, page", [("bf16", 128, 1, 64), ("bf16", 16, 2, 1), ("fp32", 16, 1, 16)])
def test_compiles_for_a100_and_h100(arch, dtype, heads, tokens, page):
    for spec, sig, const in signature(dtype, heads, tokens, page):
        compiled = compile_for(spec, sig, const, arch)
        assert f".target sm_{arch}" in compiled["ptx"] and compiled["cubin_bytes"] > 0


@given(seed=seeds, page=st.sampled_from([1, 16, 64]), batch=st.integers(1, 3), tokens=st.integers(1, 5),
       heads=st.sampled_from([3, 16]), block_m=st.sampled_from([16, 32, 64]), block_n=st.sampled_from([16, 32, 64]),
       parts=st.sampled_from([1, 2, 3, 7]), fp8=st.booleans(), data=st.data())
def test_every_tile_choice_matches_the_ir_attention(seed, page, batch, tokens, heads, block_m, block_n, parts, fp8,
                                                    data):
    """The tiles a GPU picks (64-row query blocks over several tokens' heads, 32/64-position
    steps across page boundaries, rows shared by several parts or sharing one), drawn under the interpreter, on bf16 and FP8
    caches, against the IR's attention on the same (dequantized) rows."""
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor(data.draw(st.lists(st.integers(0, 140), min_size=batch, max_size=batch)), dtype=torch.int32)
    dv, rope, group = 32, 8, 16
    q, cache, table = paged_case(g, batch, tokens, heads, dv + rope, page, lens, torch.bfloat16)
    fp8_group = group if fp8 else None
    if fp8:  # the packed FP8 rows, and the reference on exactly what they hold
        cache = get_op("kv_pack_fp8").reference([cache], {"rank": dv, "group": group})
        rows = get_op("kv_unpack_fp8").reference([cache], {"rank": dv, "group": group, "dtype": "bf16"})
    else:
        rows = cache
    want = interpret(ir_attention(dv + rope, dv, page, "bf16"),
                     {"q": q, "cache": rows, "block_table": table, "cache_seqlens": lens}, {})["out"]
    config = {"BLOCK_M": block_m, "BLOCK_N": block_n, "parts": parts, "num_warps": 4, "num_stages": 1}
    out, _ = paged_mla_attention(q, cache, table, lens, 0.3, dv, len_offset=tokens, fp8_group=fp8_group,
                                 config=config)
    assert_close(out.float(), want.float(), BF16_TOL, f"paged attention at {config}")


@given(totals=st.lists(st.integers(0, 700), min_size=1, max_size=9), parts=st.integers(1, 12),
       offset=st.integers(0, 3))
def test_the_schedule_matches_its_host_reference_and_covers_every_block_once(totals, parts, offset):
    """The device schedule is the host one, and its items tile each row's blocks exactly:
    in order, consecutive, no block twice, none missed, the share count per row right,
    the spare items marked."""
    lens = torch.tensor(totals, dtype=torch.int32)
    sched = decode_schedule(lens, parts, offset)
    items, counts = schedule_reference([n + offset for n in totals], parts)
    assert sched.count == len(totals) + parts - 1 >= len(items)
    assert sched.items[:len(items)].tolist() == [list(i) for i in items]
    assert sched.items[len(items):].tolist() == [[-1, 0, 0]] * (sched.count - len(items))
    assert sched.splits.tolist() == [0, *torch.tensor(counts).cumsum(0).tolist()]
    for b, n in enumerate(totals):
        mine = [(lo, hi) for row, lo, hi in items if row == b]
        assert len(mine) == counts[b] and all(lo < hi for lo, hi in mine)
        assert [lo for lo, _ in mine] == [0, *[hi for _, hi in mine[:-1]]]
        assert mine[-1][1] == max(1, -(-(n + offset) // UNIT))


def test_the_schedule_balances_an_uneven_batch():
    """One 32K-token row among 63 short ones (FlashMLA's varlen case): a split of every row
    into the same count would leave most programs idle or waiting on the long row; no
    item holds more than one cut's worth (1147 units over 132 cuts: 9), the long row is
    shared by 57 programs, the short ones are one item or two."""
    totals = [32768] + [300] * 63
    items, counts = schedule_reference(totals, 132)
    assert max(hi - lo for _, lo, hi in items) <= 9
    assert sum(hi - lo for _, lo, hi in items) == 512 + 63 * 5
    assert counts[0] >= 512 // 9 and max(counts[1:]) <= 2 and len(items) <= 64 + 131


def test_an_uneven_batch_over_many_parts_matches_the_ir_attention():
    """Rows of 0, 1, 200 and 700 positions over 9 parts: the long row shared, the short ones
    whole, an empty one beside them, against the IR's attention."""
    g = torch.Generator().manual_seed(5)
    lens = torch.tensor([700, 0, 199, 1], dtype=torch.int32)
    q, cache, table = paged_case(g, 4, 1, 4, 40, 16, lens, torch.float32)
    want = interpret(ir_attention(40, 32, 16, "f32"),
                     {"q": q, "cache": cache, "block_table": table, "cache_seqlens": lens}, {})["out"]
    config = {"BLOCK_M": 16, "BLOCK_N": 32, "parts": 9, "num_warps": 4, "num_stages": 1}
    out, lse = paged_mla_attention(q, cache, table, lens, 0.3, 32, len_offset=1, config=config)
    assert_close(out, want, 1e-5, "an uneven batch over 9 parts")
    assert bool(torch.isfinite(lse).all())
