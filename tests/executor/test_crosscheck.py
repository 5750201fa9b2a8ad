"""Group-by-group comparison with the reference: every group of both layers agrees, on
both compiled backends, on drawn configs; the two backends agree with each other; a
wrong kernel is named by its group."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dsc.config import Config
from dsc.errors import DscError
from dsc.nn import MLA, MoE, random_checkpoint
from dsc.executor.crosscheck import crosscheck
from strategies import configs, seeds
from util import COMPILED_BACKENDS, F32_TOL, assert_close, installed

FP8 = ["absorb", "fuse_experts", "fp8", "fp8_kv", "fold", "cse", "dce"]


def mla_call(cfg, module, tokens=3, dtype=torch.float32):
    cache = module.new_cache(2, 8)
    x = torch.randn(2, tokens, cfg.hidden_size, generator=torch.Generator().manual_seed(0)).to(dtype)
    pos = torch.arange(tokens).repeat(2, 1)
    return {"x": x, "positions": pos, "cache": cache.pages, "block_table": cache.block_table,
            "cache_seqlens": cache.seqlens}


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
@pytest.mark.parametrize("passes", ["default", "none", FP8], ids=["default", "none", "fp8"])
def test_every_group_agrees_with_the_reference(backend, passes):
    cfg = Config.preset("tiny-v3")
    for layer, cls in (("mla", MLA), ("moe", MoE)):
        module = cls(cfg, backend=backend, passes=passes)
        module.load_state_dict(random_checkpoint(cfg, layer, seed=0))
        params = module.weights()
        inputs = mla_call(cfg, module) if layer == "mla" else {
            "x": torch.randn(7, cfg.hidden_size, generator=torch.Generator().manual_seed(0))}
        report = crosscheck(module._runner, inputs, params, tol=1e-5)
        kinds = {grp.kind for grp, _ in report}
        assert len(report) >= 5 and all(err <= 1e-5 for _, err in report), report
        assert ("paged_append" in kinds) if layer == "mla" else ("router" in kinds)


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
def test_a_wrong_kernel_is_named_by_its_group(backend, monkeypatch):
    cfg = Config.preset("tiny-v3")
    module = MoE(cfg, backend=backend)
    module.load_state_dict(random_checkpoint(cfg, "moe", seed=0))
    executor = module._runner
    (router,) = [grp for grp in executor.groups if grp.kind == "router"]
    good = executor.launchers[id(router)]

    def bad(values, env, out=None):  # the weights of the second choice dropped
        ids, w = good(values, env, out)
        w[:, 1] = 0
        return ids, w
    monkeypatch.setitem(executor.launchers, id(router), bad)
    params = module.weights()
    x = torch.randn(7, cfg.hidden_size, generator=torch.Generator().manual_seed(0))
    with pytest.raises(DscError, match=r"kernel group router \(router_scores\+.*\) disagrees"):
        crosscheck(executor, {"x": x}, params, tol=1e-5)


@pytest.mark.skipif(not (installed("triton") and installed("tvm")), reason="needs both compiled backends")
@settings(max_examples=6, deadline=None)  # Triton's interpreter: seconds per drawn config
@given(cfg=configs(), seed=seeds, passes=st.sampled_from(["default", "none", FP8]),
       dtype=st.sampled_from([torch.float32, torch.bfloat16]))
def test_triton_tvm_and_reference_agree_group_by_group(cfg, seed, passes, dtype):
    """On drawn configs each backend matches the reference group by group (a disagreement
    names its group), and the two backends' layer outputs match each other."""
    tol = F32_TOL if dtype == torch.float32 else 4e-3
    for layer, cls in (("mla", MLA), ("moe", MoE)):
        sd = random_checkpoint(cfg, layer, seed=seed)
        outs = []
        for backend in ("triton", "tvm"):
            module = cls(cfg, backend=backend, passes=passes, dtype=dtype)
            module.load_state_dict(sd)
            inputs = mla_call(cfg, module, dtype=dtype) if layer == "mla" else {
                "x": torch.randn(5, cfg.hidden_size, generator=torch.Generator().manual_seed(seed)).to(dtype)}
            crosscheck(module._runner, inputs, module.weights(), tol=tol)
            outs.append(module._runner(inputs, module.weights())["out"].float())
        assert_close(outs[1], outs[0], tol, f"{layer}: tvm vs triton")
