"""Ill-formed graphs cannot be built, and whole-graph rules are checked."""

import pytest
import sympy

from dsc.ir.build import inp, op, param
from dsc.errors import IRError
from dsc.ir import Graph, Node, sym, verify

N, B = sym("N"), sym("B")


def test_node_types_are_inferred_and_checked():
    x = inp("x", [N, 8], "f32")
    with pytest.raises(IRError, match=r"linear: w.shape\[1\] \(in features\) must be 8, got 9"):
        op("linear", x, param("w", [4, 9], "f32"))
    with pytest.raises(IRError, match="linear: operand dtypes differ"):
        op("linear", x, param("w", [4, 8], "bf16"))
    with pytest.raises(IRError, match="reshape: cannot reshape"):
        op("reshape", x, shape=(N, 3))
    with pytest.raises(IRError, match="slice: .* is not a non-empty range"):
        op("slice", x, axis=-1, start=4, stop=9)
    with pytest.raises(IRError, match="missing attribute eps"):
        op("rms_norm", x, param("g", [8], "f32"))
    with pytest.raises(IRError, match="attribute eps must be a number"):
        op("rms_norm", x, param("g", [8], "f32"), eps="small")
    with pytest.raises(IRError, match="expected operands"):
        op("linear", x)
    with pytest.raises(IRError, match="router logits must be f32"):
        op("router_scores", inp("l", [N, 4], "bf16"), func="softmax")
    with pytest.raises(IRError, match="top_k: must not exceed the experts in the top 2 groups"):
        op("select_experts", inp("s", [N, 8], "f32"), method="group_limited_greedy", top_k=5, n_group=4,
           topk_group=2)


def test_reshape_checks_symbolic_element_counts():
    x = inp("x", [B, N, 6], "f32")
    assert op("reshape", x, shape=(B, N, 2, 3)).shape == (B, N, 2, 3)
    assert op("reshape", x, shape=(B * N, 6)).shape[0] == sympy.expand(B * N)


def test_hash_consing_makes_equal_nodes_identical():
    x = inp("x", [N, 8], "f32")
    w = param("w", [4, 8], "f32")
    assert op("linear", x, w) is op("linear", inp("x", [N, 8], "f32"), param("w", [4, 8], "f32"))
    assert op("scale", x, factor=1) is op("scale", x, factor=1.0)  # attrs coerced to the declared kind
    assert op("scale", x, factor=2.0) is not op("scale", x, factor=1.0)


def test_nodes_are_immutable():
    x = inp("x", [N, 8], "f32")
    with pytest.raises(AttributeError):
        x.op = "param"
    with pytest.raises(TypeError):
        Node()


def test_graph_rules():
    x = inp("x", [N, 8], "f32")
    y = inp("y", [N, 8], "f32")
    with pytest.raises(IRError, match="input %y is used but not declared"):
        verify(Graph("g", [x], {"out": op("add", x, y)}))
    w1, w2 = param("w", [1, 8], "f32"), param("w", [1, 1], "f32")
    with pytest.raises(IRError, match="two leaves named %w"):
        verify(Graph("g", [x], {"out": op("add", op("mul", x, w1), op("mul", x, w2))}))
    with pytest.raises(IRError, match="no outputs"):
        Graph("g", [x], {})


def test_a_consumed_cache_is_read_by_nothing_else():
    cache = inp("cache", [sym("NB"), 4, 8], "f32")
    table = inp("block_table", [B, 2], "i32")
    lens = inp("cache_seqlens", [B], "i32")
    new = inp("new", [B, 3, 8], "f32")
    appended = op("paged_append", cache, table, lens, new)
    ok = Graph("g", [cache, table, lens, new], {"cache": appended})
    verify(ok)
    stale = op("paged_gather", cache, table)
    with pytest.raises(IRError, match="consumed by paged_append is also read by paged_gather"):
        verify(Graph("g", [cache, table, lens, new], {"cache": appended, "old": stale}))
