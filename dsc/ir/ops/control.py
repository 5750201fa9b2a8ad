"""dispatch: choose between two computations of one value by a symbolic size.

`dispatch(a, b) {symbol="T", le=170}` is a if T <= 170 else b. Only the chosen branch
runs (the interpreter and the runtime evaluate lazily). It is how one graph serves
decode and short prefill with one form of a layer and long prefill with another.
"""

from __future__ import annotations

from dsc.ir.opdef import Attr, OpDef, register
from dsc.ir.types import sym


@register
class Dispatch(OpDef):
    name = "dispatch"
    operands = ("if_le", "otherwise")
    attributes = {"symbol": Attr("str"), "le": Attr("int")}

    def infer(self, srcs, a):
        x, y = srcs
        if x != y:
            raise self.fail(f"both branches must have one type, got {x} and {y}")
        return x  # the symbol may be a dim the result does not show (T of the queries)

    def reference(self, args, a):  # pragma: no cover - the interpreter picks a branch
        raise AssertionError("dispatch is evaluated lazily by the interpreter")

    def bytes(self, srcs, out, a):
        return 0

    @staticmethod
    def choose(attrs: dict, env: dict) -> int:
        """0 for the first operand, 1 for the second, given symbol bindings."""
        value = env.get(sym(attrs["symbol"]))
        if value is None:
            raise KeyError(attrs["symbol"])
        return 0 if value <= attrs["le"] else 1
