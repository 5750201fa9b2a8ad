"""The GEMM kernel group of both compiled backends (linear and two-operand einsums, on
strided operands), called by the names the kind declares, against the IR's reference ops."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from backend_kernels import backend_kernels
from dsc.ir.opdef import get_op
from strategies import seeds
from util import BF16_TOL, COMPILED_BACKENDS, F32_TOL, assert_close


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
@given(seed=seeds, lead=st.lists(st.integers(1, 5), min_size=1, max_size=2), n=st.integers(1, 40),
       k=st.sampled_from([8, 24, 64, 100]), dtype=st.sampled_from([torch.float32, torch.bfloat16]))
def test_linear_matches_the_reference(backend, seed, lead, n, k, dtype):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*lead, k, generator=g).to(dtype)
    w = torch.randn(n, k, generator=g).to(dtype)
    want = get_op("linear").reference([x, w], {})
    got = backend_kernels(backend).linear(x, w)
    assert_close(got.float(), want.float(), F32_TOL if dtype == torch.float32 else BF16_TOL, f"linear on {backend}")


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
@pytest.mark.parametrize("spec, xs, ys", [("bthd,hdc->bthc", (2, 3, 4, 16), (4, 16, 32)),
                                          ("bthc,hvc->bthv", (2, 3, 4, 32), (4, 16, 32))])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_einsum_matches_the_reference(backend, spec, xs, ys, dtype):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(*xs, generator=g).to(dtype), torch.randn(*ys, generator=g).to(dtype)
    want = get_op("einsum").reference([x, y], {"spec": spec})
    got = backend_kernels(backend).einsum(spec, x, y)
    assert_close(got.float(), want.float(), F32_TOL if dtype == torch.float32 else BF16_TOL, f"{spec} on {backend}")
