import pytest
import torch

from dsc.builders import build_moe
from dsc.ir.build import inp, op, param
from dsc.config import Config
from dsc.errors import InputError
from dsc.ir import Graph, interpret, sym

N = sym("N")


def small_graph():
    x = inp("x", [N, 4], "f32")
    y = op("linear", x, param("w", [3, 4], "f32"))
    return Graph("g", [x], {"out": op("reshape", y, shape=(N * 3,))})


def test_symbols_bind_from_input_shapes():
    out = interpret(small_graph(), {"x": torch.ones(5, 4)}, {"w": torch.ones(3, 4)})["out"]
    assert out.shape == (15,) and torch.all(out == 4)


@pytest.mark.parametrize("inputs,params,message", [
    ({}, {"w": torch.ones(3, 4)}, "missing input 'x'"),
    ({"x": torch.ones(5, 4)}, {}, "missing weight 'w'"),
    ({"x": torch.ones(5, 5)}, {"w": torch.ones(3, 4)}, "x: dim 1 must be 4, got 5"),
    ({"x": torch.ones(5, 4, 1)}, {"w": torch.ones(3, 4)}, r"x: expected shape \[N, 4\]"),
    ({"x": torch.ones(5, 4, dtype=torch.float64)}, {"w": torch.ones(3, 4)}, "x: expected dtype torch.float32"),
    ({"x": [1.0]}, {"w": torch.ones(3, 4)}, "x: expected a torch.Tensor"),
])
def test_binding_errors_name_the_tensor(inputs, params, message):
    with pytest.raises(InputError, match=message):
        interpret(small_graph(), inputs, params)


def test_a_symbol_must_agree_across_inputs():
    a, b = inp("a", [N, 2], "f32"), inp("b", [N, 2], "f32")
    g = Graph("g", [a, b], {"out": op("add", a, b)})
    with pytest.raises(InputError, match="b: dim 0 is N = 3 elsewhere, got 4"):
        interpret(g, {"a": torch.ones(3, 2), "b": torch.ones(4, 2)}, {})


def test_interpreter_checks_reference_results_against_declared_types():
    cfg = Config.preset("tiny-v3")
    g = build_moe(cfg)
    # every declared type holds on a real run (the check is on by default)
    from dsc.nn import random_checkpoint
    from dsc.nn.checkpoint import moe_params_from_checkpoint

    params, _, _, _ = moe_params_from_checkpoint(cfg, random_checkpoint(cfg, "moe"))
    out = interpret(g, {"x": torch.randn(6, cfg.hidden_size)}, params)["out"]
    assert out.shape == (6, cfg.hidden_size) and torch.isfinite(out).all() and out.abs().sum() > 0
