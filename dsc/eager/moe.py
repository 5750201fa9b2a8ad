"""DeepSeekMoE the way DeepSeek's MoEGate and moe_infer compute it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dsc.config import Config


def _gate(cfg: Config, w: dict, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits = F.linear(x.type(torch.float32), w["gate.weight"].type(torch.float32), None)
    return gate_from_logits(cfg, logits, w.get("gate.e_score_correction_bias"))


def gate_from_logits(cfg: Config, logits: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """MoEGate after its linear: (topk_idx, topk_weight) from float32 logits [N, E]."""
    if cfg.scoring_func == "softmax":
        scores = logits.softmax(dim=-1, dtype=torch.float32)
    else:
        scores = logits.sigmoid()
    # non-finite scores count as 0 (vLLM's rule; DeepSeek's code would pick duplicates)
    scores = torch.nan_to_num(scores, nan=0.0, posinf=0.0, neginf=0.0)
    n = logits.shape[0]
    if cfg.topk_method == "greedy":
        _, topk_idx = torch.topk(scores, k=cfg.num_experts_per_tok, dim=-1, sorted=False)
    else:
        if cfg.topk_method == "noaux_tc":
            choice = torch.nan_to_num(scores + bias.unsqueeze(0), nan=0.0, posinf=0.0,
                                      neginf=0.0)
            group_scores = choice.view(n, cfg.n_group, -1).topk(2, dim=-1)[0].sum(dim=-1)
        else:
            choice = scores
            group_scores = choice.view(n, cfg.n_group, -1).max(dim=-1).values
        group_idx = torch.topk(group_scores, k=cfg.topk_group, dim=-1, sorted=False)[1]
        group_mask = torch.zeros_like(group_scores)
        group_mask.scatter_(1, group_idx, 1)
        score_mask = group_mask.unsqueeze(-1).expand(n, cfg.n_group, cfg.experts_per_group).reshape(n, -1)
        tmp = choice.masked_fill(~score_mask.bool(), float("-inf"))
        _, topk_idx = torch.topk(tmp, k=cfg.num_experts_per_tok, dim=-1, sorted=False)
    topk_weight = scores.gather(1, topk_idx)
    if cfg.num_experts_per_tok > 1 and cfg.norm_topk_prob:
        topk_weight = topk_weight / (topk_weight.sum(dim=-1, keepdim=True) + 1e-20)
    return topk_idx, topk_weight * cfg.routed_scaling_factor


def _mlp(x, gate, up, down):
    return F.linear(F.silu(F.linear(x, gate)) * F.linear(x, up), down)


def eager_moe(cfg: Config, w: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """x [..., hidden]; weights under DeepSeek checkpoint names (experts.{i}.*.weight)."""
    shape = x.shape
    x = x.reshape(-1, shape[-1])
    topk_idx, topk_weight = _gate(cfg, w, x)
    # moe_infer: sort the (token, slot) pairs by expert and run each expert on its chunk
    flat = topk_idx.view(-1)
    counts = torch.bincount(flat, minlength=cfg.n_routed_experts).tolist()
    order = flat.argsort()
    sorted_tokens = x[order // cfg.num_experts_per_tok]
    outs, start = [], 0
    for i, n in enumerate(counts):
        if n:
            chunk = sorted_tokens[start:start + n]
            outs.append(_mlp(chunk, w[f"experts.{i}.gate_proj.weight"], w[f"experts.{i}.up_proj.weight"],
                             w[f"experts.{i}.down_proj.weight"]))
        start += n
    expert_out = torch.cat(outs)
    unsorted = torch.empty_like(expert_out)
    unsorted[order] = expert_out
    y = (unsorted.view(*topk_idx.shape, -1).type(topk_weight.dtype) * topk_weight.unsqueeze(-1)).sum(dim=1)
    y = y.type(x.dtype)
    if cfg.n_shared_experts:
        y = y + _mlp(x, w["shared_experts.gate_proj.weight"], w["shared_experts.up_proj.weight"],
                     w["shared_experts.down_proj.weight"])
    return y.view(shape)
