"""The paged latent cache: a pool of fixed-size pages of per-token rows.

cache [NB, PS, D] holds NB pages of PS tokens; row b of a batch owns the pages listed
in block_table[b] (as vLLM and FlashMLA lay it out), and cache_seqlens[b] says how many
of its tokens are filled. For MLA a row is one token's latent: c_kv then the roped k_pe.
"""

from __future__ import annotations

import sympy
import torch

from dsc.errors import CacheError
from dsc.ir.opdef import OpDef, register
from dsc.ir.ops.checks import dim_match, int_dtype, rank_is, same_dtype


def _check_table(op: OpDef, cache, table, seqlens=None):
    rank_is(op, "cache", cache, 3)
    rank_is(op, "block_table", table, 2)
    int_dtype(op, "block_table", table)
    if seqlens is not None:
        rank_is(op, "cache_seqlens", seqlens, 1)
        int_dtype(op, "cache_seqlens", seqlens)
        dim_match(op, "cache_seqlens' batch dim", seqlens.shape[0], table.shape[0])


@register
class PagedAppend(OpDef):
    """Write new [B, T, D] after each row's cached tokens; returns the updated cache.

    The op consumes its cache operand (the verifier checks that nothing else reads the
    old value), which lets every implementation update the pages in place.
    """

    name = "paged_append"
    operands = ("cache", "block_table", "cache_seqlens", "new")

    def infer(self, srcs, a):
        cache, table, seqlens, new = srcs
        _check_table(self, cache, table, seqlens)
        rank_is(self, "new", new, 3)
        same_dtype(self, cache, new)
        dim_match(self, "new's batch dim", new.shape[0], table.shape[0])
        dim_match(self, "new's row width", new.shape[2], cache.shape[2])
        return cache

    def reference(self, args, a):
        cache, table, seqlens, new = args
        page = cache.shape[1]
        idx = seqlens.to(torch.int64)[:, None] + torch.arange(new.shape[1], device=new.device)
        capacity = table.shape[1] * page
        if new.shape[1] and int(idx.max()) >= capacity:
            raise CacheError(f"paged_append: a row would hold {int(idx.max()) + 1} tokens, "
                             f"its block table holds {capacity}")
        blocks = table.to(torch.int64).gather(1, idx // page)
        cache[blocks, idx % page] = new.to(cache.dtype)
        return cache

    def bytes(self, srcs, out, a):
        new = srcs[3]
        return 2 * sympy.sympify(new.nbytes())


@register
class PagedGather(OpDef):
    """Every row's pages laid out contiguously: [B, P * PS, D] (valid up to its length)."""

    name = "paged_gather"
    operands = ("cache", "block_table")

    def infer(self, srcs, a):
        cache, table = srcs
        _check_table(self, cache, table)
        return cache.with_shape([table.shape[0], table.shape[1] * cache.shape[1], cache.shape[2]])

    def reference(self, args, a):
        cache, table = args
        b, p = table.shape
        return cache[table.to(torch.int64)].reshape(b, p * cache.shape[1], cache.shape[2])

    def bytes(self, srcs, out, a):
        return 2 * sympy.sympify(out.nbytes()) + sympy.sympify(srcs[1].nbytes())  # only the listed pages
