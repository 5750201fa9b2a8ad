"""Hugging Face transformers' DeepSeek-V2/V3 layers as the outside oracle.

HF 5.23 hard-wires parts of the config that DeepSeek's own code reads (see
shared/NOTES.md): V2 always scores with softmax, never renormalises, always rotates
adjacent pairs and cannot run noaux_tc; V3 always routes sigmoid/noaux_tc and
normalises even a single expert's weight; YaRN given only one of mscale /
mscale_all_dim is scaled differently. The strategies below therefore draw only the
settings where HF computes DeepSeek's function; the other settings are covered against
dsc.eager in test_layers_vs_eager.py.
"""

import logging

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dsc.config import Config
from dsc.nn import MLA, MoE, random_checkpoint
from dsc.passes.fp8 import error_bound
from strategies import fp8_configs, hf_configs, seeds
from util import COMPILED_BACKENDS, F32_TOL, assert_close

transformers = pytest.importorskip("transformers")
from transformers import DynamicCache  # noqa: E402

from dsc.eager.hf import causal_mask, hf_modules, to_hf5_experts  # noqa: E402

logging.getLogger("transformers").setLevel(logging.ERROR)


FP8_PIPELINE = ["absorb", "fuse_experts", "fp8", "fp8_kv", "fold", "cse", "dce"]
PIPELINES = ["none", "default", FP8_PIPELINE]


def tolerance(module) -> float:
    """float32 tolerance, or the FP8 error bound of the compiled graph where it has FP8."""
    return max(F32_TOL, error_bound(module.graph))


def check_mla_against_hf(version, passes, data, seed, backend="reference"):
    fp8 = passes == FP8_PIPELINE
    cfg = data.draw(fp8_configs(hf_configs(version)) if fp8 else hf_configs(version))
    batch, prefill = data.draw(st.integers(1, 2)), data.draw(st.integers(4 if fp8 else 1, 8))
    _, attn, _, rotary = hf_modules(cfg)
    sd = random_checkpoint(cfg, "mla", seed=seed)
    attn.load_state_dict(sd, strict=True)
    mla = MLA(cfg, passes=passes, backend=backend)
    mla.load_state_dict(sd)
    cache, hf_cache = mla.new_cache(batch, prefill + 2), DynamicCache()
    gen = torch.Generator().manual_seed(seed)
    past = 0
    for t in (prefill, 1, 1):
        x = torch.randn(batch, t, cfg.hidden_size, generator=gen)
        pos = torch.arange(past, past + t).repeat(batch, 1)
        ref, _ = attn(hidden_states=x, position_embeddings=rotary(x, pos), attention_mask=causal_mask(t, past),
                      past_key_values=hf_cache)
        assert_close(mla(x, pos, cache), ref, tolerance(mla), f"MLA vs HF (t={t}, past={past}, {passes}, {backend})")
        past += t


@pytest.mark.parametrize("passes", PIPELINES, ids=["none", "default", "fp8"])
@pytest.mark.parametrize("version", [2, 3])
@given(data=st.data(), seed=seeds)
def test_mla_prefill_and_decode_match_hf(version, passes, data, seed):
    check_mla_against_hf(version, passes, data, seed)


@pytest.mark.parametrize("passes", PIPELINES, ids=["none", "default", "fp8"])
@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
@settings(max_examples=10)  # Triton's interpreter: about half a second a call
@given(data=st.data(), seed=seeds)
def test_compiled_mla_prefill_and_decode_match_hf(backend, version, passes, data, seed):
    check_mla_against_hf(version, passes, data, seed, backend=backend)


def check_moe_against_hf(version, passes, data, seed, backend="reference"):
    cfg = data.draw(fp8_configs(hf_configs(version)) if passes == FP8_PIPELINE else hf_configs(version))
    _, _, hf_moe, _ = hf_modules(cfg)
    sd = random_checkpoint(cfg, "moe", seed=seed)
    hf_sd = to_hf5_experts(cfg, sd)
    hf_moe.load_state_dict(hf_sd, strict=True)
    moe = MoE(cfg, passes=passes, backend=backend)
    moe.load_state_dict(hf_sd)
    x = torch.randn(2, data.draw(st.integers(1, 12)), cfg.hidden_size, generator=torch.Generator().manual_seed(seed))
    assert_close(moe(x), hf_moe(x), tolerance(moe), f"MoE vs HF ({passes}, {backend})")


@pytest.mark.parametrize("passes", PIPELINES, ids=["none", "default", "fp8"])
@pytest.mark.parametrize("version", [2, 3])
@given(data=st.data(), seed=seeds)
def test_moe_matches_hf(version, passes, data, seed):
    check_moe_against_hf(version, passes, data, seed)


@pytest.mark.parametrize("passes", PIPELINES, ids=["none", "default", "fp8"])
@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
@settings(max_examples=10)  # Triton's interpreter
@given(data=st.data(), seed=seeds)
def test_compiled_moe_matches_hf(backend, version, passes, data, seed):
    check_moe_against_hf(version, passes, data, seed, backend=backend)


def test_presets_with_q_lora_null_and_yarn_match_hf():
    """The tiny V2-Lite preset: no q-LoRA, YaRN, softmax/greedy, two shared experts."""
    cfg = Config.preset("tiny-v2-lite")
    assert cfg.q_lora_rank is None and cfg.rope_scaling is not None
    _, attn, hf_moe, rotary = hf_modules(cfg)
    sd = random_checkpoint(cfg, "mla", seed=11)
    attn.load_state_dict(sd)
    mla = MLA(cfg)
    mla.load_state_dict(sd)
    x = torch.randn(2, 9, cfg.hidden_size)
    pos = torch.arange(9).repeat(2, 1)
    ref, _ = attn(hidden_states=x, position_embeddings=rotary(x, pos), attention_mask=causal_mask(9, 0))
    assert_close(mla(x, pos, mla.new_cache(2, 9)), ref, F32_TOL)
