"""Shape checks shared by the op verifiers."""

from __future__ import annotations

from dsc.ir.opdef import OpDef
from dsc.ir.types import Dim, TensorType, dims_equal


def dim_match(op: OpDef, what: str, got: Dim, want: Dim) -> None:
    if not dims_equal(got, want):
        raise op.fail(f"{what} must be {want}, got {got}")


def rank_at_least(op: OpDef, what: str, t: TensorType, n: int) -> None:
    if t.rank < n:
        raise op.fail(f"{what} must have rank >= {n}, got {t}")


def rank_is(op: OpDef, what: str, t: TensorType, n: int) -> None:
    if t.rank != n:
        raise op.fail(f"{what} must have rank {n}, got {t}")


def float_dtype(op: OpDef, what: str, t: TensorType) -> None:
    if not t.dtype.is_float:
        raise op.fail(f"{what} must be floating point, got {t.dtype.name}")


def int_dtype(op: OpDef, what: str, t: TensorType) -> None:
    if t.dtype.is_float or t.dtype.name == "bool":
        raise op.fail(f"{what} must be an integer tensor, got {t.dtype.name}")


def same_dtype(op: OpDef, a: TensorType, b: TensorType) -> None:
    if a.dtype != b.dtype:
        raise op.fail(f"operand dtypes differ: {a.dtype.name} and {b.dtype.name}")


def norm_axis(op: OpDef, axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise op.fail(f"axis {axis} out of range for rank {rank}")
    return axis % rank
