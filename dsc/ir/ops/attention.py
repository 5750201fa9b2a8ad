"""Causal attention of new tokens over a row's cache (which already holds them)."""

from __future__ import annotations

import sympy
import torch

from dsc.ir.opdef import Attr, OpDef, register
from dsc.ir.ops.checks import dim_match, float_dtype, int_dtype, rank_is, same_dtype


@register
class Attention(OpDef):
    """softmax(scale * q k^T) v with q [B, T, H, Dk], k [B, S, Hk, Dk], v [B, S, Hk, Dv].

    Hk is H or 1 (one latent head shared by all query heads, as absorbed MLA reads it).
    Token t of row b sits at cache index cache_seqlens[b] + t and attends to indices
    0..cache_seqlens[b] + t, so rows of one batch may hold different lengths and cache
    slots past a row's length are never read. Softmax runs in float32.
    """

    name = "attention"
    operands = ("q", "k", "v", "cache_seqlens")
    attributes = {"scale": Attr("float")}

    def infer(self, srcs, a):
        q, k, v, seqlens = srcs
        for what, t in (("q", q), ("k", k), ("v", v)):
            rank_is(self, what, t, 4)
        float_dtype(self, "q", q)
        same_dtype(self, q, k)
        same_dtype(self, q, v)
        rank_is(self, "cache_seqlens", seqlens, 1)
        int_dtype(self, "cache_seqlens", seqlens)
        for what, t in (("k", k), ("v", v), ("cache_seqlens", seqlens)):
            dim_match(self, f"{what}'s batch dim", t.shape[0], q.shape[0])
        dim_match(self, "v's sequence dim", v.shape[1], k.shape[1])
        dim_match(self, "k's head width", k.shape[3], q.shape[3])
        if k.shape[2] != 1:
            dim_match(self, "k's head count (1 or q's)", k.shape[2], q.shape[2])
        dim_match(self, "v's head count", v.shape[2], k.shape[2])
        return q.with_shape([*q.shape[:3], v.shape[3]])

    def reference(self, args, a):
        q, k, v, seqlens = args
        t, s = q.shape[1], k.shape[1]
        scores = torch.einsum("bthd,bshd->bhts", q.float(), k.float().expand(-1, -1, q.shape[2], -1))
        limit = seqlens.to(torch.int64)[:, None] + torch.arange(t, device=q.device)  # [B, T]
        visible = torch.arange(s, device=q.device)[None, None, :] <= limit[:, :, None]  # [B, T, S]
        scores = scores * a["scale"]
        scores = scores.masked_fill(~visible[:, None], float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        out = torch.einsum("bhts,bshd->bthd", probs, v.float().expand(-1, -1, q.shape[2], -1))
        return out.to(q.dtype)

    def flops(self, srcs, out, a):
        q, k, v, _ = srcs
        b, t, h, dk = q.shape
        return 2 * sympy.sympify(b) * t * h * k.shape[1] * (dk + v.shape[3])
