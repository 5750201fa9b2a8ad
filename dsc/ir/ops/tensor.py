"""Layout and elementwise ops: cast, reshape, slice, concat, expand, permute, add, mul,
scale, silu."""

from __future__ import annotations

import sympy
import torch
import torch.nn.functional as F

from dsc.ir.opdef import Attr, OpDef, register
from dsc.ir.ops.checks import dim_match, float_dtype, norm_axis, same_dtype
from dsc.ir.types import dims_equal, to_torch


@register
class Cast(OpDef):
    name = "cast"
    row_wise = True
    operands = ("x",)
    attributes = {"dtype": Attr("dtype")}

    def infer(self, srcs, a):
        return srcs[0].with_dtype(a["dtype"])

    def reference(self, args, a):
        from dsc.ir.types import DTYPES

        return args[0].to(to_torch(DTYPES[a["dtype"]]))


@register
class Reshape(OpDef):
    name = "reshape"
    operands = ("x",)
    attributes = {"shape": Attr("dims")}

    def infer(self, srcs, a):
        out = srcs[0].with_shape(a["shape"])
        if not dims_equal(srcs[0].numel(), out.numel()):
            raise self.fail(f"cannot reshape {srcs[0]} to {list(out.shape)}: element counts differ")
        return out

    def reference(self, args, a):
        return args[0].reshape(a["shape"])  # the interpreter hands "dims" attrs over as ints

    def bytes(self, srcs, out, a):
        return 0  # a view


@register
class Slice(OpDef):
    name = "slice"
    operands = ("x",)
    attributes = {"axis": Attr("int"), "start": Attr("int"), "stop": Attr("int")}

    def infer(self, srcs, a):
        x = srcs[0]
        ax = norm_axis(self, a["axis"], x.rank)
        size = x.shape[ax]
        if not 0 <= a["start"] < a["stop"] or (isinstance(size, int) and a["stop"] > size):
            raise self.fail(f"[{a['start']}:{a['stop']}] is not a non-empty range inside dim {ax} of {x}")
        shape = list(x.shape)
        shape[ax] = a["stop"] - a["start"]
        return x.with_shape(shape)

    def reference(self, args, a):
        x = args[0]
        return x.narrow(a["axis"] % x.dim(), a["start"], a["stop"] - a["start"])

    def bytes(self, srcs, out, a):
        return 0  # a view


@register
class Concat(OpDef):
    name = "concat"
    row_wise = True
    operands = ("xs*",)
    attributes = {"axis": Attr("int")}

    def infer(self, srcs, a):
        first = srcs[0]
        ax = norm_axis(self, a["axis"], first.rank)
        total = sympy.Integer(0)
        for s in srcs:
            same_dtype(self, first, s)
            if s.rank != first.rank:
                raise self.fail(f"operand ranks differ: {first} and {s}")
            for i, (d0, d) in enumerate(zip(first.shape, s.shape)):
                if i != ax:
                    dim_match(self, f"dim {i} of every operand", d, d0)
            total += s.shape[ax]
        shape = list(first.shape)
        shape[ax] = total
        return first.with_shape(shape)

    def reference(self, args, a):
        return torch.cat(args, dim=a["axis"])


@register
class Expand(OpDef):
    """Broadcast size-1 dims to the given shape (a view, no copy)."""

    name = "expand"
    operands = ("x",)
    attributes = {"shape": Attr("dims")}

    def infer(self, srcs, a):
        x, shape = srcs[0], a["shape"]
        if len(shape) != x.rank:
            raise self.fail(f"target rank {len(shape)} differs from {x}")
        for i, (d, t) in enumerate(zip(x.shape, shape)):
            if d != 1 and not dims_equal(d, t):
                raise self.fail(f"dim {i} of {x} is neither 1 nor {t}")
        return x.with_shape(shape)

    def reference(self, args, a):
        return args[0].expand(a["shape"])

    def bytes(self, srcs, out, a):
        return 0


@register
class Permute(OpDef):
    name = "permute"
    operands = ("x",)
    attributes = {"perm": Attr("ints")}

    def infer(self, srcs, a):
        x, perm = srcs[0], a["perm"]
        if sorted(perm) != list(range(x.rank)):
            raise self.fail(f"perm {list(perm)} is not a permutation of the {x.rank} dims of {x}")
        return x.with_shape([x.shape[p] for p in perm])

    def reference(self, args, a):
        return args[0].permute(*a["perm"])


class _Binary(OpDef):
    operands = ("x", "y")
    fn = None

    def infer(self, srcs, a):
        x, y = srcs
        same_dtype(self, x, y)
        if x.rank != y.rank:
            raise self.fail(f"operand ranks differ: {x} and {y}")
        shape = []
        for i, (dx, dy) in enumerate(zip(x.shape, y.shape)):
            if dx == 1:
                shape.append(dy)
            elif dy == 1 or dims_equal(dx, dy):
                shape.append(dx)
            else:
                raise self.fail(f"dim {i} does not broadcast: {x} and {y}")
        return x.with_shape(shape)

    def reference(self, args, a):
        return type(self).fn(*args)

    def flops(self, srcs, out, a):
        return out.numel()


@register
class Add(_Binary):
    name = "add"
    row_wise = True
    fn = staticmethod(torch.add)


@register
class Mul(_Binary):
    name = "mul"
    row_wise = True
    fn = staticmethod(torch.mul)


@register
class Scale(OpDef):
    """x * factor, a compile-time constant (softmax scales, routed_scaling_factor)."""

    name = "scale"
    row_wise = True
    operands = ("x",)
    attributes = {"factor": Attr("float")}

    def infer(self, srcs, a):
        float_dtype(self, "x", srcs[0])
        return srcs[0]

    def reference(self, args, a):
        return args[0] * a["factor"]

    def flops(self, srcs, out, a):
        return out.numel()


@register
class Silu(OpDef):
    name = "silu"
    row_wise = True
    operands = ("x",)

    def infer(self, srcs, a):
        float_dtype(self, "x", srcs[0])
        return srcs[0]

    def reference(self, args, a):
        return F.silu(args[0])

    def flops(self, srcs, out, a):
        return 4 * sympy.sympify(out.numel())
