"""fp8_kv: an FP8 latent cache in FlashMLA's layout.

Each cached token becomes one row of bytes: the kv_lora_rank latent values in e4m3
with one float32 scale per 128 of them, then the qk_rope_head_dim rope values in bf16
(the rope part carries position and keeps its precision): 512 + 16 + 128 = 656 bytes
per token for V2/V3, against 1152 in bf16. Tokens are quantised as they are appended
and dequantised as they are read. A rank that is not a multiple of 128 (the tiny
presets) gets one scale per token.
"""

from __future__ import annotations

from dsc.ir.build import inp, op
from dsc.ir.graph import Graph
from dsc.ir.node import Node
from dsc.ir.ops.fp8 import packed_width
from dsc.passes.manager import PassContext, register_pass
from dsc.passes.rewrite import P, substitute

GROUP = 128
_APPEND = P("paged_append", P("input", name="cache"), P(name="table"), P(name="lens"),
            P("concat", P(name="c_kv"), P(name="k_pe"), name="latent"), name="append")


@register_pass("fp8_kv", exact=False)
def fp8_kv(g: Graph, ctx: PassContext) -> Graph:
    """FP8 latent KV cache (FlashMLA layout: e4m3 latent, f32 scales, bf16 rope)."""
    for n in g.nodes():
        caps: dict = {}
        if _APPEND.match(n, caps) and caps["cache"].dtype.is_float:
            break
    else:
        ctx.note(f"no float latent cache in graph {g.name}; unchanged")
        return g
    append, cache, latent = caps["append"], caps["cache"], caps["latent"]
    rank, rope = caps["c_kv"].shape[-1], caps["k_pe"].shape[-1]
    group = GROUP if rank % GROUP == 0 else rank
    width = packed_width(rank, rope, group)
    packed_cache = inp(cache.name, [*cache.shape[:-1], width], "u8")
    new_append = op("paged_append", packed_cache, caps["table"], caps["lens"],
                    op("kv_pack_fp8", latent, rank=rank, group=group))
    replace: dict[int, Node] = {id(append): new_append}
    for n in g.nodes():
        if n.op == "paged_gather" and n.srcs[0] is append:
            replace[id(n)] = op("kv_unpack_fp8", op("paged_gather", new_append, n.srcs[1]), rank=rank, group=group,
                                dtype=cache.dtype.name)
    out = substitute(g, lambda orig, _: replace.get(id(orig)))
    inputs = [packed_cache if i is cache else i for i in g.inputs]
    before = cache.shape[-1] * cache.dtype.itemsize
    ctx.note(f"latent cache {before:,} -> {width:,} bytes per token (e4m3 latent, scale per {group}, bf16 rope)")
    return Graph(out.name, inputs, out.outputs, out.folds)
