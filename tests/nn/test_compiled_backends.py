"""The compiled backends end to end (triton: its interpreter on a CPU; tvm: llvm): the
modules against the reference backend and the independent eager implementation."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dsc.codegen.schedule import schedule
from dsc.config import Config
from dsc.eager import EagerMLA, eager_moe
from dsc.errors import DscError
from dsc.nn import MLA, MoE, random_checkpoint
from strategies import configs, poison, poisoned_rows, seeds
from util import COMPILED_BACKENDS, F32_TOL, assert_close



@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
@settings(max_examples=8)  # Triton's interpreter: about half a second a call
@given(cfg=configs(), seed=seeds, passes=st.sampled_from(["default", "none"]), data=st.data())
def test_mla_matches_eager_over_prefill_and_ragged_decode(backend, cfg, seed, passes, data):
    batch = data.draw(st.integers(1, 3))
    prefill = data.draw(st.integers(1, 6))
    sd = random_checkpoint(cfg, "mla", seed=seed)
    mla = MLA(cfg, backend=backend, passes=passes)
    mla.load_state_dict(sd)
    eager = EagerMLA(cfg, sd)
    gen = torch.Generator().manual_seed(seed)
    cache = mla.new_cache(batch, prefill + 3)
    x = torch.randn(batch, prefill, cfg.hidden_size, generator=gen)
    pos = torch.arange(prefill).repeat(batch, 1)
    rows = [eager.new_state(1) for _ in range(batch)]
    ref = torch.cat([eager(x[b:b + 1], pos[b:b + 1], rows[b]) for b in range(batch)])
    assert_close(mla(x, pos, cache), ref, F32_TOL, "prefill")
    # roll rows back to different lengths, then decode 1 or 2 tokens (multi-token prediction)
    keep = data.draw(st.lists(st.integers(1, prefill), min_size=batch, max_size=batch))
    cache.truncate(keep)
    rows = [eager.new_state(1) for _ in range(batch)]
    for b in range(batch):
        eager(x[b:b + 1, :keep[b]], pos[b:b + 1, :keep[b]], rows[b])
    t = data.draw(st.integers(1, 2))
    x2 = torch.randn(batch, t, cfg.hidden_size, generator=gen)
    pos2 = torch.tensor(keep)[:, None] + torch.arange(t)[None]
    ref2 = torch.cat([eager(x2[b:b + 1], pos2[b:b + 1], rows[b]) for b in range(batch)])
    assert_close(mla(x2, pos2, cache), ref2, F32_TOL, "ragged decode")
    assert cache.lengths() == [k + t for k in keep]


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
@settings(max_examples=15)
@given(cfg=configs(), seed=seeds, passes=st.sampled_from(["default", "none"]), tokens=st.integers(1, 24))
def test_moe_matches_eager(backend, cfg, seed, passes, tokens):
    """Every router (softmax/sigmoid, greedy/group-limited/noaux_tc, renormalized or not),
    shared experts or none, fused (default) and unfused (none)."""
    sd = random_checkpoint(cfg, "moe", seed=seed)
    moe = MoE(cfg, backend=backend, passes=passes)
    moe.load_state_dict(sd)
    x = torch.randn(tokens, cfg.hidden_size, generator=torch.Generator().manual_seed(seed))
    assert_close(moe(x), eager_moe(cfg, sd, x), F32_TOL, f"MoE ({passes})")


@pytest.mark.parametrize("backend", ["reference", *COMPILED_BACKENDS])
@settings(max_examples=6)
@given(cfg=configs(), seed=seeds, passes=st.sampled_from(["default", "none"]), tokens=st.integers(2, 12),
       data=st.data())
def test_moe_tokens_with_non_finite_values_leave_the_others_untouched(backend, cfg, seed, passes, tokens, data):
    """A NaN or inf in some tokens' hidden states (padding garbage) makes their router
    logits non-finite: the layer still runs, and every other token's output is exactly
    what it is in a clean batch."""
    sd = random_checkpoint(cfg, "moe", seed=seed)
    moe = MoE(cfg, backend=backend, passes=passes)
    moe.load_state_dict(sd)
    x = torch.randn(tokens, cfg.hidden_size, generator=torch.Generator().manual_seed(seed))
    bad = data.draw(poisoned_rows(tokens, cfg.hidden_size))
    kept = [r for r in range(tokens) if r not in bad]
    out = moe(poison(x, bad))
    assert_close(out[kept], eager_moe(cfg, sd, x)[kept], F32_TOL, "clean tokens beside poisoned ones")


def reference_and(backend: str, cls, cfg, layer: str, seed: int, **kwargs):
    """(the reference backend's module, the backend's), both loaded with one checkpoint."""
    sd = random_checkpoint(cfg, layer, seed=seed)
    modules = [cls(cfg, backend=b, **kwargs) for b in ("reference", backend)]
    for m in modules:
        m.load_state_dict(sd)
    return modules


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
@pytest.mark.parametrize("passes", ["default", "none"])
def test_bf16_moe_matches_the_reference_backend(backend, passes):
    cfg = Config.preset("tiny-v3")
    ref, tri = reference_and(backend, MoE, cfg, "moe", 5, passes=passes, dtype=torch.bfloat16)
    x = torch.randn(2, 9, cfg.hidden_size, generator=torch.Generator().manual_seed(5)).to(torch.bfloat16)
    assert_close(tri(x).float(), ref(x).float(), 4e-3, "bf16 MoE")


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
@pytest.mark.parametrize("passes", ["default", "none"])
def test_bf16_matches_the_reference_backend(backend, passes):
    cfg = Config.preset("tiny-v3")
    ref, tri = reference_and(backend, MLA, cfg, "mla", 4, passes=passes, dtype=torch.bfloat16)
    c_ref, c_tri = ref.new_cache(2, 8), tri.new_cache(2, 8)
    gen = torch.Generator().manual_seed(4)
    for t in (5, 1):
        start = torch.tensor(c_ref.lengths())
        x = torch.randn(2, t, cfg.hidden_size, generator=gen).to(torch.bfloat16)
        pos = start[:, None] + torch.arange(t)[None]
        # both round every value to bf16 the same way (round-to-nearest-even, also under the
        # interpreter); what differs is float32 summation order inside the kernels
        assert_close(tri(x, pos, c_tri).float(), ref(x, pos, c_ref).float(), 4e-3, f"bf16 t={t}")
    assert_close(c_tri.pages.float(), c_ref.pages.float(), 4e-3, "bf16 cache")


def test_the_schedule_fuses_the_latent_write_and_reads_pages_in_attention():
    mla = MLA(Config.preset("tiny-v3"))
    kinds = [(grp.kind, tuple(n.op for n in grp.nodes)) for grp in schedule(mla.graph)]
    assert ("paged_append", ("paged_append", "concat", "rope", "rms_norm")) in kinds
    assert any(kind == "paged_attention" for kind, _ in kinds)  # the absorbed branch
    assert any(kind == "attention" for kind, _ in kinds)  # the naive branch, for long prefill
    assert all(kind != "rowwise" or "rms_norm" not in ops or "paged_append" in ops or len(ops) >= 1
               for kind, ops in kinds)


def test_the_router_is_one_kernel_with_the_shared_experts_appended():
    moe = MoE(Config.preset("tiny-v3"))
    groups = schedule(moe.graph)
    (router,) = [grp for grp in groups if grp.kind == "router"]
    assert {n.op for n in router.nodes} == {"router_scores", "select_experts", "gather", "normalize_sum", "scale",
                                             "append_const", "append_iota"}
    assert [grp.kind for grp in groups if grp.kind not in ("view", "router")] == [
        "gemm", "moe_align", "grouped_gemm", "grouped_gemm", "moe_combine"]


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
def test_a_graph_with_ops_no_kernel_covers_is_refused_by_name(backend):
    from dsc.ir.build import inp, op
    from dsc.ir import Graph
    from dsc.executor import make_runner

    x, y = inp("x", [4, 8], "f32"), inp("y", [2, 8], "f32")
    g = Graph("odd", [x, y], {"out": op("concat", x, y, axis=0)})  # a concat along rows
    with pytest.raises(DscError, match="no kernel group covers op 'concat'"):
        make_runner(g, backend)
