"""Tensor types of the IR: a dtype and a shape whose dims are ints or sympy expressions.

Symbolic dims (B, T, P, ...) let one graph serve every batch size and sequence length;
the interpreter binds them from the actual input shapes, and the cost model keeps them
symbolic so a pass can reason about decode versus prefill.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Union

import sympy

from dsc.errors import IRError

Dim = Union[int, sympy.Expr]


@dataclass(frozen=True)
class DType:
    name: str  # the short name printed in IR text: f32, bf16, f8e4m3, i64, ...
    torch_name: str  # attribute of the torch module
    itemsize: int
    is_float: bool


DTYPES: dict[str, DType] = {d.name: d for d in (
    DType("f32", "float32", 4, True),
    DType("f16", "float16", 2, True),
    DType("bf16", "bfloat16", 2, True),
    DType("f8e4m3", "float8_e4m3fn", 1, True),
    DType("f8e5m2", "float8_e5m2", 1, True),
    DType("i64", "int64", 8, False),
    DType("i32", "int32", 4, False),
    DType("bool", "bool", 1, False),
    DType("u8", "uint8", 1, False),  # raw bytes: packed cache rows (FP8 latent + scales + bf16 rope)
)}
f32, f16, bf16 = DTYPES["f32"], DTYPES["f16"], DTYPES["bf16"]
f8e4m3, f8e5m2 = DTYPES["f8e4m3"], DTYPES["f8e5m2"]
i64, i32, boolean, u8 = DTYPES["i64"], DTYPES["i32"], DTYPES["bool"], DTYPES["u8"]


def dtype(name_or_torch) -> DType:
    """The IR dtype for a short name ('bf16') or a torch dtype (torch.bfloat16)."""
    if isinstance(name_or_torch, DType):
        return name_or_torch
    name = str(name_or_torch).removeprefix("torch.")
    if name in DTYPES:
        return DTYPES[name]
    for d in DTYPES.values():
        if d.torch_name == name:
            return d
    raise IRError(f"unknown dtype {name_or_torch!r}; known: {', '.join(DTYPES)}")


def to_torch(d: DType):
    import torch

    return getattr(torch, d.torch_name)


def sym(name: str) -> sympy.Symbol:
    """A symbolic dim; sizes are positive integers, which lets sympy simplify."""
    return sympy.Symbol(name, positive=True, integer=True)


def as_dim(d) -> Dim:
    if isinstance(d, bool):
        raise IRError(f"a dim must be an int or a symbol, got {d!r}")
    if isinstance(d, int):
        if d < 0:
            raise IRError(f"a dim must be non-negative, got {d}")
        return d
    if isinstance(d, sympy.Basic):
        e = sympy.sympify(d)
        return int(e) if e.is_Integer else e
    raise IRError(f"a dim must be an int or a sympy expression, got {type(d).__name__}")


def dims_equal(a: Dim, b: Dim) -> bool:
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    return sympy.simplify(sympy.sympify(a) - sympy.sympify(b)) == 0


@dataclass(frozen=True)
class TensorType:
    shape: tuple[Dim, ...]
    dtype: DType

    def __init__(self, shape: Iterable, dtype_: DType | str):
        object.__setattr__(self, "shape", tuple(as_dim(d) for d in shape))
        object.__setattr__(self, "dtype", dtype(dtype_))

    @property
    def rank(self) -> int:
        return len(self.shape)

    def numel(self) -> Dim:
        n = sympy.Integer(1)
        for d in self.shape:
            n = n * d
        return as_dim(sympy.expand(n))

    def nbytes(self) -> Dim:
        return as_dim(sympy.expand(sympy.sympify(self.numel()) * self.dtype.itemsize))

    def with_dtype(self, d) -> "TensorType":
        return TensorType(self.shape, dtype(d))

    def with_shape(self, shape) -> "TensorType":
        return TensorType(shape, self.dtype)

    def __str__(self) -> str:
        return f"{self.dtype.name}[{', '.join(str(d) for d in self.shape)}]"
