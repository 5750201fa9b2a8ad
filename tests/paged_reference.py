"""The attention references shared by the Triton and TVM kernel tests: the IR's
attention over gathered latent rows (paged) or over dense K/V, plain-PyTorch
log-sum-exps, and random cases (paged caches with shuffled block tables, dense K/V as
strided views)."""

import torch

from dsc.ir.build import inp, op
from dsc.ir import Graph, sym

B, T, H, NB, P, S = sym("B"), sym("T"), sym("H"), sym("NB"), sym("P"), sym("S")


def ir_attention(dk: int, dv: int, page: int, dt: str) -> Graph:
    """The absorbed-MLA attention of the IR: attention over the gathered latent rows."""
    q = inp("q", [B, T, H, dk], dt)
    cache = inp("cache", [NB, page, dk], dt)
    table, lens = inp("block_table", [B, P], "i32"), inp("cache_seqlens", [B], "i32")
    k = op("reshape", op("paged_gather", cache, table), shape=[B, P * page, 1, dk])
    v = op("slice", k, axis=-1, start=0, stop=dv)
    return Graph("paged_attention", [q, cache, table, lens], {"out": op("attention", q, k, v, lens, scale=0.3)})


def torch_lse(q, cache, table, total, scale):
    """log sum_s exp(scale q.k_s) over each query's visible positions: [B, H, T]."""
    b, t, h, dk = q.shape
    rows = cache[table.long()].reshape(b, -1, dk).float()
    s = torch.einsum("bthd,bsd->bhts", q.float(), rows) * scale
    last = total.long()[:, None] - t + torch.arange(t)[None]  # [B, T]
    visible = torch.arange(rows.shape[1])[None, None] <= last[:, :, None]
    return torch.logsumexp(s.masked_fill(~visible[:, None], float("-inf")), dim=-1)


def paged_case(g, batch, tokens, heads, dk, page, lens, dtype, spare_pages=1):
    per_row = -(-(int(lens.max()) + tokens) // page) + spare_pages
    table = torch.randperm(batch * per_row, generator=g).view(batch, per_row).to(torch.int32)
    cache = torch.randn(batch * per_row, page, dk, generator=g).to(dtype)
    q = torch.randn(batch, tokens, heads, dk, generator=g).to(dtype)
    return q, cache, table


def dense_ir_attention(dk: int, dv: int, heads: int, hk: int, dt: str) -> Graph:
    """The IR's attention over dense K/V with hk (1 or heads) KV heads, scale 0.25."""
    q, k, v = inp("q", [B, T, heads, dk], dt), inp("k", [B, S, hk, dk], dt), inp("v", [B, S, hk, dv], dt)
    lens = inp("cache_seqlens", [B], "i32")
    return Graph("attention", [q, k, v, lens], {"out": op("attention", q, k, v, lens, scale=0.25)})


def dense_case(g, lens, tokens: int, keys: int, heads: int, hk: int, dk: int, dv: int, dtype):
    """q [B, T, heads, dk], and K and V as views into one wider buffer of `keys` rows, the
    way the naive branch slices kv_b_proj's output."""
    q = torch.randn(lens.shape[0], tokens, heads, dk, generator=g).to(dtype)
    kv = torch.randn(lens.shape[0], keys, hk, dk + dv + 3, generator=g).to(dtype)
    return q, kv[..., :dk], kv[..., dk + 3:]


def dense_lse(q, k, lens, scale):
    """log sum_s exp(scale q.k_s) over keys 0 .. lens[b] + t: [B, H, T]."""
    t, heads, s = q.shape[1], q.shape[2], k.shape[1]
    scores = torch.einsum("bthd,bshd->bhts", q.float(), k.float().expand(-1, -1, heads, -1)) * scale
    visible = torch.arange(s)[None, None] <= (lens[:, None] + torch.arange(t)[None])[..., None]
    return scores.masked_fill(~visible[:, None], float("-inf")).logsumexp(-1)
