"""The Triton latent-cache-write group (RMSNorm + RoPE + paged write) against the IR's
reference ops, under Triton's interpreter, and compiled for sm_80 and sm_90."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from dsc.builders.mla import rope_attrs
from dsc.config import Config, Yarn
from dsc.ir import interpret
from dsc.ir.ops.rope import rope_tables
from latent_append_reference import reference_graph
from strategies import seeds
from util import BF16_TOL, assert_close

import dsc.codegen.triton  # noqa: E402,F401  (before triton: enables its interpreter without CUDA)

triton = pytest.importorskip("triton")
from dsc.codegen.triton.build import compile_for  # noqa: E402
from dsc.codegen.triton.latent_append import SPEC, latent_append, signature, slot_mapping  # noqa: E402

@given(seed=seeds, rank=st.sampled_from([8, 24, 32, 512]), rope=st.sampled_from([2, 6, 8, 64]),
       interleave=st.booleans(), page=st.sampled_from([1, 16, 64]), batch=st.integers(1, 3), tokens=st.integers(1, 3),
       yarn=st.booleans(), dtype=st.sampled_from([torch.float32, torch.bfloat16]), data=st.data())
def test_matches_the_reference_ops(seed, rank, rope, interleave, page, batch, tokens, yarn, dtype, data):
    cfg = Config.preset("tiny-v3").replace(
        kv_lora_rank=rank, qk_rope_head_dim=rope, rope_interleave=interleave,
        rope_scaling=Yarn(factor=40.0, original_max_position_embeddings=64, mscale=1.0, mscale_all_dim=0.707)
        if yarn else None)
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor(data.draw(st.lists(st.integers(0, 70), min_size=batch, max_size=batch)), dtype=torch.int32)
    per_row = -(-(int(lens.max()) + tokens) // page)
    table = torch.randperm(batch * per_row, generator=g).view(batch, per_row).to(torch.int32)
    cache = torch.randn(batch * per_row, page, rank + rope, generator=g).to(dtype)
    kv = torch.randn(batch, tokens, rank + rope, generator=g).to(dtype)
    w = (1 + 0.1 * torch.randn(rank, generator=g)).to(dtype)
    pos = lens[:, None].to(torch.int64) + torch.arange(tokens)[None] + data.draw(st.integers(0, 5000))

    dt = "f32" if dtype == torch.float32 else "bf16"
    ref = interpret(reference_graph(cfg, rank, rope, page, dt),
                    {"kv": kv, "positions": pos, "cache": cache.clone(), "block_table": table, "cache_seqlens": lens},
                    {"w": w})["cache"]
    inv_freq, mscale = rope_tables(rope, rope_attrs(cfg))
    out = cache.clone()
    latent_append(kv.reshape(-1, rank + rope), w, pos, slot_mapping(table, lens, tokens, page), inv_freq, mscale,
                  cfg.rms_norm_eps, out.view(-1, rank + rope), rank, interleave)
    written = torch.zeros(out.shape[:2], dtype=torch.bool)
    written.view(-1)[slot_mapping(table, lens, tokens, page)] = True
    assert torch.equal(out[~written], cache[~written])  # nothing else in the cache moves
    # bf16 under the interpreter truncates on store (shared/NOTES.md): bf16 tolerance there
    tol = 2e-6 if dtype == torch.float32 else BF16_TOL
    assert_close(out[written].float(), ref[written].float(), tol, "latent append")


@pytest.mark.parametrize("arch", [80, 90])
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_compiles_for_a100_and_h100(arch, dtype):
    sig, const = signature(dtype)
    compiled = compile_for(SPEC, sig, const, arch)
    assert f".target sm_{arch}" in compiled["ptx"] and compiled["cubin_bytes"] > 0


def test_triton_imported_first_on_a_cpu_machine_is_a_clear_error():
    import os
    import subprocess
    import sys

    if torch.cuda.is_available():
        pytest.skip("the interpreter is only needed without CUDA")
    code = ("import triton\n"
            "from dsc.codegen.triton.build import load_kernel\n"
            "from dsc.codegen.triton.latent_append import SPEC\n"
            "from dsc.errors import DscError\n"
            "try:\n    load_kernel(SPEC, 'cpu')\nexcept DscError as e:\n    print('refused:', e)\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "refused: Triton was imported before its interpreter was enabled" in r.stdout
