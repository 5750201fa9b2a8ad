"""A dsc layer's whole call as one torch custom op, so that torch.compile(fullgraph=True)
traces dsc.nn.MLA and dsc.nn.MoE without a graph break.

Inside, a layer runs host code dynamo cannot trace (kernel launches, the Triton
interpreter or TVM functions, the cache's room check reading lengths on the host), so
the modules hand the call to `dsc::mla_layer` / `dsc::moe_layer`, opaque to the
compiler and described to it by a fake implementation. The module is found by a key
(vLLM finds its attention layers by name the same way); its weights travel as tensor
arguments, so the traced graph sees every tensor the op reads. The latent cache's pages
and lengths are declared mutated: the op appends the new latents and advances the
lengths in place. Outside torch.compile the modules call run_mla / run_moe directly:
the dispatcher's round trip costs tens of microseconds a call on a CPU host.
"""

from __future__ import annotations

import itertools
import weakref

import torch
from torch import Tensor

from dsc.errors import DscError
from dsc.nn.latent_cache import check_call

_LIVE: "weakref.WeakValueDictionary[str, torch.nn.Module]" = weakref.WeakValueDictionary()
_NEXT = itertools.count()


def register(module: torch.nn.Module) -> str:
    """A key under which the layer ops find `module` (held weakly: it dies with the module)."""
    key = f"{type(module).__name__}#{next(_NEXT)}"
    _LIVE[key] = module
    return key


def _module(key: str):
    module = _LIVE.get(key)
    if module is None:
        raise DscError(f"dsc layer op: no live module {key!r} (it was freed)")
    return module


def run_mla(x: Tensor, positions: Tensor, kv_cache: Tensor, block_table: Tensor, cache_seqlens: Tensor,
            weights: list[Tensor], module: str, max_seq_len: int) -> Tensor:
    """One dsc.nn.MLA call: T new tokens per row attend to the cache and are appended."""
    mla = _module(module)
    new = x.shape[1]
    check_call(kv_cache, block_table, cache_seqlens, max_seq_len, new)
    out = mla._execute({"x": x, "positions": positions, "cache": kv_cache, "block_table": block_table,
                        "cache_seqlens": cache_seqlens}, weights)
    if out["cache"] is not kv_cache:  # the reference interpreter appends out of place
        kv_cache.copy_(out["cache"])
    cache_seqlens += new
    return out["out"]


mla_layer = torch.library.custom_op("dsc::mla_layer", run_mla, mutates_args=("kv_cache", "cache_seqlens"))


@mla_layer.register_fake
def _(x, positions, kv_cache, block_table, cache_seqlens, weights, module, max_seq_len):
    return torch.empty_like(x)


def run_moe(x: Tensor, weights: list[Tensor], module: str) -> Tensor:
    """One dsc.nn.MoE call on x [N, hidden]."""
    return _module(module)._execute({"x": x}, weights)["out"]


moe_layer = torch.library.custom_op("dsc::moe_layer", run_moe, mutates_args=())


@moe_layer.register_fake
def _(x, weights, module):
    return torch.empty_like(x)
