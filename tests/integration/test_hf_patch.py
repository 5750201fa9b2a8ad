"""dsc.integrations.hf.patch: a tiny random transformers DeepSeek model (two layers, one
dense and one MoE) patched by dsc gives the unpatched model's logits and the same
greedy and beam-search generations, on every backend; transformers' cache operations
(crop, beam reorder, several return sequences) reach dsc's latent cache; what dsc
cannot run is refused, the model left unchanged."""

import copy
import logging

import pytest
import torch
from hypothesis import given, settings

import dsc
from dsc.errors import ConfigError, DscError, InputError
from dsc.passes.fp8 import error_bound
from strategies import hf_configs, seeds
from util import BF16_TOL, COMPILED_BACKENDS, F32_TOL, assert_close

transformers = pytest.importorskip("transformers")
from transformers import DynamicCache  # noqa: E402

from dsc.integrations import hf as dsc_hf  # noqa: E402
from dsc.integrations.hf import PatchedAttention, patch  # noqa: E402
from dsc.nn import MLA, MoE  # noqa: E402
from dsc.eager.hf import hf_causal_lm  # noqa: E402

logging.getLogger("transformers").setLevel(logging.ERROR)
BACKENDS = ["reference", *COMPILED_BACKENDS]


def pair(cfg, seed=0, dtype=torch.float32, backend="reference", passes="default"):
    """(unpatched, patched) copies of one random model."""
    model = hf_causal_lm(cfg, seed=seed, dtype=dtype)
    return model, patch(copy.deepcopy(model), backend=backend, passes=passes)


def prompt(batch=2, length=6, seed=1, vocab=64):
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("preset", ["tiny-v2", "tiny-v3"])
def test_patched_logits_and_greedy_generation_match(preset, backend):
    ref, model = pair(dsc.Config.preset(preset), backend=backend)
    assert isinstance(model.model.layers[0].self_attn, PatchedAttention)
    assert isinstance(model.model.layers[1].mlp, MoE) and not isinstance(model.model.layers[0].mlp, MoE)
    ids = prompt()
    assert_close(model(ids).logits, ref(ids).logits, F32_TOL, f"logits ({backend})")
    assert_close(model(ids, use_cache=False).logits, ref(ids).logits, F32_TOL, "logits without a cache")
    want = ref.generate(ids, max_new_tokens=6, do_sample=False)
    got = model.generate(ids, max_new_tokens=6, do_sample=False)
    assert got.shape == (2, 12) and torch.equal(got, want)


@settings(max_examples=6)
@given(cfg=hf_configs(3), seed=seeds)
def test_patched_logits_match_on_drawn_configs(cfg, seed):
    ref, model = pair(cfg, seed=seed % 1000)
    ids = prompt(seed=seed)
    assert_close(model(ids).logits, ref(ids).logits, F32_TOL, "logits")


def test_beam_search_and_several_return_sequences_rearrange_the_latent_cache():
    ref, model = pair(dsc.Config.preset("tiny-v3"))
    ids = prompt()
    kw = dict(max_new_tokens=5, do_sample=False, num_beams=3, num_return_sequences=2)
    assert torch.equal(model.generate(ids, **kw), ref.generate(ids, **kw))


def same_through_a_cache(preset, steps, what):
    """steps(model, cache) -> logits, run on the unpatched and the patched model, each
    with a fresh DynamicCache: the patched logits must match."""
    ref, model = pair(dsc.Config.preset(preset))
    outs = [steps(m, DynamicCache(config=m.config)) for m in (ref, model)]
    assert_close(outs[1], outs[0], F32_TOL, what)


def test_a_cropped_cache_is_followed():
    ids = prompt(length=8)

    def steps(m, cache):
        m(ids, past_key_values=cache)
        cache.crop(-3)  # roll back three tokens, as assisted decoding does
        out = m(ids[:, 5:7], past_key_values=cache).logits
        assert cache.get_seq_length() == 7
        return out
    same_through_a_cache("tiny-v2", steps, "logits after a crop")


def test_a_reorder_then_a_crop_reads_the_right_rows():
    """After dsc rearranges its rows every placeholder names the new ones, so a crop back
    past the rearrangement still maps each row to its own latents."""
    ids = prompt(length=6)

    def steps(m, cache):
        m(ids, past_key_values=cache)
        cache.reorder_cache(torch.tensor([1, 0]))
        m(ids[:, :1], past_key_values=cache)
        cache.crop(-1)
        return m(ids[:, 1:3], past_key_values=cache).logits
    same_through_a_cache("tiny-v3", steps, "logits after reorder, decode, crop")


def test_a_copied_prompt_cache_is_reused():
    """transformers' prompt reuse: deepcopy a prefilled cache, continue from each copy."""
    ids = prompt(length=5)

    def steps(m, prompt_cache):
        m(ids, past_key_values=prompt_cache)
        return torch.cat([m(ids[:, i:i + 1], past_key_values=copy.deepcopy(prompt_cache)).logits for i in range(2)])
    same_through_a_cache("tiny-v2", steps, "logits from a copied prompt cache")


def test_caches_other_than_dynamic_are_refused():
    _, model = pair(dsc.Config.preset("tiny-v3"))
    cache = transformers.StaticCache(config=model.config, max_cache_len=16)
    with pytest.raises(DscError, match="supports transformers' DynamicCache"):
        model(prompt(), past_key_values=cache)


def test_the_latent_cache_grows_past_its_first_capacity(monkeypatch):
    monkeypatch.setattr(dsc_hf, "MIN_CAPACITY", 4)
    ref, model = pair(dsc.Config.preset("tiny-v3"))
    ids = prompt(length=3)
    want = ref.generate(ids, max_new_tokens=10, do_sample=False)
    cache = DynamicCache(config=model.config)
    got = model.generate(ids, max_new_tokens=10, do_sample=False, past_key_values=cache)
    assert torch.equal(got, want)
    latent = cache.layers[0].dsc_rows.latent
    assert latent.max_seq_len >= 12 and latent.lengths() == [12, 12]  # the last token is never fed back


def test_bf16_model_matches_within_bf16_tolerance():
    ref, model = pair(dsc.Config.preset("tiny-v3"), dtype=torch.bfloat16)
    assert model.model.layers[0].self_attn.mla.dtype == torch.bfloat16
    ids = prompt()
    assert_close(model(ids).logits.float(), ref(ids).logits.float(), BF16_TOL, "bf16 logits")


def test_passes_reach_the_patched_modules():
    """Through a whole model FP8's error compounds (and flips routing); per layer it stays
    within the graph's bound, as tests/nn/test_hf_oracle.py checks across configs."""
    fp8 = ["absorb", "fuse_experts", "fp8", "fold", "cse", "dce"]
    ref, model = pair(dsc.Config.preset("tiny-v3"), passes=fp8)
    moe, attn = model.model.layers[1].mlp, model.model.layers[1].self_attn.mla
    assert any(n.op == "grouped_gemm_fp8" for n in moe.graph.nodes())
    assert any(n.op == "fp8_linear" for n in attn.graph.nodes())
    x = torch.randn(2, 5, 64, generator=torch.Generator().manual_seed(2))
    assert_close(moe(x), ref.model.layers[1].mlp(x), max(F32_TOL, error_bound(moe.graph)), "fp8 MoE layer")
    assert torch.isfinite(model(prompt()).logits).all()


def test_weights_are_carried_over():
    ref, model = pair(dsc.Config.preset("tiny-v3"))
    attn, mla = ref.model.layers[1].self_attn, model.model.layers[1].self_attn.mla
    assert isinstance(mla, MLA)
    assert torch.equal(mla.kv_b_proj.weight, attn.kv_b_proj.weight)
    moe = model.model.layers[1].mlp
    assert torch.equal(moe.gate.e_score_correction_bias, ref.model.layers[1].mlp.gate.e_score_correction_bias)


# -- refusals -------------------------------------------------------------------------------------

def test_a_model_that_is_not_deepseek_is_refused_and_unchanged():
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                   num_attention_heads=4, num_key_value_heads=4)
    llama = transformers.LlamaForCausalLM(cfg).eval()
    before = {k: v.clone() for k, v in llama.state_dict().items()}
    modules = [type(m) for m in llama.modules()]
    with pytest.raises(ConfigError, match="expected a transformers DeepSeek-V2/V3 model, got LlamaForCausalLM"):
        patch(llama)
    assert [type(m) for m in llama.modules()] == modules
    assert all(torch.equal(v, before[k]) for k, v in llama.state_dict().items())
    with pytest.raises(ConfigError, match="got Linear"):
        patch(torch.nn.Linear(2, 2))


def test_a_config_dsc_cannot_run_leaves_the_model_unchanged():
    model = hf_causal_lm(dsc.Config.preset("tiny-v3"))
    model.config.attention_bias = True  # the weights say otherwise; dsc refuses before touching anything
    with pytest.raises(ConfigError, match="attention_bias"):
        patch(model)
    assert not any(isinstance(m, (PatchedAttention, MoE)) for m in model.modules())


def test_patching_twice_is_refused():
    _, model = pair(dsc.Config.preset("tiny-v3"))
    with pytest.raises(ConfigError, match="already patched"):
        patch(model)


def left_padded(batch=3, length=7, seed=1):
    """A prompt batch as a tokenizer pads it on the left: rows of 4, 7 and 6 tokens."""
    ids = prompt(batch, length, seed)
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    mask[2, :1] = 0
    return ids, mask


@pytest.mark.parametrize("backend", BACKENDS)
def test_left_padded_batches_match(backend):
    """Each row's real tokens run alone and the padding is never cached; transformers
    masks it instead. Logits at real positions and greedy and beam generations match."""
    ref, model = pair(dsc.Config.preset("tiny-v3"), backend=backend)
    ids, mask = left_padded()
    real = mask.bool()
    assert_close(model(ids, attention_mask=mask).logits[real], ref(ids, attention_mask=mask).logits[real], F32_TOL,
                 "left-padded logits")
    for kw in (dict(max_new_tokens=5), dict(max_new_tokens=4, num_beams=2, num_return_sequences=2)):
        want = ref.generate(ids, attention_mask=mask, do_sample=False, **kw)
        assert torch.equal(model.generate(ids, attention_mask=mask, do_sample=False, **kw), want), kw


def test_a_left_padded_cache_is_cropped_and_continued():
    ids, mask = left_padded()
    more = prompt(3, 2, seed=9)

    def steps(m, cache):
        m(ids, attention_mask=mask, past_key_values=cache)
        cache.crop(-2)
        return m(more, attention_mask=torch.cat([mask[:, :-2], torch.ones_like(more)], 1), past_key_values=cache).logits
    same_through_a_cache("tiny-v2", steps, "logits after a crop of a left-padded cache")


def test_padding_other_than_on_the_left_is_refused():
    _, model = pair(dsc.Config.preset("tiny-v3"))
    ids = prompt()
    mask = torch.ones_like(ids)
    mask[0, -2:] = 0  # right padding
    with pytest.raises(InputError, match="only left padding"):
        model(ids, attention_mask=mask)
    with pytest.raises(InputError, match="only left padding"):
        model.model(ids, mask)  # the inner model, the mask passed by position
    model(ids, attention_mask=torch.ones_like(ids))  # an all-ones mask is fine


def test_settings_transformers_ignores_are_warned_about(caplog):
    cfg = dsc.Config.preset("tiny-v2")
    model = hf_causal_lm(cfg)
    model.config.norm_topk_prob = True
    with caplog.at_level(logging.WARNING, logger="dsc"):
        patch(model)
    assert "never renormalises" in caplog.text
