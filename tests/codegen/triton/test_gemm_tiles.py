"""Triton's GEMM at every tile choice a GPU can make, split-K included (a skinny decode
projection's K split across programs, float32 partials summed in order by
gemm_split_reduce), drawn small under the interpreter against torch.matmul, on strided
views as the launchers pass them. Both backends at their default tiles:
tests/codegen/test_gemm_kernels.py."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import dsc.codegen.triton  # noqa: F401  (before triton: enables its interpreter without CUDA)

pytest.importorskip("triton")
from dsc.codegen.triton import gemm  # noqa: E402
from dsc.runtime.device import REFERENCE_CARDS  # noqa: E402
from strategies import seeds  # noqa: E402
from util import BF16_TOL, F32_TOL, assert_close  # noqa: E402


@given(seed=seeds, batch=st.integers(1, 2), m=st.integers(1, 40), n=st.integers(1, 70), k=st.integers(1, 200),
       split=st.sampled_from([1, 2, 3, 8]), block_k=st.sampled_from([16, 32]), block_n=st.sampled_from([16, 32]),
       transposed=st.booleans(), dtype=st.sampled_from([torch.float32, torch.bfloat16]))
def test_every_split_matches_torch(seed, batch, m, n, k, split, block_k, block_n, transposed, dtype):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(batch, m, k, generator=g).to(dtype)
    # the weight as a linear reads it: an nn.Linear [N, K] seen transposed, without a copy
    b = torch.randn(batch, n, k, generator=g).to(dtype).transpose(1, 2) if transposed else \
        torch.randn(batch, k, n, generator=g).to(dtype)
    c = torch.full((batch, m, n), float("nan"), dtype=dtype)
    config = {"BLOCK_M": 16, "BLOCK_N": block_n, "BLOCK_K": block_k, "GROUP_M": 8, "SPLIT_K": split,
              "num_warps": 4, "num_stages": 1}
    gemm.bmm_into(a, b, c, config)
    assert_close(c.float(), a.float() @ b.float(), F32_TOL if dtype == torch.float32 else BF16_TOL,
                 f"gemm at {config}")


def test_skinny_gemms_split_k_on_a_gpu_and_wide_ones_do_not():
    h100 = REFERENCE_CARDS["sm90"]
    kv_a = gemm.default_config({"batch": 1, "M": 64, "N": 576, "K": 7168, "itemsize": 2}, h100)
    assert kv_a["SPLIT_K"] == 16  # 5 output tiles on 132 SMs
    q_a = gemm.default_config({"batch": 1, "M": 64, "N": 1536, "K": 7168, "itemsize": 2}, h100)
    assert q_a["SPLIT_K"] == 8
    prefill = gemm.default_config({"batch": 1, "M": 4096, "N": 1536, "K": 7168, "itemsize": 2}, h100)
    assert prefill["SPLIT_K"] == 1
    short_k = gemm.default_config({"batch": 1, "M": 64, "N": 576, "K": 256, "itemsize": 2}, h100)
    assert short_k["SPLIT_K"] == 1  # each split keeps four K steps of 64
    assert gemm.default_config({"batch": 1, "M": 64, "N": 576, "K": 7168, "itemsize": 2},
                               torch.device("cpu"))["SPLIT_K"] == 1


@given(seed=seeds, m=st.integers(1, 20), n=st.sampled_from([8, 40]), k=st.sampled_from([64, 200]),
       split=st.sampled_from([1, 2, 3]), act_quant=st.booleans(), dtype=st.sampled_from([torch.float32,
                                                                                          torch.bfloat16]))
def test_fp8_gemm_splits_match_the_reference(seed, m, n, k, split, act_quant, dtype):
    from dsc.codegen.triton.fp8_gemm import fp8_linear
    from dsc.ir.opdef import get_op

    def ref(op, *args, **attrs):
        return get_op(op).reference(list(args), get_op(op).check_attrs(attrs))

    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(m, k, generator=g) * 3).to(dtype)
    w = torch.randn(n, k, generator=g)
    ws = ref("fp8_scale", w, tile_n=32, tile_k=32)
    wq = ref("fp8_quant", w, ws, tile_n=32, tile_k=32)
    config = {"BLOCK_M": 16, "BLOCK_N": 16, "SPLIT_K": split, "num_warps": 4, "num_stages": 1}
    out = fp8_linear(x, wq, ws, act_quant=act_quant, block=32, config=config)
    want = ref("fp8_linear", x, wq, ws, act_quant=act_quant, block=32)
    assert_close(out.float(), want.float(), F32_TOL if dtype == torch.float32 else BF16_TOL, f"fp8 gemm at {config}")
