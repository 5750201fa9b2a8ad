import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

import dsc
from dsc import Config, ConfigError
from dsc.presets import PRESET_NAMES
from strategies import LOTS, MANY, configs, junk_values


@pytest.mark.parametrize("name", PRESET_NAMES + ("deepseek-r1",))
def test_presets_are_valid(name):
    cfg = Config.preset(name)
    assert cfg.latent_dim == cfg.kv_lora_rank + cfg.qk_rope_head_dim


def test_full_presets_match_the_released_models():
    v3 = Config.preset("deepseek-v3")
    assert (v3.hidden_size, v3.n_routed_experts, v3.num_experts_per_tok, v3.topk_method) == (7168, 256, 8, "noaux_tc")
    v2 = Config.preset("deepseek-v2")
    assert (v2.hidden_size, v2.n_routed_experts, v2.topk_method, v2.routed_scaling_factor) == \
        (5120, 160, "group_limited_greedy", 16.0)
    lite = Config.preset("deepseek-v2-lite")
    assert lite.q_lora_rank is None and lite.topk_method == "greedy"


def test_unknown_preset_names_the_choices():
    with pytest.raises(ConfigError, match="unknown preset 'v9'.*deepseek-v3"):
        Config.preset("v9")


V3_JSON = {
    "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "vocab_size": 129280,
    "hidden_size": 7168, "intermediate_size": 18432, "moe_intermediate_size": 2048, "num_hidden_layers": 61,
    "num_attention_heads": 128, "num_key_value_heads": 128, "n_shared_experts": 1, "n_routed_experts": 256,
    "routed_scaling_factor": 2.5, "kv_lora_rank": 512, "q_lora_rank": 1536, "qk_rope_head_dim": 64,
    "v_head_dim": 128, "qk_nope_head_dim": 128, "topk_method": "noaux_tc", "n_group": 8, "topk_group": 4,
    "num_experts_per_tok": 8, "first_k_dense_replace": 3, "norm_topk_prob": True, "scoring_func": "sigmoid",
    "hidden_act": "silu", "max_position_embeddings": 163840, "rms_norm_eps": 1e-06, "rope_theta": 10000,
    "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0, "mscale_all_dim": 1.0,
                     "original_max_position_embeddings": 4096, "type": "yarn"},
    "attention_bias": False, "torch_dtype": "bfloat16",
}


def test_from_hf_reads_deepseek_v3_config_json(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(V3_JSON))
    for source in (V3_JSON, tmp_path / "config.json", tmp_path):
        cfg = Config.from_hf(source)
        assert cfg == Config.preset("deepseek-v3")


def test_from_hf_reads_transformers5_rope_parameters():
    d = dict(V3_JSON)
    d.pop("rope_scaling")
    d.pop("rope_theta")
    d["rope_parameters"] = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 40, "beta_fast": 32,
                            "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0,
                            "original_max_position_embeddings": 4096}
    assert Config.from_hf(d) == Config.preset("deepseek-v3")


def test_yarn_defaults_follow_deepseek():
    d = dict(V3_JSON, rope_scaling={"type": "yarn", "factor": 40, "mscale": 0.707})
    y = Config.from_hf(d).rope_scaling
    assert (y.mscale, y.mscale_all_dim, y.beta_fast, y.beta_slow) == (0.707, 0.0, 32.0, 1.0)


@MANY
@given(configs())
def test_to_hf_round_trips(cfg):
    assert Config.from_hf(cfg.to_hf()) == cfg


BAD = [
    ({"qk_rope_head_dim": 63}, "qk_rope_head_dim: must be even"),
    ({"num_experts_per_tok": 300}, "num_experts_per_tok: must not exceed n_routed_experts"),
    ({"n_group": 7}, "n_group: must divide n_routed_experts"),
    ({"topk_group": 9}, "topk_group: must not exceed n_group"),
    ({"scoring_func": "relu"}, "scoring_func: must be one of softmax, sigmoid"),
    ({"topk_method": "best"}, "topk_method: must be one of"),
    ({"hidden_size": 0}, "hidden_size: must be a positive integer"),
    ({"hidden_size": 7168.0}, "hidden_size: must be a positive integer"),
    ({"hidden_size": 1e30}, "hidden_size: must be a positive integer"),
    ({"hidden_size": 10 ** 30}, r"hidden_size: must be at most 1048576 \(2\*\*20\)"),
    ({"moe_intermediate_size": 1 << 21}, "moe_intermediate_size: must be at most"),
    ({"num_attention_heads": 10 ** 6, "num_key_value_heads": 10 ** 6}, "num_attention_heads: must be at most 4096"),
    ({"n_routed_experts": 1 << 17, "n_group": 1, "topk_group": 1}, "n_routed_experts: must be at most 65536"),
    ({"q_lora_rank": 1 << 40}, "q_lora_rank: must be at most"),
    ({"q_lora_rank": -1}, "q_lora_rank: must be a positive integer or null"),
    ({"rms_norm_eps": 0}, "rms_norm_eps: must be a positive number"),
    ({"routed_scaling_factor": float("nan")}, "routed_scaling_factor: must be a positive number"),
    ({"topk_group": 1, "num_experts_per_tok": 40},
     "num_experts_per_tok: must not exceed the experts in the top 1 groups"),
    ({"n_group": 256, "topk_group": 8}, "n_group: must leave at least 2 experts per group"),
    ({"rope_scaling": {"type": "linear", "factor": 2}}, "rope_scaling.type: dsc implements only 'yarn'"),
    ({"rope_scaling": {"type": "yarn", "factor": 0.5}}, r"rope_scaling.factor: must be a number >= 1"),
    ({"rope_scaling": {"type": "yarn"}}, "rope_scaling.factor: required"),
    ({"hidden_act": "gelu"}, "hidden_act: dsc implements only"),
    ({"attention_bias": True}, "attention_bias"),
    ({"num_key_value_heads": 1}, "num_key_value_heads: MLA needs it equal"),
    ({"model_type": "llama"}, "model_type"),
]


@pytest.mark.parametrize("change,message", BAD)
def test_invalid_configs_name_field_and_rule(change, message):
    with pytest.raises(ConfigError, match=message):
        Config.from_hf({**V3_JSON, **change})


def test_missing_field_is_named():
    d = dict(V3_JSON)
    del d["kv_lora_rank"]
    with pytest.raises(ConfigError, match="kv_lora_rank: required field is missing"):
        Config.from_hf(d)


def test_malformed_json_and_missing_file(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text('{"hidden_size": 12,')
    with pytest.raises(ConfigError, match="not valid JSON"):
        Config.from_hf(bad)
    with pytest.raises(ConfigError, match="not found"):
        Config.from_hf(tmp_path / "absent.json")
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must hold a JSON object"):
        Config.from_hf(bad)


def test_config_error_is_a_dsc_error():
    assert issubclass(ConfigError, dsc.DscError) and issubclass(ConfigError, ValueError)


def test_softmax_scale_includes_yarn_mscale_squared():
    cfg = Config.preset("deepseek-v3")
    m = 0.1 * 1.0 * __import__("math").log(40) + 1.0
    assert cfg.softmax_scale == pytest.approx(192 ** -0.5 * m * m, rel=1e-12)
    assert cfg.replace(rope_scaling=None).softmax_scale == pytest.approx(192 ** -0.5, rel=1e-12)


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfe\x00binary\x80", r"is not UTF-8 text \(byte 0xff at offset 0\)"),
    (b"[" * 100_000 + b"]" * 100_000, "its JSON nests too deeply"),
    (b'{"hidden_size": ' + b"7" * 5000 + b"}", "is not valid JSON"),  # more digits than int() converts
    (b" " * ((1 << 20) + 1), "is larger than 1 MiB"),
])
def test_unreadable_config_files_are_config_errors(tmp_path, content, message):
    path = tmp_path / "config.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as e:
        Config.from_hf(path)
    assert str(path) in str(e.value)


@LOTS
@given(field=st.sampled_from(sorted(V3_JSON)), value=junk_values)
def test_any_value_in_any_field_is_accepted_or_a_config_error(field, value):
    """What a config.json may hold: a config is built, or ConfigError names the problem;
    never another exception (a traceback in the CLI)."""
    try:
        Config.from_hf({**V3_JSON, field: value})
    except ConfigError as e:
        assert str(e)
