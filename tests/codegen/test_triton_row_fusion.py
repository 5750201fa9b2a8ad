"""The generated row kernels on drawn graphs: random regions of elementwise ops, casts,
RMSNorm, RoPE, normalize_sum and last-axis concat over strided and broadcast inputs,
scheduled, generated and run, against the reference interpreter."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from dsc.builders.ops import inp, op, param
from dsc.codegen.schedule import schedule
from dsc.ir import Graph, interpret, sym
from strategies import row_graphs, seeds
from util import BF16_TOL, assert_close

pytest.importorskip("triton")
from dsc.runtime import make_runner  # noqa: E402

B, T = sym("B"), sym("T")


@given(graph=row_graphs(), seed=seeds, batch=st.integers(1, 3), tokens=st.integers(1, 4))
def test_generated_row_kernels_match_the_interpreter(graph, seed, batch, tokens):
    g, dt, heads, width = graph
    assert all(grp.kind in ("rowwise", "view") for grp in schedule(g))
    gen = torch.Generator().manual_seed(seed)
    dtype = torch.float32 if dt == "f32" else torch.bfloat16
    inputs = {"wide": torch.randn(batch, tokens, heads, width + 3, generator=gen).to(dtype),
              "positions": torch.randint(0, 5000, (batch, tokens), generator=gen)}
    params = {"w": (1 + 0.3 * torch.randn(width, generator=gen)).to(dtype)}
    want = interpret(g, inputs, params)["out"]
    got = make_runner(g, "triton")(inputs, params)["out"]
    assert got.dtype == want.dtype and got.shape == want.shape
    if not want.any():  # a drawn graph that cancels to exact zeros (e.g. 2x + -2x): so must the kernel
        assert not got.any()
        return
    # float32 sums in another order, then the same bf16 rounding: a few bf16 ulps at most
    assert_close(got.float(), want.float(), 1e-5 if dt == "f32" else BF16_TOL / 4, "row kernel")


def test_a_chain_of_row_ops_is_one_kernel():
    x = inp("x", [B, T, 16], "f32")
    w = param("w", [16], "f32")
    pos = inp("positions", [B, T], "i64")
    out = op("scale", op("rope", op("rms_norm", op("silu", x), w, eps=1e-6), pos, theta=1e4, interleave=True),
             factor=2.0)
    groups = schedule(Graph("chain", [x, pos], {"out": out}))
    assert [(grp.kind, [n.op for n in reversed(grp.nodes)]) for grp in groups] == [
        ("rowwise", ["silu", "rms_norm", "rope", "scale"])]
