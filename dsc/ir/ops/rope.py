"""Rotary position embedding with DeepSeek's YaRN frequencies.

`interleave=True` rotates adjacent pairs (x0, x1), (x2, x3), ... as DeepSeek's
checkpoints store them, and writes the result de-interleaved (all first elements of
the pairs, then all second ones), exactly as DeepSeek's and HF's code do. Queries and
keys go through the same permutation, so their dot products are unchanged; the cache
holds keys in this layout. `interleave=False` rotates the two halves (rotate_half).
"""

from __future__ import annotations

import math

import sympy
import torch

from dsc.ir.opdef import Attr, OpDef, register
from dsc.ir.ops.checks import dim_match, float_dtype, int_dtype, rank_at_least, rank_is


def yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    """YaRN's attention-temperature factor (DeepSeek's `yarn_get_mscale`)."""
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


def rope_inv_freq(dim: int, theta: float, factor: float, original_max: int, beta_fast: float,
                  beta_slow: float) -> torch.Tensor:
    """Per-pair inverse frequencies [dim // 2] in float32; factor 1 is plain RoPE."""
    exponents = torch.arange(0, dim, 2, dtype=torch.float32) / dim
    freq_extra = 1.0 / (theta ** exponents)
    if factor <= 1.0:
        return freq_extra
    freq_inter = 1.0 / (factor * theta ** exponents)

    def correction_dim(rotations: float) -> float:
        return (dim * math.log(original_max / (rotations * 2 * math.pi))) / (2 * math.log(theta))

    low = max(math.floor(correction_dim(beta_fast)), 0)
    high = min(math.ceil(correction_dim(beta_slow)), dim - 1)
    if low == high:
        high += 0.001  # avoid a zero-width ramp
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    extra_mask = 1.0 - ramp  # 1 keeps the original (high) frequency, 0 interpolates
    return freq_inter * (1 - extra_mask) + freq_extra * extra_mask


def rope_tables(dim: int, a: dict) -> tuple[torch.Tensor, float]:
    """(inverse frequencies [dim // 2], cos/sin scale) for a rope op's attributes
    (`dsc.builders.mla.rope_attrs(cfg)` gives them for a config)."""
    inv_freq = rope_inv_freq(dim, a["theta"], a.get("factor", 1.0), a.get("original_max", 4096),
                             a.get("beta_fast", 32.0), a.get("beta_slow", 1.0))
    factor = a.get("factor", 1.0)
    return inv_freq, yarn_mscale(factor, a.get("mscale", 1.0)) / yarn_mscale(factor, a.get("mscale_all_dim", 0.0))


@register
class Rope(OpDef):
    """x [B, T, ..., D] rotated by positions [B, T]."""

    name = "rope"
    row_wise = True
    operands = ("x", "positions")
    attributes = {
        "theta": Attr("float"),
        "interleave": Attr("bool"),
        "factor": Attr("float", 1.0),
        "original_max": Attr("int", 4096),
        "beta_fast": Attr("float", 32.0),
        "beta_slow": Attr("float", 1.0),
        "mscale": Attr("float", 1.0),
        "mscale_all_dim": Attr("float", 0.0),
    }

    def infer(self, srcs, a):
        x, pos = srcs
        float_dtype(self, "x", x)
        int_dtype(self, "positions", pos)
        rank_at_least(self, "x", x, 3)
        rank_is(self, "positions", pos, 2)
        dim_match(self, "positions' batch dim", pos.shape[0], x.shape[0])
        dim_match(self, "positions' token dim", pos.shape[1], x.shape[1])
        d = x.shape[-1]
        if not isinstance(d, int) or d % 2:
            raise self.fail(f"the rotated dim must be an even int, got {d}")
        return x

    def reference(self, args, a):
        x, pos = args
        d = x.shape[-1]
        inv_freq, m = rope_tables(d, a)
        freqs = pos.to(torch.float32)[..., None] * inv_freq.to(x.device)  # [B, T, D/2]
        cos, sin = freqs.cos() * m, freqs.sin() * m
        for _ in range(x.dim() - 3):  # broadcast over head dims between T and D
            cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)
        xf = x.float()
        if a["interleave"]:
            x1, x2 = xf[..., 0::2], xf[..., 1::2]
        else:
            x1, x2 = xf[..., : d // 2], xf[..., d // 2:]
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)

    def flops(self, srcs, out, a):
        return 3 * sympy.sympify(out.numel())
