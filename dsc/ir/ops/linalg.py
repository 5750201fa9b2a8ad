"""Matrix work and normalisation: linear, einsum, rms_norm."""

from __future__ import annotations

import re

import sympy
import torch
import torch.nn.functional as F

from dsc.ir.opdef import Attr, OpDef, prod, register
from dsc.ir.ops.checks import dim_match, float_dtype, rank_at_least, rank_is, same_dtype
from dsc.ir.types import TensorType, dims_equal


@register
class Linear(OpDef):
    """x[..., K] @ w[N, K]^T -> [..., N]: the nn.Linear layout of checkpoint weights."""

    name = "linear"
    operands = ("x", "w")

    def infer(self, srcs, a):
        x, w = srcs
        rank_at_least(self, "x", x, 1)
        rank_is(self, "w", w, 2)
        same_dtype(self, x, w)
        float_dtype(self, "x", x)
        dim_match(self, "w.shape[1] (in features)", w.shape[1], x.shape[-1])
        return x.with_shape([*x.shape[:-1], w.shape[0]])

    def reference(self, args, a):
        return F.linear(args[0], args[1])

    def flops(self, srcs, out, a):
        return 2 * sympy.sympify(out.numel()) * srcs[0].shape[-1]


_EINSUM = re.compile(r"^([a-z]+(?:,[a-z]+)*)->([a-z]*)$")


@register
class Einsum(OpDef):
    """A contraction named by an einsum spec over lower-case letters (no ellipsis)."""

    name = "einsum"
    operands = ("xs*",)
    attributes = {"spec": Attr("str")}

    def _parse(self, spec: str, n: int):
        m = _EINSUM.match(spec.replace(" ", ""))
        if not m:
            raise self.fail(f"spec {spec!r} is not of the form 'ab,bc->ac'")
        ins, out = m.group(1).split(","), m.group(2)
        if len(ins) != n:
            raise self.fail(f"spec {spec!r} names {len(ins)} operands, got {n}")
        if len(set(out)) != len(out) or set(out) - set("".join(ins)):
            raise self.fail(f"spec {spec!r}: output letters must be distinct and appear in an input")
        return ins, out

    def infer(self, srcs, a):
        ins, out = self._parse(a["spec"], len(srcs))
        sizes: dict[str, object] = {}
        for labels, t in zip(ins, srcs):
            same_dtype(self, srcs[0], t)
            if len(labels) != t.rank:
                raise self.fail(f"operand {t} has rank {t.rank}, spec gives {labels!r}")
            for c, d in zip(labels, t.shape):
                if c in sizes and not dims_equal(sizes[c], d):
                    raise self.fail(f"index {c!r} is {sizes[c]} in one operand and {d} in another")
                sizes.setdefault(c, d)
        return TensorType([sizes[c] for c in out], srcs[0].dtype)

    def reference(self, args, a):
        return torch.einsum(a["spec"], *args)

    def flops(self, srcs, out, a):
        ins, _ = self._parse(a["spec"], len(srcs))
        sizes = {}
        for labels, t in zip(ins, srcs):
            sizes.update(zip(labels, t.shape))
        return 2 * prod(sizes.values())


@register
class RmsNorm(OpDef):
    """DeepSeek's RMSNorm: normalise in float32, cast back, then scale by the weight."""

    name = "rms_norm"
    row_wise = True
    operands = ("x", "w")
    attributes = {"eps": Attr("float")}

    def infer(self, srcs, a):
        x, w = srcs
        float_dtype(self, "x", x)
        rank_is(self, "w", w, 1)
        same_dtype(self, x, w)
        dim_match(self, "w.shape[0]", w.shape[0], x.shape[-1])
        return x

    def reference(self, args, a):
        x, w = args
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + a["eps"])
        return w * h.to(x.dtype)

    def flops(self, srcs, out, a):
        return 4 * sympy.sympify(out.numel())
