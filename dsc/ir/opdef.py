"""Declared ops: each op is one class with its operands, attributes, verifier,
PyTorch reference implementation and cost (xDSL-style).

The printer, parser, verifier, interpreter and cost model are generic over these
declarations, so adding an op is adding one class to a file under dsc/ir/ops/.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import sympy

from dsc.errors import IRError
from dsc.ir.types import DTYPES, TensorType, as_dim

_REQUIRED = object()


@dataclass(frozen=True)
class Attr:
    """An attribute declaration: its kind, default, and allowed values."""

    kind: str  # int, float, bool, str, dtype, dims, ints
    default: Any = _REQUIRED
    choices: tuple | None = None

    def coerce(self, op: str, name: str, v: Any) -> Any:
        def bad(why: str):
            return IRError(f"{op}: attribute {name} {why}, got {v!r}")

        k = self.kind
        if k == "float":
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise bad("must be a number")
            v = float(v)
        elif k == "int":
            if isinstance(v, bool) or not isinstance(v, int):
                raise bad("must be an int")
        elif k == "bool":
            if not isinstance(v, bool):
                raise bad("must be a bool")
        elif k == "str":
            if not isinstance(v, str):
                raise bad("must be a string")
        elif k == "dtype":
            if hasattr(v, "name") and getattr(v, "name", None) in DTYPES:
                v = v.name
            if v not in DTYPES:
                raise bad(f"must be a dtype ({', '.join(DTYPES)})")
        elif k == "ints":
            if not isinstance(v, (list, tuple)) or any(isinstance(x, bool) or not isinstance(x, int) for x in v):
                raise bad("must be a list of ints")
            v = tuple(v)
        elif k == "dims":
            if not isinstance(v, (list, tuple)):
                raise bad("must be a list of dims")
            v = tuple(as_dim(x) for x in v)
        else:  # pragma: no cover - a declaration bug
            raise AssertionError(f"unknown attr kind {k}")
        if self.choices is not None and v not in self.choices:
            raise bad(f"must be one of {', '.join(map(str, self.choices))}")
        return v


@dataclass(frozen=True)
class Cost:
    """Work of one op as sympy expressions of the graph's symbolic dims."""

    flops: Any
    bytes: Any


class OpDef:
    name: ClassVar[str]
    # Operand names; a trailing "*" marks a variadic last operand, "?" an optional one.
    operands: ClassVar[tuple[str, ...]] = ()
    attributes: ClassVar[dict[str, Attr]] = {}
    # Each output row is a function of the same row of its operands (concat: along the last
    # axis), so the row kernels may fuse it; each backend's row emitter has one entry for it.
    row_wise: ClassVar[bool] = False

    # -- declared behaviour: subclasses override ------------------------------------------
    def infer(self, srcs: Sequence[TensorType], a: dict) -> TensorType:
        raise NotImplementedError

    def reference(self, args: list, a: dict):
        raise NotImplementedError

    def flops(self, srcs: Sequence[TensorType], out: TensorType, a: dict):
        return 0

    def bytes(self, srcs: Sequence[TensorType], out: TensorType, a: dict):
        total = sympy.sympify(out.nbytes())
        for s in srcs:
            total += sympy.sympify(s.nbytes())
        return total

    # -- generic machinery -----------------------------------------------------------------
    def check_attrs(self, attrs: dict) -> dict:
        unknown = set(attrs) - set(self.attributes)
        if unknown:
            raise IRError(f"{self.name}: unknown attribute(s) {', '.join(sorted(unknown))}"
                          f" (declared: {', '.join(self.attributes) or 'none'})")
        out = {}
        for k, spec in self.attributes.items():
            if k in attrs:
                out[k] = spec.coerce(self.name, k, attrs[k])
            elif spec.default is _REQUIRED:
                raise IRError(f"{self.name}: missing attribute {k}")
            else:
                out[k] = spec.default
        return out

    def arity_ok(self, n: int) -> bool:
        fixed = [o for o in self.operands if not o.endswith(("*", "?"))]
        if self.operands and self.operands[-1].endswith("*"):
            return n >= len(fixed) + 1
        optional = sum(o.endswith("?") for o in self.operands)
        return len(fixed) <= n <= len(fixed) + optional

    def verify(self, srcs: Sequence, attrs: dict) -> TensorType:
        if not self.arity_ok(len(srcs)):
            raise IRError(f"{self.name}: expected operands ({', '.join(self.operands)}), got {len(srcs)}")
        return self.infer([s.type for s in srcs], attrs)

    def cost(self, srcs: Sequence[TensorType], out: TensorType, a: dict) -> Cost:
        return Cost(sympy.sympify(self.flops(srcs, out, a)), sympy.sympify(self.bytes(srcs, out, a)))

    def fail(self, why: str) -> IRError:
        return IRError(f"{self.name}: {why}")


OPS: dict[str, OpDef] = {}


def register(cls: type[OpDef]) -> type[OpDef]:
    if cls.name in OPS:
        raise AssertionError(f"op {cls.name} declared twice")
    OPS[cls.name] = cls()
    return cls


def get_op(name: str) -> OpDef:
    import dsc.ir.ops  # noqa: F401  (declares every op)

    try:
        return OPS[name]
    except KeyError:
        raise IRError(f"unknown op {name!r}") from None


def prod(dims) -> Any:
    return math.prod(sympy.sympify(d) for d in dims) if dims else sympy.Integer(1)
