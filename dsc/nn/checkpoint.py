"""Checkpoint weight layouts <-> the graph's params.

MLA weights are stored as the graph names them (HF's `self_attn.*` names). Routed
experts come in three layouts, all accepted by `moe_params_from_checkpoint`:
  DeepSeek checkpoints: experts.{i}.gate_proj / up_proj / down_proj.weight
  transformers 5:       experts.gate_up_proj [E, 2I, H] (gate rows first), experts.down_proj
  dsc's own state_dict: experts.gate_proj [E, I, H], experts.up_proj, experts.down_proj
"""

from __future__ import annotations

import re
from typing import Mapping

import torch

from dsc.config import Config
from dsc.errors import WeightError

_PER_EXPERT = re.compile(r"^experts\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")


def moe_params_from_checkpoint(cfg: Config, sd: Mapping[str, torch.Tensor]
                               ) -> tuple[dict, list[str], list[str], set[str]]:
    """Rename/stack routed-expert weights into the graph's layout.

    Returns (params, missing, unexpected, accounted): missing and unexpected name keys in
    checkpoint terms, so a user sees the keys their checkpoint should have held;
    accounted lists graph params whose absence `missing` already explains.
    """
    E, I, H = cfg.n_routed_experts, cfg.moe_intermediate_size, cfg.hidden_size
    out: dict[str, torch.Tensor] = {}
    missing: list[str] = []
    unexpected: list[str] = []
    accounted: set[str] = set()
    per_expert: dict[str, dict[int, torch.Tensor]] = {"gate_proj": {}, "up_proj": {}, "down_proj": {}}
    for k, v in sd.items():
        m = _PER_EXPERT.match(k)
        if m:
            i = int(m.group(1))
            if i >= E:
                unexpected.append(k)
            else:
                per_expert[m.group(2)][i] = v
        else:
            out[k] = v
    has_per_expert = any(per_expert.values())
    if "experts.gate_up_proj" in out:
        fused = out.pop("experts.gate_up_proj")
        if has_per_expert or "experts.gate_proj" in out or "experts.up_proj" in out:
            raise WeightError("routed experts are given in more than one layout (experts.gate_up_proj and "
                              "experts.{i}.* or experts.gate_proj); give one")
        if tuple(fused.shape) != (E, 2 * I, H):
            raise WeightError(f"mis-shaped weights: experts.gate_up_proj is {list(fused.shape)}, expected "
                              f"{[E, 2 * I, H]}")
        out["experts.gate_proj"], out["experts.up_proj"] = fused[:, :I], fused[:, I:]
    elif has_per_expert:
        if any(k in out for k in ("experts.gate_proj", "experts.up_proj", "experts.down_proj")):
            raise WeightError("routed experts are given in more than one layout (experts.{i}.* and stacked "
                              "experts.*_proj); give one")
        for proj, got in per_expert.items():
            absent = [f"experts.{i}.{proj}.weight" for i in range(E) if i not in got]
            missing.extend(absent)
            accounted.add(f"experts.{proj}")
            if not absent:
                want = (H, I) if proj == "down_proj" else (I, H)
                bad = [f"experts.{i}.{proj}.weight {list(t.shape)} (expected {list(want)})"
                       for i, t in sorted(got.items()) if tuple(t.shape) != want]
                if bad:
                    raise WeightError("mis-shaped weights: " + "; ".join(bad))
                out[f"experts.{proj}"] = torch.stack([got[i] for i in range(E)])
    return out, missing, unexpected, accounted


def random_checkpoint(cfg: Config, layer: str, dtype: torch.dtype = torch.float32, seed: int = 0,
                      device="cpu") -> dict[str, torch.Tensor]:
    """Random weights under DeepSeek checkpoint names, scaled so activations stay O(1).

    Linear weights ~ N(0, 1/fan_in); norm weights ~ 1 + N(0, 0.1); router biases small.
    Nothing is zero, so no test can pass on a silent zero.
    """
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}

    def linear(name, n_out, n_in):
        out[name] = torch.randn(n_out, n_in, generator=g) / n_in ** 0.5

    def norm(name, n):
        out[name] = 1.0 + 0.1 * torch.randn(n, generator=g)

    if layer == "mla":
        H, qk = cfg.num_attention_heads, cfg.qk_head_dim
        if cfg.q_lora_rank is None:
            linear("q_proj.weight", H * qk, cfg.hidden_size)
        else:
            linear("q_a_proj.weight", cfg.q_lora_rank, cfg.hidden_size)
            norm("q_a_layernorm.weight", cfg.q_lora_rank)
            linear("q_b_proj.weight", H * qk, cfg.q_lora_rank)
        linear("kv_a_proj_with_mqa.weight", cfg.latent_dim, cfg.hidden_size)
        norm("kv_a_layernorm.weight", cfg.kv_lora_rank)
        linear("kv_b_proj.weight", H * (cfg.qk_nope_head_dim + cfg.v_head_dim), cfg.kv_lora_rank)
        linear("o_proj.weight", cfg.hidden_size, H * cfg.v_head_dim)
    elif layer == "moe":
        H, I = cfg.hidden_size, cfg.moe_intermediate_size
        linear("gate.weight", cfg.n_routed_experts, H)
        if cfg.topk_method == "noaux_tc":
            out["gate.e_score_correction_bias"] = 0.1 * torch.randn(cfg.n_routed_experts, generator=g)
        for i in range(cfg.n_routed_experts):
            linear(f"experts.{i}.gate_proj.weight", I, H)
            linear(f"experts.{i}.up_proj.weight", I, H)
            linear(f"experts.{i}.down_proj.weight", H, I)
        if cfg.n_shared_experts:
            S = I * cfg.n_shared_experts
            linear("shared_experts.gate_proj.weight", S, H)
            linear("shared_experts.up_proj.weight", S, H)
            linear("shared_experts.down_proj.weight", H, S)
    else:
        raise ValueError(f"layer must be 'mla' or 'moe', got {layer!r}")
    return {k: (v if k.endswith("e_score_correction_bias") else v.to(dtype)).to(device) for k, v in out.items()}


def random_weights(module, seed: int) -> dict[str, torch.Tensor]:
    """Random weights for a built module, in its own layout (experts stacked) and made
    where it lives (a DeepSeek-V3 MoE layer is 22 GB in bf16: no host round trip), scaled
    as random_checkpoint scales them: N(0, 1/fan_in) matrices, norms near 1, a small
    router bias. For `dsc tune` and `dsc bench`, which need no checkpoint names."""
    g = torch.Generator(device=module._device).manual_seed(seed)
    out = {}
    for name, (shape, dtype) in module._shapes.items():
        if "norm" in name:
            t = 1 + 0.1 * torch.randn(shape, generator=g, device=module._device)
        elif name.endswith("bias"):
            t = 0.1 * torch.randn(shape, generator=g, device=module._device)
        else:
            t = torch.randn(shape, generator=g, device=module._device) / shape[-1] ** 0.5
        out[name] = t.to(dtype)
    return out
