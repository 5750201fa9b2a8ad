"""The latent-cache write as the IR's reference ops compute it, and random cases for it
(shared by the CPU and GPU kernel tests)."""

import torch

from dsc.builders.mla import rope_attrs
from dsc.ir.build import inp, op, param
from dsc.config import Config
from dsc.ir import Graph, sym

B, T, NB, P = sym("B"), sym("T"), sym("NB"), sym("P")


def reference_graph(cfg: Config, rank: int, rope: int, page: int, dt: str) -> Graph:
    kv = inp("kv", [B, T, rank + rope], dt)
    pos = inp("positions", [B, T], "i64")
    cache = inp("cache", [NB, page, rank + rope], dt)
    table, lens = inp("block_table", [B, P], "i32"), inp("cache_seqlens", [B], "i32")
    c = op("rms_norm", op("slice", kv, axis=-1, start=0, stop=rank), param("w", [rank], dt), eps=cfg.rms_norm_eps)
    k = op("rope", op("slice", kv, axis=-1, start=rank, stop=rank + rope), pos, **rope_attrs(cfg))
    out = op("paged_append", cache, table, lens, op("concat", c, k, axis=-1))
    return Graph("latent_append", [kv, pos, cache, table, lens], {"cache": out})


def latent_case(g: torch.Generator, rank: int, rope: int, page: int, lens: torch.Tensor, tokens: int,
                dtype: torch.dtype, first_position: int = 0):
    """(inputs, params, written) for reference_graph: a cache of shuffled pages already
    holding lens[b] tokens per row, tokens new rows each, and the [pages, page] mask of
    the slots the call writes."""
    device = g.device
    batch = lens.shape[0]
    per_row = -(-(int(lens.max()) + tokens) // page)
    table = torch.randperm(batch * per_row, generator=g, device=device).view(batch, per_row).to(torch.int32)
    cache = torch.randn(batch * per_row, page, rank + rope, generator=g, device=device).to(dtype)
    kv = torch.randn(batch, tokens, rank + rope, generator=g, device=device).to(dtype)
    w = (1 + 0.1 * torch.randn(rank, generator=g, device=device)).to(dtype)
    idx = lens.to(torch.int64)[:, None] + torch.arange(tokens, device=device)[None]  # [B, T]
    pos = idx + first_position
    written = torch.zeros(cache.shape[:2], dtype=torch.bool, device=device)
    written[table.to(torch.int64).gather(1, idx // page), idx % page] = True
    inputs = {"kv": kv, "positions": pos, "cache": cache, "block_table": table, "cache_seqlens": lens}
    return inputs, {"w": w}, written
