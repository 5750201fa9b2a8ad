"""vLLM's fused-MoE routing calls (vllm.model_executor.layers.fused_moe) on dsc's one-kernel
router: `from dsc.compat.vllm import fused_topk, grouped_topk`.

Their signatures, defaults and return conventions: weights float32, ids int32 (or
fused_topk's indices_type), in the top-k order of the scores; renormalize divides by the
sum with no epsilon, top_k = 1 included (a weight of one); routed_scaling_factor after the
renormalization. grouped_topk chooses DeepSeek-V2's group-limited greedy (groups by their
best score) without a correction bias and V3's noaux_tc (groups by their two best biased
scores, weights from the unbiased ones) with one.
"""

from __future__ import annotations

import torch

from dsc.errors import InputError
from dsc.routing import broken_routing_rule

SCORING = ("softmax", "sigmoid")
VLLM_NAMES = {"experts": "num_experts", "top_k": "topk", "n_group": "num_expert_group", "topk_group": "topk_group"}


def _fail(message: str) -> InputError:
    return InputError(f"dsc.compat.vllm: {message}")


def _route(hidden_states, gating_output, topk: int, *, func: str, method: str, n_group: int, topk_group: int,
           renormalize: bool, scale: float, bias, backend: str):
    from dsc.codegen.groups.router import RouterSpec
    from dsc.ops import _kernels

    if gating_output.dim() != 2:
        raise _fail(f"gating_output must be [num_tokens, num_experts], got shape {list(gating_output.shape)}")
    tokens, experts = gating_output.shape
    if hidden_states.shape[0] != tokens:
        raise _fail(f"hidden_states has {hidden_states.shape[0]} tokens, gating_output {tokens}")
    if not 1 <= topk <= experts:
        raise _fail(f"topk must lie in 1 .. num_experts ({experts}), got {topk}")
    if func not in SCORING:
        raise _fail(f"scoring_func must be one of {', '.join(SCORING)}, got {func!r}")
    if bias is not None and tuple(bias.shape) != (experts,):
        raise _fail(f"e_score_correction_bias must be [{experts}], got shape {list(bias.shape)}")
    spec = RouterSpec(func=func, method=method, top_k=topk, n_group=n_group, topk_group=topk_group,
                      normalize=renormalize, eps=0.0, scale=scale, extra=0, extra_start=0, extra_w=0.0)
    ids, weights = _kernels("vllm routing", backend).route(
        gating_output.float(), None if bias is None else bias.float().contiguous(), spec)
    return weights, ids


def fused_topk(hidden_states: torch.Tensor, gating_output: torch.Tensor, topk: int, renormalize: bool,
               indices_type: torch.dtype | None = None, *, backend: str = "triton"):
    """Softmax top-k: (topk_weights [M, topk] float32, topk_ids [M, topk] int32 or
    indices_type, token_expert_indices [M, topk] int32: k * M + token, vLLM's)."""
    weights, ids = _route(hidden_states, gating_output, topk, func="softmax", method="greedy", n_group=1,
                          topk_group=1, renormalize=renormalize, scale=1.0, bias=None, backend=backend)
    tokens = gating_output.shape[0]
    order = (torch.arange(topk, device=ids.device, dtype=torch.int32)[None, :] * tokens
             + torch.arange(tokens, device=ids.device, dtype=torch.int32)[:, None])
    return weights, ids.to(indices_type or torch.int32), order


def grouped_topk(hidden_states: torch.Tensor, gating_output: torch.Tensor, topk: int, renormalize: bool,
                 num_expert_group: int = 0, topk_group: int = 0, scoring_func: str = "softmax",
                 routed_scaling_factor: float = 1.0, e_score_correction_bias: torch.Tensor | None = None, *,
                 backend: str = "triton"):
    """DeepSeek's group-limited routing: (topk_weights [M, topk] float32, topk_ids [M, topk] int32)."""
    method = "noaux_tc" if e_score_correction_bias is not None else "group_limited_greedy"
    broken = broken_routing_rule(gating_output.shape[-1], topk, num_expert_group, topk_group, method, VLLM_NAMES)
    if broken:
        raise _fail(f"{broken[0]} {broken[1]}, got {broken[2]}")
    weights, ids = _route(hidden_states, gating_output, topk, func=scoring_func, method=method,
                          n_group=num_expert_group, topk_group=topk_group, renormalize=renormalize,
                          scale=routed_scaling_factor, bias=e_score_correction_bias, backend=backend)
    return weights, ids.to(torch.int32)
