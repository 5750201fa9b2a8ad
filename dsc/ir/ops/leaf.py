"""Leaves: runtime inputs and weights (params). Their type comes from their attributes."""

from __future__ import annotations

from dsc.ir.opdef import Attr, OpDef, register
from dsc.ir.types import TensorType


class _Leaf(OpDef):
    operands = ()
    attributes = {"name": Attr("str"), "shape": Attr("dims"), "dtype": Attr("dtype")}

    def infer(self, srcs, a):
        return TensorType(a["shape"], a["dtype"])

    def reference(self, args, a):  # pragma: no cover - the interpreter binds leaves
        raise AssertionError("leaves are bound by the interpreter")

    def bytes(self, srcs, out, a):
        return 0


@register
class Input(_Leaf):
    """A tensor that changes from call to call (activations, positions, the cache)."""

    name = "input"


@register
class Param(_Leaf):
    """A weight: fixed once loaded, so work on params alone can be folded ahead of time."""

    name = "param"
