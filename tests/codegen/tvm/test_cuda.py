"""The tvm backend's CUDA path on a machine without a GPU: `dsc compile --backend tvm`
emits CUDA that nvcc compiles for sm_80 and sm_90, its manifest names every kernel the
launchers ask for, and the NVRTC launcher's bookkeeping (dims bound from shapes, scratch
buffers, kernel arguments, launch extents) is what the emitted kernels expect. Launches
themselves run in tests/gpu/test_tvm_nvrtc.py."""

import json
import shutil
import subprocess
from argparse import Namespace

import pytest
import torch

from dsc.config import Config
from dsc.errors import DscError
from dsc.nn import MLA, MoE, random_checkpoint
from dsc.runtime.nvrtc import Artifacts, bind_dims, evaluate, launches

pytest.importorskip("tvm")
from dsc.cli.compile import compile_layers  # noqa: E402
from dsc.codegen.schedule import schedule  # noqa: E402
from dsc.codegen.tvm import build  # noqa: E402
from dsc.codegen.tvm.kernels import kernel_defs  # noqa: E402

FP8 = ["absorb", "fuse_experts", "fp8", "fp8_kv", "fold", "cse", "dce"]


def compile_dir(tmp_path, target, passes="default", dtype="bfloat16", layer="all"):
    out = tmp_path / f"{target}-{dtype}-{passes if isinstance(passes, str) else 'fp8'}"
    args = Namespace(model="tiny-v3", layer=layer, passes=passes if isinstance(passes, str) else ",".join(passes),
                     dtype=dtype, target=target, out=str(out), backend="tvm")
    assert compile_layers(args) == 0
    return out


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
@pytest.mark.parametrize("target", ["sm80", "sm90"])
def test_every_emitted_source_compiles_with_nvcc(tmp_path, target):
    for passes in ("default", FP8):
        out = compile_dir(tmp_path, target, passes)
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["archs"] == [int(target[2:])] and manifest["definitions"]
        for entry in manifest["definitions"].values():
            src = out / entry["files"][target[2:]]
            r = subprocess.run(["nvcc", f"-arch=sm_{target[2:]}", "-cubin", "-o", str(src) + ".cubin", str(src)],
                               capture_output=True, text=True)
            assert r.returncode == 0, f"{src.name}: {r.stderr[:3000]}"
            names = [k["name"] for k in entry["kernels"]]
            assert names and all(f'void {n}(' in src.read_text() or f') {n}(' in src.read_text() for n in names)


class Spy:
    """An artifact set that records what the launchers ask for and supplies nothing
    (so the llvm kernels run)."""

    def __init__(self):
        self.keys = set()

    def kernel(self, key):
        self.keys.add(key)


@pytest.mark.parametrize("passes", ["default", "none", FP8], ids=["default", "none", "fp8"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_manifest_holds_every_kernel_the_launchers_ask_for(passes, dtype):
    """The keys are computed twice, from the IR (compile) and from tensors (run): they
    must agree, prefill through the naive branch and decode through the absorbed one."""
    cfg = Config.preset("tiny-v3")
    spy = Spy()
    with build.use_artifacts(spy):
        mla = MLA(cfg, backend="tvm", passes=passes, dtype=dtype)
        mla.load_state_dict(random_checkpoint(cfg, "mla", seed=0))
        # a prefill just past absorb's crossover takes the naive branch; decode the absorbed one
        naive = 1 + max((n.attrs["le"] for n in mla.graph.nodes() if n.op == "dispatch"), default=4)
        cache = mla.new_cache(1, naive + 4)
        for t in (naive, 1, 2):
            start = torch.tensor(cache.lengths())
            mla(torch.randn(1, t, cfg.hidden_size).to(dtype), start[:, None] + torch.arange(t)[None], cache)
        moe = MoE(cfg, backend="tvm", passes=passes, dtype=dtype)
        moe.load_state_dict(random_checkpoint(cfg, "moe", seed=0))
        moe(torch.randn(5, cfg.hidden_size).to(dtype))
    static = {key for g in (mla.graph, moe.graph) for grp in schedule(g) for key, _ in kernel_defs(grp, "cuda")}
    assert spy.keys and spy.keys <= static, sorted(spy.keys - static)


def test_manifest_expressions_are_evaluated_not_executed():
    env = {"B": 3, "T": 5}
    assert evaluate("((B * T) + 127) // 128", env) == 1
    assert evaluate("max(B, T) - min(B, 2) % 2", env) == 5
    with pytest.raises(DscError, match="S is not bound"):
        evaluate("S + 1", env)
    with pytest.raises(DscError, match="unsupported syntax"):
        evaluate("__import__('os')", env)


def test_the_launcher_binds_dims_allocates_scratch_and_orders_arguments(tmp_path):
    out = compile_dir(tmp_path, "sm90", dtype="float32", layer="mla")
    arts = Artifacts(str(out), 90)
    (key,) = [k for k, e in arts.manifest["definitions"].items() if e["symbol"].startswith("row_rms_norm_")][:1]
    entry = arts.manifest["definitions"][key]
    args = [torch.randn([2, 3, *[int(d) for d in b["shape"][2:]]] if len(b["shape"]) > 1 else [int(b["shape"][0])])
            for b in entry["buffers"] if not b["scratch"]]
    env = bind_dims(entry, args)
    assert env == {"B": 2, "T": 3}
    plan, buffers = launches(entry, args, env)
    scratch = [b for b in entry["buffers"] if b["scratch"]]
    assert len(buffers) == len(args) + len(scratch) and list(buffers[-1].shape) == [2, 3]  # RMSNorm's sums
    params = {k["name"]: k["params"] for k in entry["kernels"]}
    for name, grid, block, kernel_args in plan:
        assert grid[0] * block[0] >= 2 * 3  # every row covered
        for (value, kind), (want_kind, ref) in zip(kernel_args, params[name]):
            assert kind == want_kind and value == (buffers[ref].data_ptr() if kind == "ptr" else env[ref])
    with pytest.raises(DscError, match="must be float32"):
        bind_dims(entry, [args[0][:, :, :1]] + args[1:])


@pytest.mark.parametrize("passes, dtype", [("default", "float32"), (FP8, "bfloat16")], ids=["default", "fp8"])
def test_what_dsc_compile_writes_passes_the_manifest_schema(tmp_path, passes, dtype):
    """The runtime's schema (tests/runtime/test_nvrtc_artifacts.py) accepts the writer's
    every definition, and each one's launches plan on CPU tensors up to NVRTC."""
    from dsc.runtime.nvrtc import _DTYPES

    out = compile_dir(tmp_path, "sm80", passes, dtype=dtype)
    arts = Artifacts(str(out), 86)
    assert arts.arch == 80 and arts.manifest["definitions"]
    for key, entry in arts.manifest["definitions"].items():
        assert 'extern "C"' in arts.kernel(key).source
        env = {name: 2 for name in entry["vars"]}
        args = [torch.zeros([evaluate(d, env) for d in b["shape"]], dtype=_DTYPES[b["dtype"]])
                for b in entry["buffers"] if not b["scratch"]]
        plan, _ = launches(entry, args, bind_dims(entry, args))
        assert [name for name, *_ in plan] == [k["name"] for k in entry["kernels"]]


def test_artifacts_are_refused_with_a_reason(tmp_path):
    with pytest.raises(DscError, match="no manifest.json"):
        Artifacts(str(tmp_path), 90)
    (tmp_path / "manifest.json").write_text(json.dumps({"backend": "triton"}))
    with pytest.raises(DscError, match="for backend 'triton', not tvm"):
        Artifacts(str(tmp_path), 90)
    out = compile_dir(tmp_path, "sm90", dtype="float32", layer="moe")
    with pytest.raises(DscError, match=r"compiled for sm_\[90\], this device is sm_80"):
        Artifacts(str(out), 80)
    with pytest.raises(DscError, match="no kernel"):
        Artifacts(str(out), 90).kernel("define_nt('float64', 3)")
