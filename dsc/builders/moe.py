"""The DeepSeekMoE graph: float32 router, top-k selection, routed SwiGLU experts,
shared experts.

    scores  = softmax | sigmoid(gate(x) in float32)
    ids     = select_experts(scores [+ e_score_correction_bias for noaux_tc])
    w       = scores[ids]  (the unbiased scores), renormalised if norm_topk_prob and
              top_k > 1, times routed_scaling_factor
    out     = sum_j w_j * expert_{ids_j}(x) + shared_experts(x)

Routed expert weights are graph params stacked per expert ([E, I, H] for gate and up,
[E, H, I] for down); the module stacks the per-expert checkpoint tensors on load.
Input: x [N, hidden]. Output: out [N, hidden].
"""

from __future__ import annotations

from dsc.ir.build import cast, inp, op, param
from dsc.config import Config
from dsc.ir.graph import Graph
from dsc.ir.types import dtype as as_dtype, f32, sym


def build_moe(cfg: Config, dtype="f32") -> Graph:
    dt = as_dtype(dtype)
    N = sym("N")
    hidden, E, inter = cfg.hidden_size, cfg.n_routed_experts, cfg.moe_intermediate_size
    x = inp("x", [N, hidden], dt)

    logits = op("linear", cast(x, f32), cast(param("gate.weight", [E, hidden], dt), f32))
    scores = op("router_scores", logits, func=cfg.scoring_func)
    select = dict(method=cfg.topk_method, top_k=cfg.num_experts_per_tok, n_group=cfg.n_group,
                  topk_group=cfg.topk_group)
    if cfg.topk_method == "noaux_tc":
        ids = op("select_experts", scores, param("gate.e_score_correction_bias", [E], f32), **select)
    else:
        ids = op("select_experts", scores, **select)
    w = op("gather", scores, ids)
    if cfg.norm_topk_prob and cfg.num_experts_per_tok > 1:  # DeepSeek skips it at top-1
        w = op("normalize_sum", w)
    if cfg.routed_scaling_factor != 1.0:
        w = op("scale", w, factor=float(cfg.routed_scaling_factor))
    out = op("moe_experts", x, ids, w,
             param("experts.gate_proj", [E, inter, hidden], dt),
             param("experts.up_proj", [E, inter, hidden], dt),
             param("experts.down_proj", [E, hidden, inter], dt))

    if cfg.n_shared_experts:
        shared = cfg.n_shared_experts * inter  # DeepSeek runs its shared experts as one wide MLP
        gate = op("linear", x, param("shared_experts.gate_proj.weight", [shared, hidden], dt))
        up = op("linear", x, param("shared_experts.up_proj.weight", [shared, hidden], dt))
        down = op("linear", op("mul", op("silu", gate), up),
                  param("shared_experts.down_proj.weight", [hidden, shared], dt))
        out = op("add", out, down)
    return Graph("moe", [x], {"out": out})
