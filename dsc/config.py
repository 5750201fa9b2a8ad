"""`dsc.Config`: one DeepSeek layer's hyper-parameters under Hugging Face field names.

Every rule a config must satisfy is checked when it is made, so nothing downstream
(builders, passes, kernels) ever sees an invalid one. A violation raises
`ConfigError` naming the field and the rule.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from dsc.errors import ConfigError
from dsc.routing import SCORING_FUNCS, TOPK_METHODS, broken_routing_rule



@dataclass(frozen=True)
class Yarn:
    """YaRN rope scaling, with DeepSeek's defaults for the fields a config leaves out.

    DeepSeek's modeling code defaults `mscale` to 1 and `mscale_all_dim` to 0; we fill
    those in rather than guess, so a config giving only one of them means what it
    means there.
    """

    factor: float
    original_max_position_embeddings: int = 4096
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    mscale: float = 1.0
    mscale_all_dim: float = 0.0

    def to_dict(self) -> dict:
        return {"type": "yarn", **dataclasses.asdict(self)}


@dataclass(frozen=True)
class Config:
    """Hyper-parameters of one MLA + DeepSeekMoE layer (HF `config.json` names)."""

    hidden_size: int
    num_attention_heads: int
    q_lora_rank: int | None
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    n_routed_experts: int
    n_shared_experts: int
    num_experts_per_tok: int
    moe_intermediate_size: int
    rope_theta: float = 10000.0
    rope_scaling: Yarn | None = None
    # True: rotate adjacent pairs (x0, x1), (x2, x3)... as DeepSeek's checkpoints do.
    # False: rotate the two halves (rotate_half), the layout of converted checkpoints.
    rope_interleave: bool = True
    rms_norm_eps: float = 1e-6
    n_group: int = 1
    topk_group: int = 1
    topk_method: str = "greedy"
    scoring_func: str = "softmax"
    norm_topk_prob: bool = False
    routed_scaling_factor: float = 1.0
    model_type: str = "deepseek_v3"
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        _validate(self)

    # -- derived sizes -------------------------------------------------------------
    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def latent_dim(self) -> int:
        """Width of one cached token: the compressed c_kv and the roped k_pe."""
        return self.kv_lora_rank + self.qk_rope_head_dim

    @property
    def experts_per_group(self) -> int:
        return self.n_routed_experts // self.n_group

    @property
    def softmax_scale(self) -> float:
        """1/sqrt(qk_head_dim), times YaRN's mscale(factor, mscale_all_dim) squared."""
        from dsc.ir.ops.rope import yarn_mscale  # the YaRN math lives with rope; lazily, as the IR pulls in torch

        scale = self.qk_head_dim ** -0.5
        y = self.rope_scaling
        if y is not None and y.mscale_all_dim:
            m = yarn_mscale(y.factor, y.mscale_all_dim)
            scale = scale * m * m
        return scale

    # -- construction ----------------------------------------------------------------
    @staticmethod
    def preset(name: str) -> "Config":
        from dsc.presets import preset

        return preset(name)

    @staticmethod
    def from_hf(path_or_dict: str | os.PathLike | Mapping[str, Any]) -> "Config":
        """Read a DeepSeek-V2/V3 `config.json` (a path, a directory holding one, or a dict).

        Fields that do not describe the attention or MoE layer (vocab, layer count...)
        are ignored; fields that would change the layer in a way dsc does not implement
        (attention_bias, a non-SiLU activation, grouped KV heads) are refused.
        """
        name = "custom"
        if isinstance(path_or_dict, Mapping):
            raw = dict(path_or_dict)
        else:
            path = os.fspath(path_or_dict)
            if os.path.isdir(path):
                path = os.path.join(path, "config.json")
            name = os.path.basename(os.path.dirname(os.path.abspath(path))) or path
            raw = _read_json(path)
            if not isinstance(raw, dict):
                raise ConfigError(f"{path} must hold a JSON object, not {type(raw).__name__}")
        return _from_mapping(raw, name)

    def to_hf(self) -> dict:
        """The config as a Hugging Face-style dict (what `from_hf` reads back)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "name"}
        d["rope_scaling"] = self.rope_scaling.to_dict() if self.rope_scaling else None
        return d

    def replace(self, **changes: Any) -> "Config":
        return dataclasses.replace(self, **changes)


# -- reading a config.json --------------------------------------------------------------

# A config.json is a few KiB; a larger file is not one (and reading /dev/zero must end).
MAX_CONFIG_BYTES = 1 << 20


def _read_json(path: str) -> Any:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_CONFIG_BYTES >> 20} MiB: not a config.json")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}): "
                          f"expected a JSON config") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise ConfigError(f"{path} is not a config: its JSON nests too deeply") from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise ConfigError(f"{path} is not valid JSON: {e}") from None

_LAYER_FIELDS = {f.name for f in dataclasses.fields(Config)} - {"name"}


def _from_mapping(raw: dict, name: str) -> Config:
    for key, rule in (("hidden_act", "silu"), ("attention_bias", False)):
        if key in raw and raw[key] != rule:
            raise ConfigError(f"{key}: dsc implements only {json.dumps(rule)}, got {json.dumps(raw[key])}")
    heads = raw.get("num_attention_heads")
    kv_heads = raw.get("num_key_value_heads")
    if kv_heads is not None and heads is not None and kv_heads != heads:
        raise ConfigError(f"num_key_value_heads: MLA needs it equal to num_attention_heads ({heads}), got {kv_heads}")

    kwargs = {k: raw[k] for k in _LAYER_FIELDS if k in raw}
    params = raw.get("rope_parameters")  # transformers 5 folds theta and scaling in here
    if isinstance(params, Mapping):
        kwargs.setdefault("rope_theta", params.get("rope_theta", 10000.0))
        if "rope_scaling" not in raw and params.get("rope_type", params.get("type")) not in (None, "default"):
            kwargs["rope_scaling"] = params
    if "n_shared_experts" in kwargs and kwargs["n_shared_experts"] is None:
        kwargs["n_shared_experts"] = 0
    missing = [k for k in ("hidden_size", "num_attention_heads", "kv_lora_rank", "qk_nope_head_dim",
                           "qk_rope_head_dim", "v_head_dim", "n_routed_experts", "num_experts_per_tok",
                           "moe_intermediate_size") if kwargs.get(k) is None]
    if missing:
        raise ConfigError(f"{missing[0]}: required field is missing" + (
            f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else ""))
    kwargs.setdefault("q_lora_rank", None)
    kwargs.setdefault("n_shared_experts", 0)
    kwargs["rope_scaling"] = _yarn_from(kwargs.get("rope_scaling"))
    if "model_type" in raw and raw["model_type"] not in ("deepseek_v2", "deepseek_v3"):
        raise ConfigError(f"model_type: expected deepseek_v2 or deepseek_v3, got {raw['model_type']!r}")
    if raw.get("model_type") == "deepseek_v2" and "rope_interleave" not in raw:
        kwargs["rope_interleave"] = True  # V2 always rotates adjacent pairs
    if raw.get("model_type") == "deepseek_v3":  # V3's own config class defaults (transformers hard-wires them)
        kwargs.setdefault("scoring_func", "sigmoid")
        kwargs.setdefault("topk_method", "noaux_tc")
    for key in ("topk_group", "n_group"):
        if key in kwargs and kwargs[key] is None:
            kwargs[key] = 1
    return Config(name=name, **kwargs)


def _yarn_from(value: Any) -> Yarn | None:
    if value is None or isinstance(value, Yarn):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(f"rope_scaling: must be an object or null, got {type(value).__name__}")
    kind = value.get("type", value.get("rope_type"))
    if kind != "yarn":
        raise ConfigError(f"rope_scaling.type: dsc implements only 'yarn', got {kind!r}")
    known = {f.name for f in dataclasses.fields(Yarn)}
    args = {k: v for k, v in value.items() if k in known and v is not None}
    if "factor" not in args:
        raise ConfigError("rope_scaling.factor: required for yarn")
    return Yarn(**args)


# -- the rules ---------------------------------------------------------------------------

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


# Upper bounds on the sizes: far above every DeepSeek model (V3: hidden 7168, 128 heads of
# 128 + 64, 256 experts of 2048), and low enough that every weight's byte count stays
# within torch's int64 sizes, so an absurd value is refused here, not by an allocation.
MAX_SIZE = {
    "hidden_size": 1 << 20, "q_lora_rank": 1 << 20, "kv_lora_rank": 1 << 20, "moe_intermediate_size": 1 << 20,
    "num_attention_heads": 1 << 12, "qk_nope_head_dim": 1 << 12, "qk_rope_head_dim": 1 << 12,
    "v_head_dim": 1 << 12, "n_routed_experts": 1 << 16, "n_shared_experts": 1 << 10,
}


def _validate(c: Config) -> None:
    def need(ok: bool, fld: str, rule: str) -> None:
        if not ok:
            raise ConfigError(f"{fld}: {rule}, got {getattr(c, fld)!r}")

    for fld in ("hidden_size", "num_attention_heads", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim",
                "v_head_dim", "n_routed_experts", "num_experts_per_tok", "moe_intermediate_size", "n_group",
                "topk_group"):
        need(_is_int(getattr(c, fld)) and getattr(c, fld) > 0, fld, "must be a positive integer")
    need(c.q_lora_rank is None or (_is_int(c.q_lora_rank) and c.q_lora_rank > 0), "q_lora_rank",
         "must be a positive integer or null")
    need(_is_int(c.n_shared_experts) and c.n_shared_experts >= 0, "n_shared_experts",
         "must be a non-negative integer")
    for fld, most in MAX_SIZE.items():  # the others are bounded by these through the rules below
        value = getattr(c, fld)
        need(value is None or value <= most, fld, f"must be at most {most} (2**{most.bit_length() - 1})")
    need(c.qk_rope_head_dim % 2 == 0, "qk_rope_head_dim", "must be even (rope rotates pairs)")
    need(_is_real(c.rope_theta) and c.rope_theta > 0, "rope_theta", "must be a positive number")
    need(_is_real(c.rms_norm_eps) and c.rms_norm_eps > 0, "rms_norm_eps", "must be a positive number")
    need(_is_real(c.routed_scaling_factor) and c.routed_scaling_factor > 0, "routed_scaling_factor",
         "must be a positive number")
    need(isinstance(c.rope_interleave, bool), "rope_interleave", "must be true or false")
    need(isinstance(c.norm_topk_prob, bool), "norm_topk_prob", "must be true or false")
    need(c.topk_method in TOPK_METHODS, "topk_method", f"must be one of {', '.join(TOPK_METHODS)}")
    need(c.scoring_func in SCORING_FUNCS, "scoring_func", f"must be one of {', '.join(SCORING_FUNCS)}")
    broken = broken_routing_rule(c.n_routed_experts, c.num_experts_per_tok, c.n_group, c.topk_group, c.topk_method,
                                 names={"experts": "n_routed_experts", "top_k": "num_experts_per_tok"})
    if broken:
        need(False, broken[0], broken[1])
    need(c.model_type in ("deepseek_v2", "deepseek_v3"), "model_type", "must be deepseek_v2 or deepseek_v3")
    y = c.rope_scaling
    if y is not None:
        if not isinstance(y, Yarn):
            raise ConfigError(f"rope_scaling: expected dsc.config.Yarn or null, got {type(y).__name__}")
        for fld, ok, rule in (
            ("factor", _is_real(y.factor) and y.factor >= 1, "must be a number >= 1"),
            ("original_max_position_embeddings",
             _is_int(y.original_max_position_embeddings) and y.original_max_position_embeddings > 0,
             "must be a positive integer"),
            ("beta_fast", _is_real(y.beta_fast) and y.beta_fast > 0, "must be a positive number"),
            ("beta_slow", _is_real(y.beta_slow) and y.beta_slow > 0, "must be a positive number"),
            ("mscale", _is_real(y.mscale) and y.mscale >= 0, "must be a non-negative number"),
            ("mscale_all_dim", _is_real(y.mscale_all_dim) and y.mscale_all_dim >= 0,
             "must be a non-negative number"),
        ):
            if not ok:
                raise ConfigError(f"rope_scaling.{fld}: {rule}, got {getattr(y, fld)!r}")
