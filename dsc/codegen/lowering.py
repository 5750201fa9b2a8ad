"""Kernel groups -> launchers, for any backend: which tensors and attributes each group
kind hands to which kernel. A backend supplies its kernels behind one calling
convention (a Kernels object: triton/lower.py, tvm/lower.py); the argument plumbing
lives here once.

A launcher is launch(values, env, out=None): values are the tensors by node id, env the
call's symbol bindings, out the planned output buffer (a tuple for multi-output groups).
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch

from dsc.codegen.router_spec import router_spec
from dsc.codegen.kinds import GROUP_KINDS, ROW_KINDS
from dsc.codegen.schedule import Group
from dsc.errors import DscError
from dsc.ir.ops.grouped import EXPERT_BLOCK
from dsc.ir.types import to_torch

Launcher = Callable[..., torch.Tensor]
KINDS = frozenset(GROUP_KINDS)  # both backends cover every declared kind


class Kernels(Protocol):
    """One backend's kernels. Weights of grouped GEMMs are [E, N, K] with, under swiglu,
    the gate rows first and the up rows after them (fuse_experts' layout)."""

    name: str

    def rows(self, group: Group) -> Launcher: ...  # rowwise, paged_append, paged_gather

    def linear(self, x, w, out=None): ...

    def einsum(self, spec, x, y, out=None): ...

    def attention(self, q, k, v, lengths, scale, out=None): ...  # the IR's attention op: the output

    def paged_attention(self, q, cache, table, lengths, scale, v_dim, len_offset, out=None, fp8_group=None): ...

    def route(self, logits, bias, spec, out=None): ...

    def align(self, ids, experts, block, out=None): ...

    def grouped_gemm(self, a, slots, ids, w, route, *, gather, swiglu, block, scales=None, act_quant=False,
                     scale_block=128, out=None): ...

    def fp8_linear(self, x, wq, ws, *, act_quant, block, out=None): ...

    def combine(self, y, slots, ids, dtype, out=None): ...


def routed_experts(k: Kernels, x, ids, topk_weights, w13, w2, block: int, *, w13_scale=None, w2_scale=None,
                   act_quant: bool = False, scale_block: int = 128, out=None):
    """DeepSeekMoE's routed experts on one backend's kernels, the one composition that an
    unfused moe_experts group and dsc.ops.fused_moe share: token slots sorted by expert,
    gate and up in one grouped GEMM over w13 [E, 2I, H] with SiLU * up fused, down scaled
    by the routing weights, then a combine in a fixed order (deterministic)."""
    slots = k.align(ids, w13.shape[0], block)
    fp8 = dict(act_quant=act_quant, scale_block=scale_block)
    h = k.grouped_gemm(x, slots, ids, w13, None, gather=True, swiglu=True, block=block, scales=w13_scale, **fp8)
    y = k.grouped_gemm(h, slots, ids, w2, topk_weights, gather=False, swiglu=False, block=block, scales=w2_scale,
                       **fp8)
    return k.combine(y, slots, ids, x.dtype, out=out)


# -- one launcher maker per kernel-group kind: LAUNCHERS below ------------------------------

def _values(v, nodes):
    return [v[id(s)] for s in nodes]


def _rows(group: Group, k: Kernels) -> Launcher:
    return k.rows(group)


def _gemm(group: Group, k: Kernels) -> Launcher:
    n = group.root
    if n.op == "linear":
        return lambda v, env, out=None: k.linear(*_values(v, n.srcs), out=out)
    if len(n.srcs) != 2:
        raise DscError(f"einsum {n.attrs['spec']!r}: only two-operand contractions have a GEMM form")
    return lambda v, env, out=None: k.einsum(n.attrs["spec"], *_values(v, n.srcs), out=out)


def _attention(group: Group, k: Kernels) -> Launcher:
    scale = group.root.attrs["scale"]
    return lambda v, env, out=None: k.attention(*_values(v, group.inputs), scale, out=out)


def _paged_attention(group: Group, k: Kernels) -> Launcher:
    n = group.root
    dv = n.shape[-1]
    unpack = next((m for m in group.nodes if m.op == "kv_unpack_fp8"), None)
    if unpack is not None and unpack.attrs["rank"] != dv:
        raise DscError(f"paged attention over an FP8 cache reads V as the rank {unpack.attrs['rank']} latent, "
                       f"got a V of width {dv}")

    def run(v, env, out=None):
        q, cache, table, lens = _values(v, group.inputs)
        return k.paged_attention(q, cache, table, lens, n.attrs["scale"], dv, q.shape[1], out=out,
                                 fp8_group=unpack.attrs["group"] if unpack else None)
    return run


def _router(group: Group, k: Kernels) -> Launcher:
    spec = router_spec(group)

    def route(v, env, out=None):
        bias = v[id(group.inputs[1])] if len(group.inputs) > 1 else None
        return k.route(v[id(group.inputs[0])], bias, spec, out=out)
    return route


def _moe_align(group: Group, k: Kernels) -> Launcher:
    n = group.root
    return lambda v, env, out=None: k.align(v[id(n.srcs[0])], n.attrs["experts"], n.attrs["block"], out=out)


def _grouped_gemm(group: Group, k: Kernels) -> Launcher:
    n = group.root
    if n.srcs[1].op != "moe_align":
        raise DscError(f"{n.op}: its row layout must come from moe_align (the block size)")
    block = n.srcs[1].attrs["block"]
    fp8 = group.kind == "grouped_gemm_fp8"
    n_w = 5 if fp8 else 4

    def grouped(v, env, out=None):
        a, slots, ids, w = _values(v, n.srcs[:4])
        route = v[id(n.srcs[n_w])] if len(n.srcs) > n_w else None
        return k.grouped_gemm(a, slots, ids, w, route, gather=n.attrs["gather"], swiglu=n.attrs["swiglu"],
                              block=block, scales=v[id(n.srcs[4])] if fp8 else None,
                              act_quant=fp8 and n.attrs["act_quant"], scale_block=n.attrs.get("block", 128),
                              out=out)
    return grouped


def _fp8_gemm(group: Group, k: Kernels) -> Launcher:
    n = group.root
    return lambda v, env, out=None: k.fp8_linear(*_values(v, n.srcs), act_quant=n.attrs["act_quant"],
                                                 block=n.attrs["block"], out=out)


def _moe_combine(group: Group, k: Kernels) -> Launcher:
    n = group.root
    return lambda v, env, out=None: k.combine(*_values(v, n.srcs), to_torch(n.type.dtype), out=out)


def _moe_experts(group: Group, k: Kernels) -> Launcher:  # unfused: fuse_experts stacks gate and up once, at load
    n = group.root

    def experts(v, env, out=None):
        x, ids, w, gate, up, down = _values(v, n.srcs)
        return routed_experts(k, x, ids, w, torch.cat([gate, up], dim=1), down, EXPERT_BLOCK, out=out)
    return experts


# kind -> make(group, kernels) -> launcher: the argument plumbing of every kernel-group
# kind, written once for every backend (host kinds, view and dispatch, run in the executor)
LAUNCHERS: dict[str, Callable[[Group, Kernels], Launcher]] = {
    **{kind: _rows for kind in ROW_KINDS}, "gemm": _gemm, "attention": _attention,
    "paged_attention": _paged_attention, "router": _router, "moe_align": _moe_align, "grouped_gemm": _grouped_gemm,
    "grouped_gemm_fp8": _grouped_gemm, "fp8_gemm": _fp8_gemm, "moe_combine": _moe_combine,
    "moe_experts": _moe_experts}


def lower(group: Group, k: Kernels) -> Launcher:
    make = LAUNCHERS.get(group.kind)
    if make is None:
        raise DscError(f"the {k.name} backend has no kernel for group {group.kind!r} ({group.root.op})")
    return make(group, k)
