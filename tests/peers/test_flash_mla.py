"""FlashMLA's own acceptance test (tests/test_flash_mla.py of deepseek-ai/FlashMLA), ported
to dsc.compat.flash_mla and sized for the CPU interpreter: its grid (MTP 1 and 2 query
tokens, TP head counts, fixed and varlen batches whose lengths follow a normal
distribution, page 64, D 576 / dv 512, causal), its reference (scaled_dot_product_attention
per row over the gathered cache, h_kv = 1), its cache with NaN past every row's length (a
kernel that reads a position it must not fails), and its criterion (cos_diff < 1e-5 on out
and lse). Then both of its metadata conventions, the FP8 656-byte rows, attn_sink, rows of
length 0, and every refusal."""

import math
import random

import pytest
import torch

from dsc.compat.flash_mla import FlashMLASchedMeta, flash_mla_with_kvcache, get_mla_metadata
from dsc.errors import InputError
from dsc.ir.opdef import get_op
from util import COMPILED_BACKENDS

D, DV, PAGE = 576, 512, 64


def scaled_dot_product_attention(query, key, value, is_causal=False):
    """FlashMLA's reference, h_q heads over one KV head."""
    query, key, value = query.float(), key.float(), value.float()
    key = key.expand(query.shape[0], -1, -1)
    value = value.expand(query.shape[0], -1, -1)
    attn = query @ key.transpose(-2, -1) / math.sqrt(query.size(-1))
    if is_causal:
        s_q, s_k = query.shape[-2], key.shape[-2]
        keep = torch.ones(s_q, s_k, dtype=torch.bool).tril(diagonal=s_k - s_q)
        attn = attn.masked_fill(~keep, float("-inf"))
    lse = attn.logsumexp(dim=-1)
    return torch.softmax(attn, dim=-1, dtype=torch.float32) @ value, lse


def cal_diff(x: torch.Tensor, y: torch.Tensor, name: str) -> None:
    """FlashMLA's criterion."""
    x, y = x.double(), y.double()
    assert not torch.isnan(x).any(), f"{name}: NaN"
    cos_diff = 1 - 2 * (x * y).sum().item() / max((x * x + y * y).sum().item(), 1e-12)
    assert cos_diff < 1e-5, f"{name}: cos_diff {cos_diff}"


def case(b, s_q, mean_sk, h_q, varlen, seed=0, dtype=torch.bfloat16):
    """FlashMLA's inputs: lengths ~ N(mean, mean / 2) clipped at s_q, rows padded to 256,
    one page table entry after another, NaN past each row's length."""
    rnd = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    lens = torch.full((b,), mean_sk, dtype=torch.int32)
    if varlen:
        for i in range(b):
            lens[i] = max(int(rnd.normalvariate(mean_sk, mean_sk / 2)), s_q)
    max_pad = -(-int(lens.max()) // 256) * 256
    table = torch.arange(b * max_pad // PAGE, dtype=torch.int32).view(b, max_pad // PAGE)
    q = torch.randn(b, s_q, h_q, D, generator=g).to(dtype)
    k = torch.randn(table.numel(), PAGE, 1, D, generator=g).to(dtype)
    for i in range(b):
        k.view(b, max_pad, 1, D)[i, int(lens[i]):] = float("nan")
    return q, k, table, lens, max_pad


def reference(q, k, lens, max_pad, causal, rows=None):
    b, s_q, h_q, _ = q.shape
    k = k if rows is None else rows
    out = torch.empty(b, s_q, h_q, DV)
    lse = torch.empty(b, h_q, s_q)
    for i in range(b):
        kv = k.view(-1, 1, D)[i * max_pad: i * max_pad + int(lens[i])].transpose(0, 1)
        o, l_ = scaled_dot_product_attention(q[i].transpose(0, 1), kv, kv[..., :DV], is_causal=causal)
        out[i], lse[i] = o.transpose(0, 1), l_
    return out, lse


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
@pytest.mark.parametrize("h_q, s_q, varlen", [(16, 1, False), (16, 2, True), (128, 1, True), (64, 2, False)])
def test_flash_mla_grid(backend, h_q, s_q, varlen):
    """FlashMLA's grid (b 128, s 4096-16384 there; 2 rows of about 150 tokens here)."""
    q, k, table, lens, max_pad = case(2, s_q, 150, h_q, varlen, seed=h_q + s_q)
    meta, splits = get_mla_metadata(lens, s_q * h_q // 1, 1)
    out, lse = flash_mla_with_kvcache(q, k, table, lens, DV, meta, splits, causal=True, backend=backend)
    want_out, want_lse = reference(q, k, lens, max_pad, causal=True)
    assert out.shape == (2, s_q, h_q, DV) and out.dtype == q.dtype and lse.shape == (2, h_q, s_q)
    cal_diff(out, want_out, "out")
    cal_diff(lse, want_lse, "lse")


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
def test_causal_is_off_by_default_and_the_scale_defaults_to_head_dim(backend):
    """FlashMLA's defaults: causal=False (dsc.ops.mla_decode's is True), softmax_scale
    D ** -0.5; head_dim_v is the 5th positional argument, the metadata the 6th."""
    q, k, table, lens, max_pad = case(2, 2, 90, 16, True, seed=3)
    meta, splits = get_mla_metadata(lens, 2 * 16, 1)
    out, lse = flash_mla_with_kvcache(q, k, table, lens, DV, meta, splits, backend=backend)
    want_out, want_lse = reference(q, k, lens, max_pad, causal=False)
    cal_diff(out, want_out, "non-causal out")
    cal_diff(lse, want_lse, "non-causal lse")
    half, _ = flash_mla_with_kvcache(q, k, table, lens, DV, meta, splits, softmax_scale=0.5 * D ** -0.5,
                                     backend=backend)
    assert (half.float() - out.float()).abs().max() > 1e-2  # the scale is honoured, not ignored


def test_one_metadata_serves_every_layer_and_the_lazy_convention_checks_its_shapes():
    """FlashMLA's current convention: get_mla_metadata() is empty, the first call fills it
    (schedule and shapes), later layers reuse it; a call of another shape is refused."""
    q, k, table, lens, max_pad = case(3, 1, 200, 16, True, seed=5)
    meta, none = get_mla_metadata()
    assert isinstance(meta, FlashMLASchedMeta) and none is None and not meta.have_initialized
    want, _ = reference(q, k, lens, max_pad, causal=True)
    for layer in range(2):
        out, _ = flash_mla_with_kvcache(q, k, table, lens, DV, meta, causal=True)
        cal_diff(out, want, f"layer {layer}")
    assert meta.have_initialized and meta.num_splits.tolist()[0] == 0 and meta.num_splits.shape == (4,)
    with pytest.raises(InputError, match="num_heads_q 32 \\(was 16\\)"):
        flash_mla_with_kvcache(torch.cat([q, q], 2), k, table, lens, DV, meta, causal=True)
    with pytest.raises(InputError, match="causal False \\(was True\\)"):
        flash_mla_with_kvcache(q, k, table, lens, DV, meta, causal=False)


def test_a_schedule_that_shares_rows_gives_the_same_attention():
    """The metadata's schedule is honoured: cut into 7 parts the long rows are shared by
    several programs and merged by the combine, with the same result as whole rows."""
    from dsc.codegen.triton.paged_attention import decode_schedule

    q, k, table, lens, max_pad = case(3, 2, 220, 16, True, seed=7)
    sched = decode_schedule(lens, 7)
    assert int(sched.splits[-1]) > 3  # some row is shared
    out, lse = flash_mla_with_kvcache(q, k, table, lens, DV, sched.items, sched.splits, causal=True)
    want_out, want_lse = reference(q, k, lens, max_pad, causal=True)
    cal_diff(out, want_out, "out over shared rows")
    cal_diff(lse, want_lse, "lse over shared rows")


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
def test_the_fp8_cache_is_flash_mla_s_656_byte_rows(backend):
    """is_fp8_kvcache: 512 e4m3 values, 4 float32 scales (one per 128), 64 bf16 rope values
    a token; against the reference on exactly what the rows hold."""
    q, k, table, lens, max_pad = case(2, 1, 130, 16, True, seed=9)
    k = k.nan_to_num(0.0)
    packed = get_op("kv_pack_fp8").reference([k[:, :, 0]], {"rank": DV, "group": 128})
    assert packed.shape[-1] == 656
    rows = get_op("kv_unpack_fp8").reference([packed], {"rank": DV, "group": 128, "dtype": "bf16"})
    meta, splits = get_mla_metadata(lens, 16, 1, is_fp8_kvcache=True)
    out, lse = flash_mla_with_kvcache(q, packed.view(torch.float8_e4m3fn)[:, :, None], table, lens, DV, meta,
                                      splits, causal=True, is_fp8_kvcache=True, backend=backend)
    want_out, want_lse = reference(q, k, lens, max_pad, causal=True, rows=rows[:, :, None])
    cal_diff(out, want_out, "fp8 out")
    cal_diff(lse, want_lse, "fp8 lse")


def test_attention_sinks_scale_the_output_and_leave_the_lse():
    """FlashMLA's attn_sink: out * exp(lse) / (exp(lse) + exp(sink)); +inf gives 0."""
    q, k, table, lens, max_pad = case(2, 1, 70, 16, False, seed=11)
    meta, splits = get_mla_metadata(lens, 16, 1)
    sink = torch.linspace(-2.0, 3.0, 16)
    sink[0] = float("inf")
    out, lse = flash_mla_with_kvcache(q, k, table, lens, DV, meta, splits, attn_sink=sink)
    plain, plain_lse = flash_mla_with_kvcache(q, k, table, lens, DV, meta, splits)
    factor = torch.exp(plain_lse) / (torch.exp(plain_lse) + torch.exp(sink)[None, :, None])
    cal_diff(out.float(), plain.float() * factor.transpose(1, 2)[..., None], "sink")
    assert torch.equal(lse, plain_lse) and bool((out[:, :, 0] == 0).all())


def test_a_row_of_length_zero_gets_zero_and_infinite_lse():
    q, k, table, lens, _ = case(2, 1, 64, 16, False, seed=13)
    lens[0] = 0
    meta, splits = get_mla_metadata(lens, 16, 1)
    out, lse = flash_mla_with_kvcache(q, k, table, lens, DV, meta, splits)
    assert bool((out[0] == 0).all()) and bool(torch.isposinf(lse[0]).all())
    assert bool(torch.isfinite(out[1].float()).all()) and bool(torch.isfinite(lse[1]).all())


@pytest.mark.parametrize("change, message", [
    (lambda a: {**a, "k_cache": a["k_cache"].expand(-1, -1, 2, -1)}, "holds 2 KV heads"),
    (lambda a: {**a, "indices": torch.zeros(2, 1, 8, dtype=torch.int32)}, "sparse attention \\(indices\\)"),
    (lambda a: {**a, "descale_q": torch.ones(1)}, "descale_q"),
    (lambda a: {**a, "tile_scheduler_metadata": torch.zeros(132, 8, dtype=torch.int32)}, "another layout"),
    (lambda a: {**a, "num_splits": a["num_splits"][:-1]}, "num_splits must be int32 of shape \\[3\\]"),
    (lambda a: {**a, "is_fp8_kvcache": True}, "656-byte rows"),
    (lambda a: {**a, "k_cache": a["k_cache"].float()}, "k_cache must be torch.bfloat16 rows"),
    (lambda a: {**a, "cache_seqlens": a["cache_seqlens"].long()}, "cache_seqlens must be a 1-D int32"),
    (lambda a: {**a, "block_table": None}, "block_table and cache_seqlens are needed"),
])
def test_what_dsc_cannot_serve_is_refused_by_name(change, message):
    q, k, table, lens, _ = case(2, 1, 64, 16, False, seed=15)
    meta, splits = get_mla_metadata(lens, 16, 1)
    args = {"q": q, "k_cache": k, "block_table": table, "cache_seqlens": lens, "head_dim_v": DV,
            "tile_scheduler_metadata": meta, "num_splits": splits}
    with pytest.raises(InputError, match=message):
        flash_mla_with_kvcache(**change(args))
    with pytest.raises(InputError, match="topk"):
        get_mla_metadata(lens, 16, 1, topk=2048)


def test_the_readme_s_import_swap_runs_as_written_in_a_clean_process():
    """The README's FlashMLA snippet, verbatim, in a fresh interpreter."""
    import os
    import re

    from util import run_clean

    readme = open(os.path.join(os.path.dirname(__file__), "..", "..", "README.md"), encoding="utf-8").read()
    code = re.search(r"<!-- compat-flash-mla -->\n```python\n(.*?)```", readme, re.S).group(1)
    r = run_clean(code)
    assert r.returncode == 0, r.stderr
    assert "torch.Size([2, 1, 16, 512]) torch.Size([2, 16, 1])" in r.stdout
