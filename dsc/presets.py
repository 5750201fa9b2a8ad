"""Built-in configs: the released DeepSeek models and tiny CPU-sized versions of them.

The full presets copy the layer fields of the released `config.json` files. The tiny
ones keep every feature of their full sibling (q-LoRA or not, YaRN, router kind, group
limits, shared experts) at sizes a CPU runs in milliseconds.
"""

from __future__ import annotations

from dsc.config import Config, Yarn
from dsc.errors import ConfigError

_V2_YARN = Yarn(factor=40.0, original_max_position_embeddings=4096, beta_fast=32.0, beta_slow=1.0,
                mscale=0.707, mscale_all_dim=0.707)
_V3_YARN = Yarn(factor=40.0, original_max_position_embeddings=4096, beta_fast=32.0, beta_slow=1.0,
                mscale=1.0, mscale_all_dim=1.0)
_MLA_DIMS = dict(kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128)

_PRESETS: dict[str, dict] = {
    "deepseek-v2": dict(
        model_type="deepseek_v2", hidden_size=5120, num_attention_heads=128, q_lora_rank=1536, **_MLA_DIMS,
        rope_scaling=_V2_YARN, n_routed_experts=160, n_shared_experts=2, num_experts_per_tok=6,
        moe_intermediate_size=1536, n_group=8, topk_group=3, topk_method="group_limited_greedy",
        scoring_func="softmax", norm_topk_prob=False, routed_scaling_factor=16.0),
    "deepseek-v2-lite": dict(
        model_type="deepseek_v2", hidden_size=2048, num_attention_heads=16, q_lora_rank=None, **_MLA_DIMS,
        rope_scaling=_V2_YARN, n_routed_experts=64, n_shared_experts=2, num_experts_per_tok=6,
        moe_intermediate_size=1408, n_group=1, topk_group=1, topk_method="greedy",
        scoring_func="softmax", norm_topk_prob=False, routed_scaling_factor=1.0),
    "deepseek-v3": dict(
        model_type="deepseek_v3", hidden_size=7168, num_attention_heads=128, q_lora_rank=1536, **_MLA_DIMS,
        rope_scaling=_V3_YARN, n_routed_experts=256, n_shared_experts=1, num_experts_per_tok=8,
        moe_intermediate_size=2048, n_group=8, topk_group=4, topk_method="noaux_tc",
        scoring_func="sigmoid", norm_topk_prob=True, routed_scaling_factor=2.5),
}
_TINY_MLA = dict(kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16)
_TINY_YARN = Yarn(factor=4.0, original_max_position_embeddings=64, mscale=0.707, mscale_all_dim=0.707)
_PRESETS.update({
    "tiny-v2": dict(
        model_type="deepseek_v2", hidden_size=64, num_attention_heads=4, q_lora_rank=24, **_TINY_MLA,
        rope_scaling=_TINY_YARN, n_routed_experts=8, n_shared_experts=2, num_experts_per_tok=3,
        moe_intermediate_size=16, n_group=4, topk_group=2, topk_method="group_limited_greedy",
        scoring_func="softmax", norm_topk_prob=False, routed_scaling_factor=4.0),
    "tiny-v2-lite": dict(
        model_type="deepseek_v2", hidden_size=64, num_attention_heads=4, q_lora_rank=None, **_TINY_MLA,
        rope_scaling=_TINY_YARN, n_routed_experts=8, n_shared_experts=2, num_experts_per_tok=3,
        moe_intermediate_size=16, topk_method="greedy", scoring_func="softmax"),
    "tiny-v3": dict(
        model_type="deepseek_v3", hidden_size=64, num_attention_heads=4, q_lora_rank=24, **_TINY_MLA,
        rope_scaling=Yarn(factor=4.0, original_max_position_embeddings=64, mscale=1.0, mscale_all_dim=1.0),
        n_routed_experts=16, n_shared_experts=1, num_experts_per_tok=4, moe_intermediate_size=16,
        n_group=4, topk_group=2, topk_method="noaux_tc", scoring_func="sigmoid", norm_topk_prob=True,
        routed_scaling_factor=2.5),
})
PRESET_NAMES = tuple(_PRESETS)
DEFAULT_PRESET = "tiny-v3"


def preset(name: str) -> Config:
    """A built-in config by name; `deepseek-r1` is an alias of `deepseek-v3`."""
    key = {"deepseek-r1": "deepseek-v3"}.get(name, name)
    if key not in _PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESET_NAMES)}, deepseek-r1")
    return Config(name=name, **_PRESETS[key])
