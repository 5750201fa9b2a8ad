"""vLLM's fused-MoE calls (vllm.model_executor.layers.fused_moe) on dsc's kernels:
`from dsc.compat.vllm import fused_experts, fused_topk, grouped_topk`. fused_experts is at
the end of this file; the routing calls first, on dsc's one-kernel router.

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


_UNSERVED_QUANT = ("use_int8_w8a8", "use_int8_w8a16", "use_int4_w4a16", "use_mxfp4_w4a4", "per_channel_quant",
                   "per_act_token_quant", "per_out_ch_quant", "w1_zp", "w2_zp", "a1_scale", "a2_scale")


def _quant(quant_config, given: dict) -> dict:
    """The quantization arguments, from vLLM's quant_config object (its current API) or the
    separate keywords (its earlier one), whichever was given."""
    if quant_config is None:
        return given
    names = ("use_fp8_w8a8", "block_shape", "w1_scale", "w2_scale", *_UNSERVED_QUANT)
    taken = {n: getattr(quant_config, n, None) for n in names}
    dtype = getattr(quant_config, "quant_dtype", None)
    if dtype is not None:
        taken["use_fp8_w8a8"] = dtype == torch.float8_e4m3fn
        if dtype != torch.float8_e4m3fn:
            taken["use_int8_w8a8"] = dtype  # named in the refusal below
    return {**given, **{n: v for n, v in taken.items() if v is not None and v is not False}}


def fused_experts(hidden_states: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
                  topk_ids: torch.Tensor, inplace: bool = False, activation: str = "silu",
                  apply_router_weight_on_input: bool = False, use_fp8_w8a8: bool = False,
                  use_int8_w8a8: bool = False, use_int8_w8a16: bool = False, use_int4_w4a16: bool = False,
                  use_mxfp4_w4a4: bool = False, per_channel_quant: bool = False, global_num_experts: int = -1,
                  expert_map: torch.Tensor | None = None, w1_scale: torch.Tensor | None = None,
                  w2_scale: torch.Tensor | None = None, w1_zp: torch.Tensor | None = None,
                  w2_zp: torch.Tensor | None = None, a1_scale: torch.Tensor | None = None,
                  a2_scale: torch.Tensor | None = None, block_shape: list[int] | None = None,
                  allow_deep_gemm: bool = False, allow_cutlass_block_scaled_grouped_gemm: bool = False,
                  quant_config=None, *, backend: str = "triton") -> torch.Tensor:
    """vLLM's fused MoE over the routed experts: sum over k of topk_weights[:, k] *
    w2[e] silu_and_mul(w1[e] x) for e = topk_ids[:, k]. w1 [E, 2I, H] (gate rows, then up),
    w2 [E, H, I]; with expert_map [global experts] the ids are global and map to this
    rank's experts (-1: another rank's, adding nothing). Block-scaled FP8
    (use_fp8_w8a8 with block_shape [b, b], w1_scale / w2_scale the block scales, the
    activations quantized dynamically per token per b channels), by keyword or in a
    quant_config. Returns [M, H] in hidden_states' dtype (into it with inplace)."""
    from dsc import ops

    q = _quant(quant_config, {"use_fp8_w8a8": use_fp8_w8a8, "block_shape": block_shape, "w1_scale": w1_scale,
                              "w2_scale": w2_scale, "use_int8_w8a8": use_int8_w8a8, "use_int8_w8a16": use_int8_w8a16,
                              "use_int4_w4a16": use_int4_w4a16, "use_mxfp4_w4a4": use_mxfp4_w4a4,
                              "per_channel_quant": per_channel_quant, "w1_zp": w1_zp, "w2_zp": w2_zp,
                              "a1_scale": a1_scale, "a2_scale": a2_scale})
    unserved = [n for n in _UNSERVED_QUANT if q.get(n) is not None and q.get(n) is not False]
    if unserved:
        raise _fail(f"{', '.join(unserved)} is not served: dsc's experts are bf16/fp16/fp32 or block-scaled FP8 "
                    "with activations quantized dynamically per block")
    if activation != "silu":
        raise _fail(f"activation {activation!r} is not served: dsc's experts are SiLU-gated (DeepSeekMoE)")
    block = 128
    if q["use_fp8_w8a8"]:
        shape = q["block_shape"]
        if shape is None or len(shape) != 2 or shape[0] != shape[1]:
            raise _fail(f"use_fp8_w8a8 needs square block scales (block_shape [b, b]), got block_shape={shape}: "
                        "per-tensor FP8 weights are not served")
        block = int(shape[0])
        w13_scale, w2_scale = q["w1_scale"], q["w2_scale"]
        if w13_scale is None or w2_scale is None:
            raise _fail("use_fp8_w8a8 needs w1_scale and w2_scale")
    else:
        w13_scale = w2_scale = None
    ids = topk_ids
    if expert_map is not None:
        if global_num_experts not in (-1, expert_map.shape[0]):
            raise _fail(f"expert_map holds {expert_map.shape[0]} experts, global_num_experts is {global_num_experts}")
        ids = expert_map.to(ids.device)[topk_ids.long()]
    x, weights = hidden_states, topk_weights.float()
    if apply_router_weight_on_input:  # vLLM's: the weight scales the token before the experts
        if topk_ids.shape[1] != 1:
            raise _fail(f"apply_router_weight_on_input needs top-k 1 (vLLM's rule), got {topk_ids.shape[1]}")
        x = (hidden_states * topk_weights.to(hidden_states.dtype)).to(hidden_states.dtype)
        weights = torch.ones_like(weights)
    out = ops.fused_moe(x, w1, w2, weights.contiguous(), ids.contiguous(), w13_scale, w2_scale, block,
                        act_quant=True, validate=False, backend=backend)
    if inplace:
        hidden_states.copy_(out)
        return hidden_states
    return out
