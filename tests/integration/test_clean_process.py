"""What users run, as they start it: each case in a fresh interpreter without this test
run's TRITON_INTERPRET, so an import-order or install defect shows. On a machine without
CUDA the triton backend must run under Triton's interpreter whatever was imported first
(a transformers DeepSeek model module, triton itself, or a tvm module, whose cache key
reads triton's version)."""

import pytest

from util import installed, run_clean

# Builds `make(backend)` layers on the same weights and prints the triton module's
# relative error against the reference one; PRELUDE runs first.
CASE = """
import torch
{prelude}
import dsc
from dsc.nn import MoE, random_checkpoint

cfg = dsc.Config.preset("tiny-v3")
sd = random_checkpoint(cfg, "moe", seed=0)
x = torch.randn(2, 5, cfg.hidden_size, generator=torch.Generator().manual_seed(1))
outs = {{}}
for backend in {backends}:
    moe = MoE(cfg, backend=backend)
    moe.load_state_dict(sd)
    outs[backend] = moe(x)
ref = outs["reference"]
err = float((outs["triton"] - ref).norm() / ref.norm())
print(f"rel err {{err:.1e}}")
assert err < 1e-5, err
"""

PRELUDES = {
    "triton imported first": ("import triton, triton.language", ("reference", "triton")),
    "transformers' DeepSeek-V3 module first": ("import transformers.models.deepseek_v3.modeling_deepseek_v3",
                                              ("reference", "triton")),
    "a tvm module built first": ("", ("tvm", "reference", "triton")),
}


@pytest.mark.parametrize("case", PRELUDES)
def test_triton_backend_runs_whatever_was_imported_first(case):
    prelude, backends = PRELUDES[case]
    if "transformers" in prelude and not installed("transformers") or "tvm" in backends and not installed("tvm"):
        pytest.skip(f"{case}: needs transformers / tvm")
    done = run_clean(CASE.format(prelude=prelude, backends=backends))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rel err" in done.stdout


def test_readme_patch_call_after_import_dsc_alone():
    """The README writes `import dsc; dsc.integrations.hf.patch(model, ...)`."""
    if not installed("transformers"):
        pytest.skip("needs transformers")
    done = run_clean("""
import copy, torch
import dsc
from dsc.eager.hf import hf_causal_lm
model = hf_causal_lm(dsc.Config.preset("tiny-v2"))
ref = copy.deepcopy(model)
dsc.integrations.hf.patch(model, backend="reference")
ids = torch.randint(0, 64, (1, 5), generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    got, want = model(ids).logits, ref(ids).logits
err = float((got - want).norm() / want.norm())
print(f"rel err {err:.1e}")
assert err < 1e-5, err
""")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rel err" in done.stdout


def test_dsc_submodules_reachable_from_import_dsc():
    done = run_clean("import dsc; print(dsc.ops.mla_decode, dsc.nn.MLA, dsc.integrations.hf.patch)")
    assert done.returncode == 0, done.stderr[-3000:]
