"""Comparison helpers: relative error, never on zeros, NaN never passes."""

from __future__ import annotations

import pytest
import torch


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    assert out.shape == ref.shape, f"shape {tuple(out.shape)} != {tuple(ref.shape)}"
    out, ref = out.double(), ref.double()
    assert torch.isfinite(ref).all(), "reference is not finite"
    ref_norm = ref.norm()
    assert ref_norm > 0, "reference is all zeros: the comparison would prove nothing"
    if not torch.isfinite(out).all():
        return float("inf")
    return float((out - ref).norm() / ref_norm)


def assert_close(out: torch.Tensor, ref: torch.Tensor, tol: float, what: str = "") -> float:
    err = rel_err(out, ref)
    assert err <= tol, f"{what} relative error {err:.3e} > {tol:g}"
    return err


F32_TOL = 1e-5
BF16_TOL = 2e-2


def installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# the compiled backends, each skipped (with its reason) where its compiler is not installed
COMPILED_BACKENDS = [pytest.param(b, marks=pytest.mark.skipif(not installed(b), reason=f"{b} is not installed"))
                     for b in ("triton", "tvm")]
