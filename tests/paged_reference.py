"""The paged-cache attention references shared by the Triton and TVM kernel tests: the
IR's attention over gathered latent rows, a plain-PyTorch log-sum-exp, and random
paged caches with shuffled block tables."""

import torch

from dsc.builders.ops import inp, op
from dsc.ir import Graph, sym

B, T, H, NB, P = sym("B"), sym("T"), sym("H"), sym("NB"), sym("P")


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
