"""Comparison helpers: relative error, never on zeros, NaN never passes."""

from __future__ import annotations

import os

import pytest
import torch

from dsc.runtime.accuracy import relative_error


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """dsc's relative error, on a reference a comparison can learn from (finite, not all zeros)."""
    assert out.shape == ref.shape, f"shape {tuple(out.shape)} != {tuple(ref.shape)}"
    assert torch.isfinite(ref.double()).all(), "reference is not finite"
    assert ref.double().norm() > 0, "reference is all zeros: the comparison would prove nothing"
    return relative_error(out, ref)


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


def clean_env() -> dict:
    """This process's environment without what conftest switched on for the whole run
    (TRITON_INTERPRET), for scripts that must work as a user starts them. DSC_CACHE_DIR
    stays: it only keeps their kernels out of the user's cache."""
    return {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"} | {"PYTHONWARNINGS": "ignore"}


def run_clean(code_or_args, timeout: int = 600):
    """Run Python code (a str) or a script with arguments (a list) in a fresh interpreter
    with clean_env(); returns the CompletedProcess."""
    import subprocess
    import sys

    args = ["-c", code_or_args] if isinstance(code_or_args, str) else list(code_or_args)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=clean_env())


def distinct_logits(g, tokens: int, experts: int) -> torch.Tensor:
    """Router logits without ties: each row a shuffle of distinct values exact in every
    dtype. vLLM's tests draw randn logits; in bf16 two experts (or two groups) then often
    tie, and a tie may be broken either way by either router."""
    return torch.stack([torch.randperm(experts, generator=g) for _ in range(tokens)]).float() * (4 / experts) - 2
