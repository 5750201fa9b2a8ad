"""The generated row kernels of both compiled backends on drawn graphs: random regions of
elementwise ops, casts, RMSNorm, RoPE, normalize_sum and last-axis concat over strided and
broadcast inputs, scheduled, generated and run, against the reference interpreter."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dsc.codegen.schedule import schedule
from dsc.executor import make_runner
from dsc.ir import Graph, sym
from dsc.ir.build import inp, op, param
from graph_inputs import check_row_graph
from strategies import row_graphs, seeds
from util import COMPILED_BACKENDS

B, T = sym("B"), sym("T")


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
@given(graph=row_graphs(), seed=seeds, batch=st.integers(1, 3), tokens=st.integers(1, 4))
def test_generated_row_kernels_match_the_interpreter(backend, graph, seed, batch, tokens):
    assert all(grp.kind in ("rowwise", "view") for grp in schedule(graph[0]))
    check_row_graph(graph, lambda g, i, p: make_runner(g, backend)(i, p), seed, batch, tokens,
                    f"{backend} row kernel")


def test_a_chain_of_row_ops_is_one_kernel():
    x = inp("x", [B, T, 16], "f32")
    w = param("w", [16], "f32")
    pos = inp("positions", [B, T], "i64")
    out = op("scale", op("rope", op("rms_norm", op("silu", x), w, eps=1e-6), pos, theta=1e4, interleave=True),
             factor=2.0)
    groups = schedule(Graph("chain", [x, pos], {"out": out}))
    assert [(grp.kind, [n.op for n in reversed(grp.nodes)]) for grp in groups] == [
        ("rowwise", ["silu", "rms_norm", "rope", "scale"])]
