"""Hugging Face transformers' DeepSeek-V2/V3 layers built from a dsc Config: the outside
oracle of the tests and the baseline of the CPU benchmark. transformers is optional
(the `test` extra); dsc.integrations.hf.hf_divergences lists where its layers ignore config fields."""

from __future__ import annotations

import copy

import torch

from dsc.config import Config
from dsc.errors import DscError, install_hint


def _transformers():
    try:
        import transformers
    except ImportError:
        raise DscError(f"Hugging Face's layers need transformers: {install_hint('hf')}") from None
    return transformers


def hf_config(cfg: Config):
    """The matching DeepseekV2Config / DeepseekV3Config, eager attention and experts."""
    tf = _transformers()
    d = copy.deepcopy(cfg.to_hf())  # HF mutates rope dicts in place
    d["num_key_value_heads"] = cfg.num_attention_heads
    d["max_position_embeddings"] = (cfg.rope_scaling.original_max_position_embeddings * int(cfg.rope_scaling.factor)
                                    if cfg.rope_scaling else 4096)
    cls = tf.DeepseekV2Config if cfg.model_type == "deepseek_v2" else tf.DeepseekV3Config
    hc = cls(**d)
    hc._attn_implementation = "eager"
    hc._experts_implementation = "eager"
    return hc


def hf_modules(cfg: Config):
    """(HF config, attention layer 0, MoE, rotary embedding), in eval mode."""
    _transformers()
    from transformers.models.deepseek_v2 import modeling_deepseek_v2 as v2
    from transformers.models.deepseek_v3 import modeling_deepseek_v3 as v3

    mod = v2 if cfg.model_type == "deepseek_v2" else v3
    hc = hf_config(cfg)
    attn = (mod.DeepseekV2Attention if mod is v2 else mod.DeepseekV3Attention)(hc, 0).eval()
    moe = (mod.DeepseekV2Moe if mod is v2 else mod.DeepseekV3MoE)(hc).eval()
    rotary = (mod.DeepseekV2RotaryEmbedding if mod is v2 else mod.DeepseekV3RotaryEmbedding)(hc)
    return hc, attn, moe, rotary


def causal_mask(t: int, past: int) -> torch.Tensor:
    """The additive mask of t new tokens after `past` cached ones: [1, 1, t, past + t]."""
    return torch.full((t, past + t), float("-inf")).triu(past + 1)[None, None]


def to_hf5_experts(cfg: Config, sd: dict) -> dict:
    """A dsc/DeepSeek MoE state dict with HF 5's fused expert tensors: gate_up_proj
    [E, 2I, H] (gate rows first) and down_proj [E, H, I]."""
    n = cfg.n_routed_experts
    out = {k: v for k, v in sd.items() if not k.startswith("experts.")}
    out["experts.gate_up_proj"] = torch.stack(
        [torch.cat([sd[f"experts.{i}.gate_proj.weight"], sd[f"experts.{i}.up_proj.weight"]]) for i in range(n)])
    out["experts.down_proj"] = torch.stack([sd[f"experts.{i}.down_proj.weight"] for i in range(n)])
    return out


def hf_causal_lm(cfg: Config, num_hidden_layers: int = 2, first_k_dense_replace: int = 1, vocab_size: int = 64,
                 seed: int = 0, std: float = 0.2, dtype: torch.dtype = torch.float32):
    """A small random DeepseekV2ForCausalLM / DeepseekV3ForCausalLM with cfg's layers (the
    first first_k_dense_replace of them dense), eval mode. Weights ~ N(0, std), norms
    ~ 1 + N(0, std), the noaux_tc bias ~ N(0, std / 2): large enough that greedy
    decoding is not a sequence of near-ties (transformers' own init, std 0.02, is)."""
    tf = _transformers()
    hc = hf_config(cfg)
    hc.num_hidden_layers = num_hidden_layers
    hc.first_k_dense_replace = first_k_dense_replace
    hc.vocab_size = vocab_size
    hc.intermediate_size = 2 * cfg.moe_intermediate_size
    hc.pad_token_id, hc.bos_token_id, hc.eos_token_id = None, None, None  # generate runs its full length
    cls = tf.DeepseekV2ForCausalLM if cfg.model_type == "deepseek_v2" else tf.DeepseekV3ForCausalLM
    model = cls(hc).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in [*model.named_parameters(), *model.named_buffers()]:
            if name.endswith("e_score_correction_bias"):
                p.copy_(torch.randn(p.shape, generator=g) * std / 2)
            elif name.endswith("norm.weight"):
                p.copy_(1 + torch.randn(p.shape, generator=g) * std)
            elif p.is_floating_point() and "rotary" not in name:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model.to(dtype)
