"""dsc.compiler.compile_layer, the one compile entry point, as a user calls it."""

import pytest
import torch

from dsc import Config, ConfigError
from dsc.compiler import build, compile_layer, emit_sources
from dsc.ir.interpreter import evaluate_folds, interpret
from dsc.nn import MoE, random_checkpoint
from graph_inputs import checkpoint_params, moe_inputs
from util import assert_close


def test_compiled_layer_holds_its_graphs_passes_groups_and_runner():
    cfg = Config.preset("tiny-v3")
    c = compile_layer(cfg, "moe", passes="default", target="sm90", backend="triton")
    assert c.naive != c.graph
    assert [r.name for r in c.passes.records] == ["absorb", "fuse_experts", "fold", "cse", "dce"]
    assert {g.kind for g in c.groups()} >= {"router", "grouped_gemm", "moe_combine"}
    inputs = moe_inputs(cfg, 7, seed=1)
    params = checkpoint_params(cfg, "moe", seed=2)
    got = c.runner(inputs, {**params, **evaluate_folds(c.graph, params)})
    want = interpret(c.naive, inputs, params)
    assert set(got) == set(want)
    for name in want:
        assert_close(got[name], want[name], 1e-4, name)


def test_the_modules_compile_through_it():
    cfg = Config.preset("tiny-v2")
    moe = MoE(cfg, passes="default")
    assert moe.graph == compile_layer(cfg, "moe", backend=None).graph
    moe.load_state_dict(random_checkpoint(cfg, "moe", seed=0))
    x = torch.randn(5, cfg.hidden_size)
    assert torch.isfinite(moe(x)).all()


def test_sources_for_dsc_compile_come_from_the_backend_registry():
    cfg = Config.preset("tiny-v2")
    sources = emit_sources([compile_layer(cfg, "moe", backend=None)], "triton", "sm90")
    assert sources.files and {k["group"] for k in sources.manifest["kernels"]} >= {"router", "grouped_gemm"}
    assert all(k["file"] in sources.files for k in sources.manifest["kernels"])


@pytest.mark.parametrize("call,rule", [
    (lambda: build(Config.preset("tiny-v2"), "mlp"), "layer: expected one of mla, moe"),
    (lambda: build({"hidden_size": 8}, "mla"), "cfg: expected a dsc.Config"),
    (lambda: compile_layer(Config.preset("tiny-v2"), "moe", backend="cuda"), "backend: unknown backend 'cuda'"),
    (lambda: compile_layer(Config.preset("tiny-v2"), "moe", passes="absorbb"), "passes: unknown pass 'absorbb'"),
    (lambda: emit_sources([], "cuda", "sm90"), "backend: unknown backend 'cuda'"),
])
def test_bad_arguments_are_config_errors_naming_the_argument(call, rule):
    with pytest.raises(ConfigError, match=rule):
        call()
