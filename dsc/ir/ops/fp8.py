"""FP8 (float8_e4m3fn) with block scales, DeepSeek-V3's scheme.

Weights [..., N, K] carry one float32 scale per 128 x 128 tile (edge tiles partial);
activations one per token per 128 channels, computed at run time. A scale maps its
tile's largest magnitude to e4m3's largest finite value, 448, so the relative error
of each element is at most 2^-4 (three mantissa bits, round to nearest even). The
block-scaled matmuls dequantise exactly (q * s) and accumulate in float32, as the
tensor-core kernels do.
"""

from __future__ import annotations

import sympy
import torch
import torch.nn.functional as F

from dsc.ir.opdef import Attr, OpDef, register
from dsc.ir.ops.checks import dim_match, float_dtype, rank_at_least, rank_is
from dsc.ir.types import TensorType, f8e4m3, f32, u8

E4M3_MAX = 448.0
# Tiny floor for all-zero tiles, so their scale stays finite and their values zero.
MIN_AMAX = 1e-12


def _ceil(d, b: int):
    return (d + b - 1) // b if isinstance(d, int) else sympy.ceiling(sympy.sympify(d) / b)


def tile_amax(x: torch.Tensor, tile: tuple[int, int]) -> torch.Tensor:
    """max |x| per (tile[0] x tile[1]) tile of the last two dims: [..., ceil(N/a), ceil(K/b)]."""
    a, b = tile
    *lead, n, k = x.shape
    pn, pk = -n % a, -k % b
    xp = F.pad(x.float().abs(), (0, pk, 0, pn))
    xp = xp.reshape(*lead, (n + pn) // a, a, (k + pk) // b, b)
    return xp.amax(dim=(-3, -1))


def expand_tiles(s: torch.Tensor, tile: tuple[int, int], n: int, k: int) -> torch.Tensor:
    return s.repeat_interleave(tile[0], dim=-2)[..., :n, :].repeat_interleave(tile[1], dim=-1)[..., :k]


def tile_scales(x: torch.Tensor, tile: tuple[int, int]) -> torch.Tensor:
    return tile_amax(x, tile).clamp_min(MIN_AMAX) / E4M3_MAX


def quantize(x: torch.Tensor, s: torch.Tensor, tile: tuple[int, int]) -> torch.Tensor:
    full = expand_tiles(s, tile, x.shape[-2], x.shape[-1])
    return (x.float() / full).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)


def dequantize(q: torch.Tensor, s: torch.Tensor, tile: tuple[int, int]) -> torch.Tensor:
    return q.float() * expand_tiles(s, tile, q.shape[-2], q.shape[-1])


def fake_quant_rows(x: torch.Tensor, group: int) -> torch.Tensor:
    """x after a round trip through per-row, per-group FP8 (activation quantisation)."""
    flat = x.reshape(-1, x.shape[-1]).float()
    s = tile_scales(flat, (1, group))
    return dequantize(quantize(flat, s, (1, group)), s, (1, group)).reshape(x.shape)


def _tile(a: dict) -> tuple[int, int]:
    return (a["tile_n"], a["tile_k"])


@register
class Fp8Scale(OpDef):
    """Block scales of a weight: float32 [..., ceil(N / tile_n), ceil(K / tile_k)]."""

    name = "fp8_scale"
    operands = ("w",)
    attributes = {"tile_n": Attr("int", 128), "tile_k": Attr("int", 128)}

    def infer(self, srcs, a):
        w = srcs[0]
        rank_at_least(self, "w", w, 2)
        float_dtype(self, "w", w)
        return TensorType([*w.shape[:-2], _ceil(w.shape[-2], a["tile_n"]), _ceil(w.shape[-1], a["tile_k"])], f32)

    def reference(self, args, a):
        return tile_scales(args[0], _tile(a))


@register
class Fp8Quant(OpDef):
    """w / scale (per tile), saturated to +-448, as float8_e4m3fn."""

    name = "fp8_quant"
    operands = ("w", "scale")
    attributes = {"tile_n": Attr("int", 128), "tile_k": Attr("int", 128)}

    def infer(self, srcs, a):
        w, s = srcs
        want = Fp8Scale().infer([w], a)
        if s.shape != want.shape or s.dtype != f32:
            raise self.fail(f"scale must be {want} for {w}, got {s}")
        return w.with_dtype(f8e4m3)

    def reference(self, args, a):
        return quantize(args[0], args[1], _tile(a))


def _check_fp8_weight(op: OpDef, wq: TensorType, ws: TensorType, a: dict, grouped: bool) -> None:
    rank_is(op, "w", wq, 3 if grouped else 2)
    if wq.dtype != f8e4m3:
        raise op.fail(f"w must be f8e4m3, got {wq.dtype.name}")
    want = Fp8Scale().infer([wq.with_dtype(f32)], {"tile_n": a["block"], "tile_k": a["block"]})
    if ws.shape != want.shape or ws.dtype != f32:
        raise op.fail(f"w's scale must be {want}, got {ws}")


@register
class Fp8Linear(OpDef):
    """x[..., K] @ dequant(wq, ws)^T with block-scaled FP8 weights [N, K].

    act_quant=True (sm90: FP8 tensor cores) also quantises x per token per `block`
    channels, as DeepSeek-V3 does; False (sm80: weight-only FP8) keeps x as it is.
    Accumulates in float32; returns x's dtype.
    """

    name = "fp8_linear"
    operands = ("x", "wq", "ws")
    attributes = {"act_quant": Attr("bool"), "block": Attr("int", 128)}

    def infer(self, srcs, a):
        x, wq, ws = srcs
        rank_at_least(self, "x", x, 1)
        float_dtype(self, "x", x)
        _check_fp8_weight(self, wq, ws, a, grouped=False)
        dim_match(self, "w's in features", wq.shape[1], x.shape[-1])
        return x.with_shape([*x.shape[:-1], wq.shape[0]])

    def reference(self, args, a):
        x, wq, ws = args
        xf = fake_quant_rows(x, a["block"]) if a["act_quant"] else x.float()
        return F.linear(xf, dequantize(wq, ws, (a["block"], a["block"]))).to(x.dtype)

    def flops(self, srcs, out, a):
        return 2 * sympy.sympify(out.numel()) * srcs[0].shape[-1]


@register
class GroupedGemmFp8(OpDef):
    """grouped_gemm (see grouped.py) with block-scaled FP8 expert weights [E, N, K]."""

    name = "grouped_gemm_fp8"
    operands = ("a", "sorted", "ids", "wq", "ws", "route_w?")
    attributes = {"gather": Attr("bool"), "swiglu": Attr("bool", False), "act_quant": Attr("bool"),
                  "block": Attr("int", 128)}

    def infer(self, srcs, a):
        from dsc.ir.ops.grouped import GroupedGemm

        x, sorted_, ids, wq, ws = srcs[:5]
        _check_fp8_weight(self, wq, ws, a, grouped=True)
        plain = {"gather": a["gather"], "swiglu": a["swiglu"]}
        return GroupedGemm().infer([x, sorted_, ids, wq.with_dtype(x.dtype), *srcs[5:]], plain)

    def reference(self, args, a):
        from dsc.ir.ops.grouped import GroupedGemm

        x, sorted_, ids, wq, ws = args[:5]
        w = dequantize(wq, ws, (a["block"], a["block"]))
        xf = fake_quant_rows(x, a["block"]) if a["act_quant"] else x.float()
        out = GroupedGemm().reference([xf, sorted_, ids, w, *args[5:]], {"gather": a["gather"], "swiglu": a["swiglu"]})
        return out.to(x.dtype)

    def flops(self, srcs, out, a):
        return 2 * sympy.sympify(srcs[2].numel()) * srcs[3].shape[1] * srcs[3].shape[2]

    def bytes(self, srcs, out, a):
        from dsc.ir.ops.grouped import GroupedGemm

        x, sorted_, ids, wq, ws = srcs[:5]
        plain = GroupedGemm().bytes([x, sorted_, ids, wq, *srcs[5:]], out, {"gather": a["gather"]})
        e = wq.shape[0]
        return plain + sympy.Min(e, sympy.sympify(ids.numel())) * sympy.sympify(ws.nbytes()) / e


# -- the FP8 latent cache row, FlashMLA's layout -------------------------------------------

def packed_width(rank: int, rope: int, group: int) -> int:
    """Bytes per cached token: rank e4m3 values, rank / group float32 scales, rope bf16 values."""
    return rank + 4 * (rank // group) + 2 * rope


@register
class KvPackFp8(OpDef):
    """latent [..., rank + rope] -> bytes [..., rank + 4 rank/group + 2 rope]: c_kv in e4m3
    with one float32 scale per `group` values, then the scales, then k_pe in bf16 (656
    bytes for V3's 512 + 64, against 1152 in bf16)."""

    name = "kv_pack_fp8"
    operands = ("latent",)
    attributes = {"rank": Attr("int"), "group": Attr("int", 128)}

    def infer(self, srcs, a):
        x = srcs[0]
        float_dtype(self, "latent", x)
        r, g = a["rank"], a["group"]
        rope = x.shape[-1] - r
        if not isinstance(rope, int) or rope < 0 or r % g:
            raise self.fail(f"rank {r} must be a multiple of group {g} and fit in {x}")
        return TensorType([*x.shape[:-1], packed_width(r, rope, g)], u8)

    def reference(self, args, a):
        x = args[0]
        r, g = a["rank"], a["group"]
        lead = x.shape[:-1]
        c = x[..., :r].float().reshape(-1, r)
        s = tile_scales(c, (1, g))  # [rows, r / g]
        q = quantize(c, s, (1, g))
        parts = [q.view(torch.uint8), s.contiguous().view(torch.uint8),
                 x[..., r:].to(torch.bfloat16).reshape(c.shape[0], -1).contiguous().view(torch.uint8)]
        return torch.cat(parts, dim=-1).reshape(*lead, -1)

    def flops(self, srcs, out, a):
        return 3 * sympy.sympify(srcs[0].numel())


@register
class KvUnpackFp8(OpDef):
    """The inverse of kv_pack_fp8: bytes -> latent [..., rank + rope] in `dtype`."""

    name = "kv_unpack_fp8"
    operands = ("packed",)
    attributes = {"rank": Attr("int"), "group": Attr("int", 128), "dtype": Attr("dtype")}

    def infer(self, srcs, a):
        p = srcs[0]
        if p.dtype != u8:
            raise self.fail(f"packed rows must be u8, got {p.dtype.name}")
        r, g = a["rank"], a["group"]
        rest = p.shape[-1] - r - 4 * (r // g)
        if not isinstance(rest, int) or rest < 0 or rest % 2 or r % g:
            raise self.fail(f"row width {p.shape[-1]} does not hold rank {r} in groups of {g}")
        return TensorType([*p.shape[:-1], r + rest // 2], a["dtype"])

    def reference(self, args, a):
        from dsc.ir.types import DTYPES, to_torch

        p = args[0]
        r, g = a["rank"], a["group"]
        lead = p.shape[:-1]
        rows = p.reshape(-1, p.shape[-1]).contiguous()
        q = rows[:, :r].contiguous().view(torch.float8_e4m3fn)
        s = rows[:, r:r + 4 * (r // g)].contiguous().view(torch.float32)
        rope = rows[:, r + 4 * (r // g):].contiguous().view(torch.bfloat16)
        c = dequantize(q, s, (1, g))
        out = torch.cat([c, rope.float()], dim=-1).to(to_torch(DTYPES[a["dtype"]]))
        return out.reshape(*lead, -1)

    def flops(self, srcs, out, a):
        return 2 * sympy.sympify(out.numel())

