"""The latent-cache write (RMSNorm + RoPE + paged write: one generated Triton kernel; a
TVM row kernel and its scatter) against the IR's reference ops."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from dsc.codegen.schedule import schedule
from dsc.config import Config, Yarn
from dsc.ir import interpret
from latent_append_reference import latent_case, reference_graph
from strategies import seeds
from dsc.executor import make_runner
from util import BF16_TOL, COMPILED_BACKENDS, assert_close


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
@given(seed=seeds, rank=st.sampled_from([8, 24, 32, 512]), rope=st.sampled_from([2, 6, 8, 64]),
       interleave=st.booleans(), page=st.sampled_from([1, 16, 64]), batch=st.integers(1, 3), tokens=st.integers(1, 3),
       yarn=st.booleans(), dtype=st.sampled_from([torch.float32, torch.bfloat16]), data=st.data())
def test_matches_the_reference_ops(backend, seed, rank, rope, interleave, page, batch, tokens, yarn, dtype, data):
    cfg = Config.preset("tiny-v3").replace(
        kv_lora_rank=rank, qk_rope_head_dim=rope, rope_interleave=interleave,
        rope_scaling=Yarn(factor=40.0, original_max_position_embeddings=64, mscale=1.0, mscale_all_dim=0.707)
        if yarn else None)
    lens = torch.tensor(data.draw(st.lists(st.integers(0, 70), min_size=batch, max_size=batch)), dtype=torch.int32)
    inputs, params, written = latent_case(torch.Generator().manual_seed(seed), rank, rope, page, lens, tokens, dtype,
                                          data.draw(st.integers(0, 5000)))
    g = reference_graph(cfg, rank, rope, page, "f32" if dtype == torch.float32 else "bf16")
    assert [grp.kind for grp in schedule(g) if grp.kind != "view"] == ["paged_append"]  # one kernel
    cache = inputs["cache"]
    ref = interpret(g, {**inputs, "cache": cache.clone()}, params)["cache"]
    out = make_runner(g, backend)({**inputs, "cache": cache.clone()}, params)["cache"]
    assert torch.equal(out[~written], cache[~written])  # nothing else in the cache moves
    tol = 2e-6 if dtype == torch.float32 else BF16_TOL
    assert_close(out[written].float(), ref[written].float(), tol, "latent append")
