"""TVM (llvm) kernel groups against the reference interpreter: generated row kernels on
drawn row-op graphs, the GEMM group (linear, einsum), paged and dense attention. The
MoE, FP8 and latent-append groups are held to the same references as the Triton ones
(test_moe_kernels.py, test_fp8_kernels.py, test_latent_append.py)."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from dsc.ir import interpret
from dsc.ir.opdef import get_op
from dsc.executor.executor import Executor
from graph_inputs import check_row_graph
from strategies import row_graphs, seeds
from util import BF16_TOL, F32_TOL, assert_close

pytest.importorskip("tvm")
from dsc.codegen.tvm import gemm  # noqa: E402
from dsc.codegen.tvm.rowwise import RowKernel  # noqa: E402


@given(graph=row_graphs(), seed=seeds, batch=st.integers(1, 3), tokens=st.integers(1, 4))
def test_row_kernels_match_the_interpreter(graph, seed, batch, tokens):
    def run(g, inputs, params):  # views on the host, every row region a TVM kernel
        return Executor(g, RowKernel, frozenset({"view", "dispatch", "rowwise"}))(inputs, params)
    check_row_graph(graph, run, seed, batch, tokens, "tvm row kernel")


@given(seed=seeds, lead=st.lists(st.integers(1, 5), min_size=1, max_size=2), n=st.integers(1, 40),
       k=st.sampled_from([8, 24, 64, 100]), dtype=st.sampled_from([torch.float32, torch.bfloat16]))
def test_linear_matches_the_reference(seed, lead, n, k, dtype):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*lead, k, generator=g).to(dtype)
    w = torch.randn(n, k, generator=g).to(dtype)
    want = get_op("linear").reference([x, w], {})
    assert_close(gemm.linear(x, w).float(), want.float(), F32_TOL if dtype == torch.float32 else BF16_TOL, "linear")


@pytest.mark.parametrize("spec, xs, ys", [("bthd,hdc->bthc", (2, 3, 4, 16), (4, 16, 32)),
                                          ("bthc,hvc->bthv", (2, 3, 4, 32), (4, 16, 32))])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_einsum_matches_the_reference(spec, xs, ys, dtype):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(*xs, generator=g).to(dtype), torch.randn(*ys, generator=g).to(dtype)
    want = get_op("einsum").reference([x, y], {"spec": spec})
    assert_close(gemm.einsum(spec, x, y).float(), want.float(), F32_TOL if dtype == torch.float32 else BF16_TOL,
                 spec)


@given(seed=seeds, page=st.sampled_from([1, 16, 64]), batch=st.integers(1, 3), tokens=st.integers(1, 2),
       heads=st.sampled_from([1, 3, 8]), dv=st.sampled_from([8, 24]), rope=st.sampled_from([4, 8]),
       dtype=st.sampled_from([torch.float32, torch.bfloat16]), data=st.data())
def test_paged_attention_matches_the_ir_attention(seed, page, batch, tokens, heads, dv, rope, dtype, data):
    from dsc.codegen.tvm.attention import paged_mla_attention
    from paged_reference import ir_attention, paged_case, torch_lse

    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor(data.draw(st.lists(st.integers(0, 70), min_size=batch, max_size=batch)), dtype=torch.int32)
    q, cache, table = paged_case(g, batch, tokens, heads, dv + rope, page, lens, dtype)
    dt = "f32" if dtype == torch.float32 else "bf16"
    want = interpret(ir_attention(dv + rope, dv, page, dt),
                     {"q": q, "cache": cache, "block_table": table, "cache_seqlens": lens}, {})["out"]
    # table entries past a row's tokens are garbage in real servers: they must never be read
    unused = torch.arange(table.shape[1])[None] * page >= (lens + tokens)[:, None]
    table = table.masked_fill(unused, -1)
    out, lse = paged_mla_attention(q, cache, table, lens, 0.3, dv, len_offset=tokens)
    assert_close(out.float(), want.float(), F32_TOL if dtype == torch.float32 else BF16_TOL, "tvm paged attention")
    assert_close(lse, torch_lse(q, cache, table.clamp_min(0), lens + tokens, 0.3), 1e-5, "lse")


@given(seed=seeds, batch=st.integers(1, 2), tokens=st.integers(1, 12), heads=st.sampled_from([1, 2, 3]),
       shared_kv=st.booleans(), dk=st.sampled_from([8, 24]), dv=st.sampled_from([8, 20]),
       dtype=st.sampled_from([torch.float32, torch.bfloat16]), data=st.data())
def test_dense_attention_matches_the_ir_attention(seed, batch, tokens, heads, shared_kv, dk, dv, dtype, data):
    """The naive branch's causal attention: ragged rows, K/V strided views, one shared KV head or one per head."""
    from dsc.codegen.tvm.attention import attention
    from paged_reference import dense_case, dense_ir_attention, dense_lse

    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor(data.draw(st.lists(st.integers(0, 30), min_size=batch, max_size=batch)), dtype=torch.int32)
    s = int(lens.max()) + tokens + data.draw(st.integers(0, 5))
    hk = 1 if shared_kv else heads
    q, k, v = dense_case(g, lens, tokens, s, heads, hk, dk, dv, dtype)
    dt = "f32" if dtype == torch.float32 else "bf16"
    want = interpret(dense_ir_attention(dk, dv, heads, hk, dt), {"q": q, "k": k, "v": v, "cache_seqlens": lens},
                     {})["out"]
    out, lse = attention(q, k, v, lens, 0.25)
    assert_close(out.float(), want.float(), F32_TOL if dtype == torch.float32 else BF16_TOL, "tvm attention")
    assert_close(lse, dense_lse(q, k, lens, 0.25), 1e-5, "lse")


def test_the_tvm_backend_without_tvm_is_a_clear_error(monkeypatch):
    import builtins

    from dsc.config import Config
    from dsc.errors import DscError
    from dsc.nn import MoE

    real = builtins.__import__

    def no_tvm(name, *args, **kwargs):
        if name == "tvm" or name.startswith("tvm."):
            raise ImportError("No module named 'tvm'")
        return real(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_tvm)
    with pytest.raises(DscError, match=r"backend 'tvm' needs Apache TVM: pip install 'dsc-compiler\[tvm\]'"):
        MoE(Config.preset("tiny-v3"), backend="tvm")
