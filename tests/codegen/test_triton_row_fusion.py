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
from strategies import seeds
from util import BF16_TOL, assert_close

pytest.importorskip("triton")
from dsc.runtime import make_runner  # noqa: E402

B, T = sym("B"), sym("T")


@st.composite
def row_graphs(draw):
    """A graph over x [B, T, H, W] (a strided slice of a wider input), a per-channel param
    and positions, built from a random sequence of row ops."""
    dt = draw(st.sampled_from(["f32", "bf16"]))
    heads = draw(st.integers(1, 3))
    width = draw(st.sampled_from([4, 8, 12]))
    wide = inp("wide", [B, T, heads, width + 3], dt)
    pos = inp("positions", [B, T], "i64")
    x = op("slice", wide, axis=-1, start=1, stop=1 + width)  # a view with a row stride != width
    w = param("w", [width], dt)
    values = [x]
    for _ in range(draw(st.integers(1, 8))):
        # mostly extend the chain (fusion), sometimes branch from an earlier value (a second user)
        a = values[-1] if draw(st.integers(0, 3)) else draw(st.sampled_from(values))
        kind = draw(st.sampled_from(["add", "mul", "scale", "silu", "rms_norm", "rope", "cast", "normalize_sum",
                                     "concat_slice"]))
        if kind in ("add", "mul"):
            b = draw(st.sampled_from(values + [op("reshape", w, shape=[1, 1, 1, width])]))
            if b.shape[-1] != a.shape[-1]:
                continue
            v = op(kind, a, op("expand", b, shape=list(a.shape)) if b.shape[0] == 1 else b)
        elif kind == "scale":
            v = op("scale", a, factor=draw(st.sampled_from([0.5, -2.0, 3.25])))
        elif kind == "silu":
            v = op("silu", a)
        elif kind == "rms_norm":
            if a.shape[-1] != width:
                continue
            v = op("rms_norm", a, w, eps=1e-6)
        elif kind == "rope":
            v = op("rope", a, pos, theta=10000.0, interleave=draw(st.booleans()))
        elif kind == "cast":
            v = op("cast", op("cast", a, dtype="f32"), dtype=dt)
        elif kind == "normalize_sum":
            v = op("normalize_sum", op("mul", a, a), eps=1e-6)  # positive rows: a well-conditioned sum
        else:  # rotate the row: a concat of two slices of one value
            cut = draw(st.integers(1, a.shape[-1] - 1))
            v = op("concat", op("slice", a, axis=-1, start=cut, stop=a.shape[-1]),
                   op("slice", a, axis=-1, start=0, stop=cut), axis=-1)
        values.append(v)
    return Graph("rows", [wide, pos], {"out": values[-1]}), dt, heads, width


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
