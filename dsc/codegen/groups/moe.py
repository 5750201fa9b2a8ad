"""DeepSeekMoE's routed experts: token slots sorted by expert (moe_align), grouped GEMMs
over the sorted slots in bf16 or block-scaled FP8 (grouped_gemm, grouped_gemm_fp8),
the weighted rows summed back per token in a fixed order (moe_combine), or all of it
for an unfused layer (moe_experts). Weights of grouped GEMMs are [E, N, K] with, under
swiglu, the gate rows first and the up rows after them (fuse_experts' layout).

Kernels: align(ids, experts, block, out=None) -> slots;
grouped_gemm(a, slots, ids, w, route, *, gather, swiglu, block, scales=None, act_quant=False,
scale_block=128, out=None); combine(y, slots, ids, dtype, out=None)."""

from __future__ import annotations

import torch

from dsc.codegen.groups import GroupKind
from dsc.errors import DscError
from dsc.ir.ops.grouped import EXPERT_BLOCK
from dsc.ir.types import to_torch


def routed_experts(k, x, ids, topk_weights, w13, w2, block: int, *, w13_scale=None, w2_scale=None,
                   act_quant: bool = False, scale_block: int = 128, out=None):
    """The routed experts on one backend's kernels, the one composition that an unfused
    moe_experts group and dsc.ops.fused_moe share: gate and up in one grouped GEMM over
    w13 [E, 2I, H] with SiLU * up fused, down scaled by the routing weights, then a
    combine in a fixed order (deterministic)."""
    slots = k.align(ids, w13.shape[0], block)
    fp8 = dict(act_quant=act_quant, scale_block=scale_block)
    h = k.grouped_gemm(x, slots, ids, w13, None, gather=True, swiglu=True, block=block, scales=w13_scale, **fp8)
    y = k.grouped_gemm(h, slots, ids, w2, topk_weights, gather=False, swiglu=False, block=block, scales=w2_scale,
                       **fp8)
    return k.combine(y, slots, ids, x.dtype, out=out)


def _moe_align(group, k):
    n = group.root
    ids = n.srcs[0]
    return lambda v, env, out=None: k.align(v[id(ids)], n.attrs["experts"], n.attrs["block"], out=out)


def _grouped_gemm(group, k):
    n = group.root
    if n.srcs[1].op != "moe_align":
        raise DscError(f"{n.op}: its row layout must come from moe_align (the block size)")
    block = n.srcs[1].attrs["block"]
    fp8 = group.kind == "grouped_gemm_fp8"
    n_w = 5 if fp8 else 4

    def grouped(v, env, out=None):
        a, slots, ids, w = (v[id(s)] for s in n.srcs[:4])
        route = v[id(n.srcs[n_w])] if len(n.srcs) > n_w else None
        return k.grouped_gemm(a, slots, ids, w, route, gather=n.attrs["gather"], swiglu=n.attrs["swiglu"],
                              block=block, scales=v[id(n.srcs[4])] if fp8 else None,
                              act_quant=fp8 and n.attrs["act_quant"], scale_block=n.attrs.get("block", 128),
                              out=out)
    return grouped


def _moe_combine(group, k):
    n = group.root
    y, slots, ids = n.srcs
    dtype = to_torch(n.type.dtype)
    return lambda v, env, out=None: k.combine(v[id(y)], v[id(slots)], v[id(ids)], dtype, out=out)


def _moe_experts(group, k):  # unfused: fuse_experts stacks gate and up once, at load
    n = group.root

    def experts(v, env, out=None):
        x, ids, w, gate, up, down = (v[id(s)] for s in n.srcs)
        return routed_experts(k, x, ids, w, torch.cat([gate, up], dim=1), down, EXPERT_BLOCK, out=out)
    return experts


_GROUPED = ("align", "grouped_gemm", "combine")
KINDS = (GroupKind("moe_align", ops=("moe_align",), calls=("align",), launch=_moe_align),
         GroupKind("grouped_gemm", ops=("grouped_gemm",), calls=("grouped_gemm",), launch=_grouped_gemm),
         GroupKind("grouped_gemm_fp8", ops=("grouped_gemm_fp8",), calls=("grouped_gemm",), launch=_grouped_gemm),
         GroupKind("moe_combine", ops=("moe_combine",), calls=("combine",), launch=_moe_combine),
         GroupKind("moe_experts", ops=("moe_experts",), calls=_GROUPED, launch=_moe_experts))
