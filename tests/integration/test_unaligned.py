"""Tensors that do not start on a 64-byte boundary: what from_pretrained and
safetensors.torch.load_file hand out (tensors packed back to back in one file mapping)
and any view at an offset. Every backend must read them, and write the latent cache
in place through them, with the aligned result. (The tvm kernels once declared their
buffers 64-byte aligned: LLVM's aligned vector loads then faulted, killing the
process.)"""

import logging

import pytest
import torch

import dsc
from dsc.nn import MLA, MoE, random_checkpoint
from dsc.nn.latent_cache import LatentCache
from util import COMPILED_BACKENDS, F32_TOL, assert_close

BACKENDS = ["reference", *COMPILED_BACKENDS]
SHIFTS = [1, 4]  # elements: off every vector boundary, and off 64 bytes but on 16


def misaligned(t: torch.Tensor) -> bool:
    return t.data_ptr() % 64 != 0


def shifted(t: torch.Tensor, by: int) -> torch.Tensor:
    """t's values in a view `by` elements into a larger buffer (so never 64-byte aligned)."""
    fill = float("nan") if t.is_floating_point() else -1  # around it: a stray read shows
    base = torch.full((t.numel() + by + 3,), fill, dtype=t.dtype)
    view = base[by:by + t.numel()].view(t.shape).copy_(t)
    assert misaligned(view) or t.numel() == 0
    return view


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("preset", ["tiny-v2", "tiny-v3"])
def test_reloaded_checkpoint_patched_matches_unpatched(preset, backend, tmp_path):
    transformers = pytest.importorskip("transformers")
    from dsc.integrations.hf import patch
    from dsc.eager.hf import hf_causal_lm

    logging.getLogger("transformers").setLevel(logging.ERROR)
    hf_causal_lm(dsc.Config.preset(preset)).save_pretrained(tmp_path)  # safetensors

    def load():
        return transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ref, model = load(), load()
    # the reloaded weights sit in one file mapping, back to back: some off 64 bytes
    assert any(misaligned(p) for p in model.model.layers[0].self_attn.parameters())
    assert any(misaligned(p) for p in model.model.layers[1].mlp.parameters())
    model = patch(model, backend=backend)
    ids = torch.randint(0, 64, (2, 6), generator=torch.Generator().manual_seed(1))
    caches = [transformers.DynamicCache(config=m.config) for m in (ref, model)]
    outs = [m(ids, past_key_values=c).logits for m, c in zip((ref, model), caches)]
    assert_close(outs[1], outs[0], F32_TOL, f"prefill logits ({backend})")
    step = ids[:, -1:]
    outs = [m(step, past_key_values=c).logits for m, c in zip((ref, model), caches)]
    assert_close(outs[1], outs[0], F32_TOL, f"decode logits ({backend})")


def mla_run(cfg, backend, sd, x, pos, x2, pos2, by):
    """Prefill then one decode step, every tensor shifted `by` elements (by 0: as made),
    the cache's pages too: (prefill out, decode out, the pages after both)."""
    move = (lambda t: shifted(t, by)) if by else (lambda t: t)
    mla = MLA(cfg, backend=backend)
    mla.load_state_dict({k: move(v) for k, v in sd.items()})
    fresh = mla.new_cache(x.shape[0], x.shape[1] + x2.shape[1])
    cache = LatentCache(move(fresh.pages), move(fresh.block_table), move(fresh.seqlens), fresh.max_seq_len)
    y1 = mla(move(x), move(pos), cache)
    y2 = mla(move(x2), move(pos2), cache)
    assert cache.lengths() == [x.shape[1] + x2.shape[1]] * x.shape[0]
    return y1, y2, cache.pages


@pytest.mark.parametrize("by", SHIFTS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("preset", ["tiny-v2", "tiny-v3"])
def test_mla_on_shifted_weights_inputs_and_cache(preset, backend, by):
    cfg = dsc.Config.preset(preset)
    sd = random_checkpoint(cfg, "mla", seed=3)
    g = torch.Generator().manual_seed(3)
    batch, prompt = 2, 5
    x = torch.randn(batch, prompt, cfg.hidden_size, generator=g)
    pos = torch.arange(prompt).repeat(batch, 1)
    x2 = torch.randn(batch, 1, cfg.hidden_size, generator=g)
    pos2 = torch.full((batch, 1), prompt)
    want = mla_run(cfg, "reference", sd, x, pos, x2, pos2, 0)
    got = mla_run(cfg, backend, sd, x, pos, x2, pos2, by)
    for what, out, ref in zip(("prefill", "decode", "cache pages written in place"), got, want):
        assert_close(out, ref, F32_TOL, f"{what} ({backend}, shifted by {by})")


@pytest.mark.parametrize("by", SHIFTS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("passes", ["default", "none"])  # fused and unfused experts
def test_moe_on_shifted_weights_and_inputs(passes, backend, by):
    cfg = dsc.Config.preset("tiny-v3")
    sd = random_checkpoint(cfg, "moe", seed=4)
    x = torch.randn(7, cfg.hidden_size, generator=torch.Generator().manual_seed(4))
    ref = MoE(cfg, backend="reference", passes=passes)
    ref.load_state_dict(sd)
    moe = MoE(cfg, backend=backend, passes=passes)
    moe.load_state_dict({k: shifted(v, by) for k, v in sd.items()})
    assert_close(moe(shifted(x, by)), ref(x), F32_TOL, f"MoE ({backend}, {passes}, shifted by {by})")


def test_loading_keeps_the_shifted_views():
    """load_state_dict keeps a weight of the right dtype and device as it is (no aligned
    copy), so the tests above hand the kernels the shifted views themselves."""
    cfg = dsc.Config.preset("tiny-v3")
    sd = {k: shifted(v, 1) for k, v in random_checkpoint(cfg, "mla", seed=3).items()}
    mla = MLA(cfg, passes="none")
    mla.load_state_dict(sd)
    assert all(w.data_ptr() == sd[k].data_ptr() for k, w in mla.weights().items())
