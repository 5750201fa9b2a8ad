"""The tvm backend's CUDA kernels, launched through NVRTC on torch tensors, against the
reference backend on the same card.

The GPU machines have no TVM, so the kernels are compiled on a CPU machine first:

    for p in default fp8; do for d in float32 bfloat16; do
      dsc compile tiny-v3 --backend tvm --target sm90 --dtype $d --out ARTS/$d-$p \\
        --passes $( [ $p = fp8 ] && echo absorb,fuse_experts,fp8,fp8_kv,fold,cse,dce || echo default ); done; done

and DSC_TVM_ARTIFACTS=ARTS points here (where TVM is installed, the test compiles them
itself)."""

import os
from argparse import Namespace

import pytest
import torch

from dsc.config import Config
from dsc.nn import MLA, MoE, random_checkpoint
from util import BF16_TOL, assert_close

pytest.importorskip("cuda.bindings")
FP8 = "absorb,fuse_experts,fp8,fp8_kv,fold,cse,dce"
CASES = [("float32", "default"), ("bfloat16", "default"), ("float32", "fp8"), ("bfloat16", "fp8")]


def artifacts(tmp_path_factory, dtype: str, passes: str) -> str:
    given = os.environ.get("DSC_TVM_ARTIFACTS")
    if given:
        path = os.path.join(given, f"{dtype}-{passes}")
        if not os.path.isdir(path):
            pytest.skip(f"{path} is missing (see this file's docstring)")
        return path
    pytest.importorskip("tvm", reason="no TVM here and no DSC_TVM_ARTIFACTS")
    from dsc.cli.compile import compile_layers

    out = str(tmp_path_factory.mktemp(f"{dtype}-{passes}"))
    major, minor = torch.cuda.get_device_capability()
    compile_layers(Namespace(model="tiny-v3", layer="all", passes=FP8 if passes == "fp8" else passes, dtype=dtype,
                             target="sm90" if major >= 9 else "sm80", out=out, backend="tvm"))
    return out


@pytest.mark.parametrize("dtype, passes", CASES)
def test_mla_and_moe_from_artifacts_match_the_reference_on_cuda(tmp_path_factory, dtype, passes):
    from dsc.codegen.tvm.build import use_artifacts
    from dsc.runtime.nvrtc import Artifacts

    path = artifacts(tmp_path_factory, dtype, passes)
    major, minor = torch.cuda.get_device_capability()
    cfg = Config.preset("tiny-v3")
    dt = getattr(torch, dtype)
    pipeline = FP8.split(",") if passes == "fp8" else passes
    tol = 1e-4 if dt == torch.float32 else BF16_TOL
    gen = torch.Generator().manual_seed(0)
    with use_artifacts(Artifacts(path, 10 * major + minor)):
        sd = random_checkpoint(cfg, "mla", seed=0)
        mods = [MLA(cfg, backend=b, passes=pipeline, dtype=dt, device="cuda") for b in ("tvm", "reference")]
        for m in mods:
            m.load_state_dict(sd)
        caches = [m.new_cache(2, 16) for m in mods]
        for t in (5, 1):
            start = torch.tensor(caches[0].lengths())
            x = torch.randn(2, t, cfg.hidden_size, generator=gen).to(dt).cuda()
            pos = (start[:, None] + torch.arange(t)[None]).cuda()
            got, want = (m(x, pos, c) for m, c in zip(mods, caches))
            assert_close(got.float(), want.float(), tol, f"MLA t={t} ({dtype}, {passes})")
        sd = random_checkpoint(cfg, "moe", seed=0)
        mods = [MoE(cfg, backend=b, passes=pipeline, dtype=dt, device="cuda") for b in ("tvm", "reference")]
        for m in mods:
            m.load_state_dict(sd)
        x = torch.randn(9, cfg.hidden_size, generator=gen).to(dt).cuda()
        assert_close(mods[0](x).float(), mods[1](x).float(), tol, f"MoE ({dtype}, {passes})")
