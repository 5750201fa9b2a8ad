"""The text form: every built graph prints, parses back to the identical graph, and
verifies; malformed text is refused with the line named."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsc.builders import build_mla, build_moe
from dsc.errors import IRError, ParseError
from dsc.ir import parse_graph, print_graph, verify
from strategies import configs


@settings(max_examples=100)  # builds, prints and parses a whole layer: ~0.1 s an example
@given(configs(), st.sampled_from(["f32", "bf16", "f16"]), st.sampled_from(["mla", "moe"]))
def test_built_graphs_verify_and_round_trip(cfg, dt, layer):
    g = build_mla(cfg, dt) if layer == "mla" else build_moe(cfg, dt)
    verify(g)
    text = print_graph(g)
    back = parse_graph(text)
    assert back == g  # hash-consed: the same node objects, so structurally identical
    assert print_graph(back) == text


def test_round_trip_keeps_float_attrs_exact():
    from dsc import Config

    cfg = Config.preset("deepseek-v2")  # mscale 0.707, softmax scale an irrational float
    g = build_mla(cfg)
    back = parse_graph(print_graph(g))
    attn = [n for n in back.nodes() if n.op == "attention"][0]
    assert attn.attrs["scale"] == cfg.softmax_scale


SMALL = """graph g(%x: f32[N, 4]) {
  %w = param : f32[3, 4]
  %0 = linear(%x, %w) : f32[N, 3]
  return out=%0
}
"""


def test_small_graph_parses_and_has_the_declared_shape():
    g = parse_graph(SMALL)
    assert str(g.output("out").type) == "f32[N, 3]"
    assert [p.name for p in g.params()] == ["w"]


@pytest.mark.parametrize("text,message", [
    ("", "empty IR text"),
    ("grph g() {", "line 1: expected 'graph NAME"),
    (SMALL.replace("f32[N, 3]\n", "f32[N, 5]\n"), "line 3: declared type f32\\[N, 5\\] but linear infers"),
    (SMALL.replace("linear(%x, %w)", "linear(%x, %v)"), "line 3: operand %v is not defined"),
    (SMALL.replace("linear(%x, %w)", "frobnicate(%x, %w)"), "line 3: unknown op 'frobnicate'"),
    (SMALL.replace("param : f32[3, 4]", "param : f32[3, 5]"), "line 3: linear: w.shape\\[1\\]"),
    (SMALL.replace("linear(%x, %w)", "linear(%x, %w) {eps=1.0}"), "line 3: linear: unknown attribute"),
    (SMALL.replace("  return out=%0\n", ""), "line 4: expected '%name = op"),
    (SMALL.replace("}\n", ""), "missing 'return"),
    (SMALL.replace("return out=%0", "return out=%7"), "line 4: bad output"),
])
def test_malformed_text_names_the_line(text, message):
    with pytest.raises(ParseError, match=message):
        parse_graph(text)


def test_parse_error_is_an_ir_error():
    assert issubclass(ParseError, IRError)
