"""Group-by-group comparison with the reference: every Triton group of both layers
agrees, and a wrong kernel is named by its group."""

import pytest
import torch

from dsc.config import Config
from dsc.errors import DscError
from dsc.nn import MLA, MoE, random_checkpoint
from dsc.runtime.crosscheck import crosscheck

pytest.importorskip("triton")

FP8 = ["absorb", "fuse_experts", "fp8", "fp8_kv", "fold", "cse", "dce"]


def mla_call(cfg, module, tokens=3):
    cache = module.new_cache(2, 8)
    x = torch.randn(2, tokens, cfg.hidden_size, generator=torch.Generator().manual_seed(0))
    pos = torch.arange(tokens).repeat(2, 1)
    return {"x": x, "positions": pos, "cache": cache.pages, "block_table": cache.block_table,
            "cache_seqlens": cache.seqlens}


@pytest.mark.parametrize("passes", ["default", "none", FP8], ids=["default", "none", "fp8"])
def test_every_triton_group_agrees_with_the_reference(passes):
    cfg = Config.preset("tiny-v3")
    for layer, cls in (("mla", MLA), ("moe", MoE)):
        module = cls(cfg, backend="triton", passes=passes)
        module.load_state_dict(random_checkpoint(cfg, layer, seed=0))
        params = module.weights()
        inputs = mla_call(cfg, module) if layer == "mla" else {
            "x": torch.randn(7, cfg.hidden_size, generator=torch.Generator().manual_seed(0))}
        report = crosscheck(module._runner, inputs, params, tol=1e-5)
        kinds = {grp.kind for grp, _ in report}
        assert len(report) >= 5 and all(err <= 1e-5 for _, err in report), report
        assert ("paged_append" in kinds) if layer == "mla" else ("router" in kinds)


def test_a_wrong_kernel_is_named_by_its_group(monkeypatch):
    cfg = Config.preset("tiny-v3")
    module = MoE(cfg, backend="triton")
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
