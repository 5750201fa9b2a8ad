"""The latent-cache write as the IR's reference ops compute it (for the kernel tests)."""

from dsc.builders.mla import rope_attrs
from dsc.builders.ops import inp, op, param
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
