"""The FP8 kernel groups of both compiled backends against the IR's reference ops: block-scaled FP8 GEMM with and
without the fused activation quantization, the grouped FP8 GEMMs of the MoE, and the
FP8 latent cache (packed as it is written, dequantized as attention reads it)."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from dsc.ir.build import inp, op
from dsc.codegen.schedule import live_groups, schedule
from dsc.ir import Graph, interpret, sym
from dsc.ir.opdef import get_op
from dsc.ir.ops.fp8 import packed_width
from dsc.executor import make_runner
from strategies import seeds
from backend_kernels import backend_kernels
from util import BF16_TOL, COMPILED_BACKENDS, F32_TOL, assert_close


def ref(name, *args, **attrs):
    opdef = get_op(name)
    return opdef.reference(list(args), opdef.check_attrs(attrs))


def fp8_weight(g, *shape, block):
    w = torch.randn(*shape, generator=g) / shape[-1] ** 0.5
    s = ref("fp8_scale", w, tile_n=block, tile_k=block)
    return ref("fp8_quant", w, s, tile_n=block, tile_k=block), s


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
@given(seed=seeds, m=st.integers(1, 40), n=st.sampled_from([8, 40, 130]), k=st.sampled_from([16, 100, 300]),
       block=st.sampled_from([32, 128]), act_quant=st.booleans(),
       dtype=st.sampled_from([torch.float32, torch.bfloat16]))
def test_fp8_linear_matches_the_reference(backend, seed, m, n, k, block, act_quant, dtype):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(m, k, generator=g) * torch.rand(m, 1, generator=g) * 4).to(dtype)
    wq, ws = fp8_weight(g, n, k, block=block)
    out = backend_kernels(backend).fp8_linear(x, wq, ws, act_quant=act_quant, block=block)
    want = ref("fp8_linear", x, wq, ws, act_quant=act_quant, block=block)
    # the same quantization (bit-exact e4m3 rounding, also under the interpreter); only the
    # float32 summation order differs
    assert_close(out.float(), want.float(), F32_TOL if dtype == torch.float32 else BF16_TOL, "fp8_linear")


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
@given(seed=seeds, n=st.integers(1, 30), experts=st.integers(1, 6), k=st.integers(1, 3), act_quant=st.booleans(),
       hidden=st.sampled_from([64, 160]), inter=st.sampled_from([16, 48]), dtype=st.sampled_from([torch.float32,
                                                                                                 torch.bfloat16]))
def test_grouped_fp8_gemms_match_the_reference(backend, seed, n, experts, k, act_quant, hidden, inter, dtype):
    k = min(k, experts)
    g = torch.Generator().manual_seed(seed)
    ids = torch.stack([torch.randperm(experts, generator=g)[:k] for _ in range(n)])
    x = torch.randn(n, hidden, generator=g).to(dtype)
    route = torch.rand(n, k, generator=g)
    w13, s13 = fp8_weight(g, experts, 2 * inter, hidden, block=128)
    w2, s2 = fp8_weight(g, experts, hidden, inter, block=128)
    slots = ref("moe_align", ids, experts=experts, block=16)
    tol = F32_TOL if dtype == torch.float32 else BF16_TOL
    h_ref = ref("grouped_gemm_fp8", x, slots, ids, w13, s13, gather=True, swiglu=True, act_quant=act_quant)
    kernels = backend_kernels(backend)
    h = kernels.grouped_gemm(x, slots, ids, w13, None, block=16, gather=True, swiglu=True, scales=s13,
                             act_quant=act_quant)
    assert_close(h.float(), h_ref.float(), tol, "gate+up")
    y_ref = ref("grouped_gemm_fp8", h_ref, slots, ids, w2, s2, route, gather=False, act_quant=act_quant)
    y = kernels.grouped_gemm(h_ref, slots, ids, w2, route, block=16, gather=False, swiglu=False, scales=s2,
                             act_quant=act_quant)
    assert_close(y, y_ref, tol, "down")


B, T, NB, P = sym("B"), sym("T"), sym("NB"), sym("P")


def fp8_cache_graph(rank, rope, heads, page, group, dt):
    """Append packed latents to an FP8 cache, then attend over it: the absorbed decode."""
    width = packed_width(rank, rope, group)
    lat = inp("latent", [B, T, rank + rope], dt)
    q = inp("q", [B, T, heads, rank + rope], dt)
    cache = inp("cache", [NB, page, width], "u8")
    table, lens = inp("block_table", [B, P], "i32"), inp("cache_seqlens", [B], "i32")
    new_cache = op("paged_append", cache, table, lens, op("kv_pack_fp8", lat, rank=rank, group=group))
    rows = op("kv_unpack_fp8", op("paged_gather", new_cache, table), rank=rank, group=group, dtype=dt)
    k = op("reshape", rows, shape=[B, P * page, 1, rank + rope])
    v = op("slice", k, axis=-1, start=0, stop=rank)
    out = op("attention", q, k, v, lens, scale=0.2)
    return Graph("fp8_cache", [lat, q, cache, table, lens], {"out": out, "cache": new_cache})


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
@given(seed=seeds, page=st.sampled_from([1, 16]), rank=st.sampled_from([32, 64]), group=st.sampled_from([16, 32]),
       tokens=st.integers(1, 3), dtype=st.sampled_from([torch.float32, torch.bfloat16]), data=st.data())
def test_fp8_cache_write_and_attention_match_the_reference(backend, seed, page, rank, group, tokens, dtype, data):
    g = torch.Generator().manual_seed(seed)
    batch, rope, heads = 2, 8, 4
    dt = "f32" if dtype == torch.float32 else "bf16"
    graph = fp8_cache_graph(rank, rope, heads, page, group, dt)
    live = [grp.kind for grp in live_groups(schedule(graph), graph, choose=None)]
    assert live == ["paged_append", "paged_attention"], live  # no gathered copy of the cache
    lens = torch.tensor(data.draw(st.lists(st.integers(0, 30), min_size=batch, max_size=batch)), dtype=torch.int32)
    per_row = -(-(int(lens.max()) + tokens) // page)
    table = torch.randperm(batch * per_row, generator=g).view(batch, per_row).to(torch.int32)
    # a cache already holding packed rows (written by the reference) before this call
    old = torch.randn(batch * per_row, page, rank + rope, generator=g).to(dtype)
    cache = ref("kv_pack_fp8", old, rank=rank, group=group)
    inputs = {"latent": (torch.randn(batch, tokens, rank + rope, generator=g) * 3).to(dtype),
              "q": torch.randn(batch, tokens, heads, rank + rope, generator=g).to(dtype),
              "block_table": table, "cache_seqlens": lens}
    want = interpret(graph, {**inputs, "cache": cache.clone()}, {})
    got = make_runner(graph, backend)({**inputs, "cache": cache.clone()}, {})
    assert torch.equal(got["cache"], want["cache"]), "packed bytes differ"
    assert_close(got["out"].float(), want["out"].float(), F32_TOL if dtype == torch.float32 else BF16_TOL, "out")


@pytest.mark.parametrize("arch", [80, 90])
def test_triton_compiles_for_a100_and_h100(arch):
    """sm_90 runs FP8 x FP8 dots (activation quantization); sm_80 has no FP8 tensor cores,
    so the fp8 pass gives it weight-only FP8 (e4m3 upcast into bf16 dots)."""
    pytest.importorskip("triton")
    from dsc.codegen.triton import fp8_gemm, fused_moe
    from dsc.codegen.triton.build import compile_all

    act_quant = arch == 90
    jobs = fp8_gemm.signature("bf16", act_quant) + [job for job in fused_moe.signature("bf16", fp8=True,
                                                                                       act_quant=act_quant)
                                                     if job[0].name == "grouped_gemm"]
    assert [job[0].name for job in jobs] == ["fp8_gemm", "fp8_gemm", "gemm_split_reduce", "grouped_gemm",
                                             "grouped_gemm"]
    for (spec, _, _), res in zip(jobs, compile_all(jobs, arch)):
        assert f".target sm_{arch}" in res["ptx"] and res["cubin_bytes"] > 0, spec.name
