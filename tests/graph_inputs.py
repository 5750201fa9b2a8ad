"""Random inputs and weights for running built graphs directly through the interpreter."""

from __future__ import annotations

import torch

from dsc.ir import Graph, interpret
from dsc.ir.interpreter import evaluate_folds
from dsc.ir.types import to_torch
from dsc.nn import random_checkpoint
from dsc.nn.checkpoint import moe_params_from_checkpoint


def checkpoint_params(cfg, layer: str, seed: int, dtype=torch.float32) -> dict:
    sd = random_checkpoint(cfg, layer, dtype, seed)
    return moe_params_from_checkpoint(cfg, sd)[0] if layer == "moe" else sd


def mla_inputs(cfg, batch: int, tokens: int, past: list[int], seed: int, dtype=torch.float32, page: int = 64):
    """A paged cache holding `past[b]` random tokens per row, pages shuffled across rows."""
    g = torch.Generator().manual_seed(seed)
    per_row = -(-(max(past) + tokens) // page)
    pages = torch.randn(batch * per_row + 1, page, cfg.latent_dim, generator=g).to(dtype)
    table = torch.randperm(batch * per_row + 1, generator=g)[: batch * per_row].view(batch, per_row).to(torch.int32)
    lens = torch.tensor(past, dtype=torch.int32)
    pos = (lens[:, None].to(torch.int64) + torch.arange(tokens)[None])
    x = torch.randn(batch, tokens, cfg.hidden_size, generator=g).to(dtype)
    return {"x": x, "positions": pos, "cache": pages, "block_table": table, "cache_seqlens": lens}


def moe_inputs(cfg, tokens: int, seed: int, dtype=torch.float32):
    return {"x": torch.randn(tokens, cfg.hidden_size, generator=torch.Generator().manual_seed(seed)).to(dtype)}


def run(g: Graph, inputs: dict, params: dict) -> dict:
    """Interpret g on copies of the inputs (paged_append updates its cache in place)."""
    fresh = {k: v.clone() for k, v in adapt_inputs(g, inputs).items()}
    return interpret(g, fresh, params)


def leaf_dtypes_ok(g: Graph, params: dict) -> bool:
    want = {p.name: to_torch(p.dtype) for p in g.checkpoint_params()}
    return all(params[k].dtype == d for k, d in want.items())


__all__ = ["checkpoint_params", "mla_inputs", "moe_inputs", "run", "evaluate_folds", "leaf_dtypes_ok"]


def adapt_inputs(g: Graph, inputs: dict) -> dict:
    """Inputs for g: a float latent cache is packed when g keeps an FP8 cache (fp8_kv)."""
    from dsc.ir.ops.fp8 import KvPackFp8

    cache = [n for n in g.inputs if n.name == "cache"]
    if not cache or cache[0].dtype.name != "u8" or inputs["cache"].dtype == torch.uint8:
        return inputs
    pack = [n for n in g.nodes() if n.op == "kv_pack_fp8"][0]
    return {**inputs, "cache": KvPackFp8().reference([inputs["cache"]], pack.attrs)}


def check_row_graph(graph, run, seed: int, batch: int, tokens: int, what: str) -> None:
    """A drawn row graph (strategies.row_graphs) on random inputs: run(g, inputs, params)
    against the interpreter. The kernels round to bf16 as the reference does (to nearest
    even); only float32 sums run in another order."""
    from util import BF16_TOL, assert_close

    g, dt, heads, width = graph
    gen = torch.Generator().manual_seed(seed)
    dtype = torch.float32 if dt == "f32" else torch.bfloat16
    inputs = {"wide": torch.randn(batch, tokens, heads, width + 3, generator=gen).to(dtype),
              "positions": torch.randint(0, 5000, (batch, tokens), generator=gen)}
    params = {"w": (1 + 0.3 * torch.randn(width, generator=gen)).to(dtype)}
    want = interpret(g, inputs, params)["out"]
    got = run(g, inputs, params)["out"]
    assert got.dtype == want.dtype and got.shape == want.shape
    if not want.any():  # a drawn graph that cancels to exact zeros (e.g. 2x + -2x): so must the kernel
        assert not got.any()
        return
    assert_close(got.float(), want.float(), 1e-5 if dt == "f32" else BF16_TOL / 4, what)
