"""The reference backend on a CUDA device against the float32 eager layers on the CPU."""

import pytest
import torch
from util import BF16_TOL, assert_close

from dsc import Config
from dsc.eager import EagerMLA, eager_moe
from dsc.nn import MLA, MoE, random_checkpoint
from dsc.passes.fp8 import error_bound

FP8 = ["absorb", "fuse_experts", "fp8", "fp8_kv", "fold", "cse", "dce"]


@pytest.mark.parametrize("passes", ["none", "default", FP8], ids=["none", "default", "fp8"])
@pytest.mark.parametrize("preset", ["tiny-v3", "tiny-v2-lite", "deepseek-v2-lite"])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-3), (torch.bfloat16, BF16_TOL)])
def test_mla_and_moe_on_cuda(preset, dtype, tol, passes):
    # float32 tolerance allows TF32 matmuls, which torch may use on Ampere and later
    cfg = Config.preset(preset)
    sd = random_checkpoint(cfg, "mla", seed=0)
    mla = MLA(cfg, dtype=dtype, device="cuda", passes=passes)
    tol = max(tol, error_bound(mla.graph))
    mla.load_state_dict(sd)
    eager = EagerMLA(cfg, sd)
    x = torch.randn(2, 9, cfg.hidden_size).to(dtype).float()
    pos = torch.arange(9).repeat(2, 1)
    cache, rows = mla.new_cache(2, 9), eager.new_state(2)
    out = torch.cat([mla(x[:, :8].to("cuda", dtype), pos[:, :8].cuda(), cache),
                     mla(x[:, 8:].to("cuda", dtype), pos[:, 8:].cuda(), cache)], dim=1)
    ref = torch.cat([eager(x[:, :8], pos[:, :8], rows), eager(x[:, 8:], pos[:, 8:], rows)], dim=1)
    assert_close(out.cpu(), ref, tol, f"{preset} MLA on cuda")

    sdm = random_checkpoint(cfg, "moe", seed=1)
    moe = MoE(cfg, dtype=dtype, device="cuda", passes=passes)
    tol = max(tol, error_bound(moe.graph))
    moe.load_state_dict(sdm)
    xm = torch.randn(64, cfg.hidden_size).to(dtype).float()
    ref = eager_moe(cfg, {k: v.to(dtype).float() if "bias" not in k else v for k, v in sdm.items()}, xm)
    assert_close(moe(xm.to("cuda", dtype)).cpu(), ref, tol, f"{preset} MoE on cuda")
