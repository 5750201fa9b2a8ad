"""Triton's own side of MLA attention over the paged cache: the split-KV kernel and its
combine compile for sm_80 and sm_90, and every tile choice a GPU can make (query rows,
cache positions per step, splits) computes the same attention. Its numerics on both
backends at the default tiles (split counts drawn): tests/codegen/test_attention_kernels.py."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import dsc.codegen.triton  # noqa: F401  (before triton: enables its interpreter without CUDA)

triton = pytest.importorskip("triton")
from dsc.codegen.triton.build import compile_for  # noqa: E402
from dsc.codegen.triton.paged_attention import paged_mla_attention, signature  # noqa: E402
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


@given(seed=seeds, page=st.sampled_from([1, 16, 64]), batch=st.integers(1, 2), tokens=st.integers(1, 5),
       heads=st.sampled_from([3, 16]), block_m=st.sampled_from([16, 32, 64]), block_n=st.sampled_from([16, 32, 64]),
       splits=st.sampled_from([1, 3]), fp8=st.booleans(), data=st.data())
def test_every_tile_choice_matches_the_ir_attention(seed, page, batch, tokens, heads, block_m, block_n, splits, fp8,
                                                    data):
    """The tiles a GPU picks (64-row query blocks over several tokens' heads, 32/64-position
    steps across page boundaries, splits), drawn under the interpreter, on bf16 and FP8
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
    config = {"BLOCK_M": block_m, "BLOCK_N": block_n, "splits": splits, "num_warps": 4, "num_stages": 1}
    out, _ = paged_mla_attention(q, cache, table, lens, 0.3, dv, len_offset=tokens, fp8_group=fp8_group,
                                 config=config)
    assert_close(out.float(), want.float(), BF16_TOL, f"paged attention at {config}")
