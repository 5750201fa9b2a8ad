"""Kernel groups -> launchers of Triton kernels (the triton backend's lowering)."""

from __future__ import annotations

from typing import Callable

import torch

from dsc.codegen.router_spec import router_spec
from dsc.codegen.schedule import Group
from dsc.codegen.triton import dense_attention, fp8_gemm, fused_moe, gemm, paged_attention, router, rowwise
from dsc.errors import DscError

Launcher = Callable[..., torch.Tensor]  # (tensors by node id, the call's symbol bindings, planned out or None)
KINDS = frozenset({"view", "dispatch", "rowwise", "paged_append", "paged_gather", "gemm", "attention",
                   "paged_attention", "router", "moe_align", "grouped_gemm", "grouped_gemm_fp8", "moe_combine",
                   "moe_experts", "fp8_gemm"})


def lower(group: Group) -> Launcher:
    kind, n = group.kind, group.root
    if kind in ("rowwise", "paged_append", "paged_gather"):
        _, kernel = rowwise.generate(group)
        return kernel
    if kind == "gemm":
        if n.op == "linear":
            return lambda v, env, out=None: gemm.linear(v[id(n.srcs[0])], v[id(n.srcs[1])], out=out)
        if len(n.srcs) != 2:
            raise DscError(f"einsum {n.attrs['spec']!r}: only two-operand contractions have a GEMM form")
        return lambda v, env, out=None: gemm.einsum(n.attrs["spec"], v[id(n.srcs[0])], v[id(n.srcs[1])], out=out)
    if kind == "attention":
        def run(v, env, out=None):
            q, k, val, lens = (v[id(s)] for s in group.inputs)
            return dense_attention.flash_attention(q, k, val, lens, n.attrs["scale"], len_offset=q.shape[1],
                                                   out=out)[0]
        return run
    if kind == "paged_attention":
        dv = n.shape[-1]

        unpack = next((m for m in group.nodes if m.op == "kv_unpack_fp8"), None)
        if unpack is not None and unpack.attrs["rank"] != dv:
            raise DscError(f"paged attention over an FP8 cache reads V as the rank {unpack.attrs['rank']} latent, "
                           f"got a V of width {dv}")

        def run(v, env, out=None):
            q, cache, table, lens = (v[id(s)] for s in group.inputs)
            return paged_attention.paged_mla_attention(q, cache, table, lens, n.attrs["scale"], dv,
                                                       len_offset=q.shape[1], out=out,
                                                       fp8_group=unpack.attrs["group"] if unpack else None)[0]
        return run
    if kind == "router":
        spec = router_spec(group)

        def run(v, env, out=None):
            logits = v[id(group.inputs[0])]
            bias = v[id(group.inputs[1])] if len(group.inputs) > 1 else None
            return router.route(logits, bias, spec, out=out)
        return run
    if kind == "moe_align":
        return lambda v, env, out=None: fused_moe.align(v[id(n.srcs[0])], n.attrs["experts"], n.attrs["block"], out=out)
    if kind in ("grouped_gemm", "grouped_gemm_fp8"):
        block = n.srcs[1].attrs["block"] if n.srcs[1].op == "moe_align" else None
        if block is None:
            raise DscError(f"{n.op}: its row layout must come from moe_align (the block size)")
        fp8 = kind == "grouped_gemm_fp8"
        n_w = 5 if fp8 else 4

        def run(v, env, out=None):
            a, slots, ids, w = (v[id(s)] for s in n.srcs[:4])
            scales = v[id(n.srcs[4])] if fp8 else None
            route = v[id(n.srcs[n_w])] if len(n.srcs) > n_w else None
            half = w.shape[1] // 2 if n.attrs["swiglu"] else 0
            gate, up = (w[:, :half], w[:, half:]) if half else (w, None)
            return fused_moe.grouped_gemm(a, slots, ids, gate, up, route, gather=n.attrs["gather"], block=block,
                                          scales=scales, up_offset=half, act_quant=fp8 and n.attrs["act_quant"],
                                          scale_block=n.attrs.get("block", 128), out=out)
        return run
    if kind == "fp8_gemm":
        return lambda v, env, out=None: fp8_gemm.fp8_linear(*(v[id(s)] for s in n.srcs),
                                                            act_quant=n.attrs["act_quant"], block=n.attrs["block"],
                                                            out=out)
    if kind == "moe_combine":
        from dsc.ir.types import to_torch

        return lambda v, env, out=None: fused_moe.combine(*(v[id(s)] for s in n.srcs), to_torch(n.type.dtype),
                                                          out=out)
    if kind == "moe_experts":
        def run(v, env, out=None):
            x, ids, w, gate, up, down = (v[id(s)] for s in n.srcs)
            slots = fused_moe.align(ids, gate.shape[0], EXPERT_BLOCK)
            h = fused_moe.grouped_gemm(x, slots, ids, gate, up, None, gather=True, block=EXPERT_BLOCK)
            y = fused_moe.grouped_gemm(h, slots, ids, down, None, w, gather=False, block=EXPERT_BLOCK)
            return fused_moe.combine(y, slots, ids, x.dtype, out=out)
        return run
    raise DscError(f"the triton backend has no kernel for group {kind!r} ({n.op})")


EXPERT_BLOCK = 16  # rows per expert block for an unfused moe_experts (fuse_experts' choice)


def compile_jobs(group: Group) -> list[tuple]:
    """(spec, signature, constexprs) of every kernel a group launches, at GPU tile
    sizes: what the sm_80/sm_90 compile check and `dsc compile`'s manifest use."""
    from dsc.codegen.triton.rowwise import TRITON_TYPES

    kind, n = group.kind, group.root
    if kind in ("view", "dispatch"):
        return []
    if kind in ("rowwise", "paged_append", "paged_gather"):
        spec, kernel = rowwise.generate(group)
        return [(spec, *kernel.signature())]
    dt = TRITON_TYPES[n.dtype.name]
    if kind == "gemm":
        return gemm.signature(dt)
    if kind == "attention":
        return dense_attention.signature(dt)
    if kind == "paged_attention":
        q, cache = group.inputs[:2]
        heads = q.shape[2] if isinstance(q.shape[2], int) else 128
        unpack = next((m for m in group.nodes if m.op == "kv_unpack_fp8"), None)
        return paged_attention.signature(dt, heads=heads, page=cache.shape[1],
                                         fp8_group=unpack.attrs["group"] if unpack else None, row_bytes=cache.shape[2])
    if kind == "router":
        return router.signature(router_spec(group), group.inputs[0].shape[-1], len(group.inputs) > 1)
    if kind == "fp8_gemm":
        return fp8_gemm.signature(TRITON_TYPES[n.dtype.name], n.attrs["act_quant"], n.attrs["block"])
    if kind in ("moe_align", "grouped_gemm", "grouped_gemm_fp8", "moe_combine", "moe_experts"):
        if kind == "moe_experts":
            ids, gate = n.srcs[1], n.srcs[3]
            experts, block, act = gate.shape[0], EXPERT_BLOCK, n.dtype.name
        else:
            align = n if kind == "moe_align" else n.srcs[1]
            ids, experts, block = align.srcs[0], align.attrs["experts"], align.attrs["block"]
            act = n.srcs[0].dtype.name if kind.startswith("grouped_gemm") else n.dtype.name
        fp8 = kind == "grouped_gemm_fp8"
        jobs = fused_moe.signature(TRITON_TYPES[act] if act in TRITON_TYPES else "fp32", experts, ids.shape[1], block,
                                   fp8=fp8, act_quant=fp8 and n.attrs["act_quant"])
        variant = [1] if n.attrs.get("swiglu") else [2]  # gate+up with SiLU, or down with routing weights
        pick = {"moe_align": [0], "grouped_gemm": variant, "grouped_gemm_fp8": variant, "moe_combine": [3, 4],
                "moe_experts": [0, 1, 2, 3, 4]}
        return [jobs[i] for i in pick[kind]]
    raise DscError(f"the triton backend has no kernel for group {kind!r} ({n.op})")
