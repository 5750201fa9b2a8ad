"""Kernel groups -> launchers of Triton kernels (the triton backend's lowering)."""

from __future__ import annotations

from typing import Callable

import torch

from dsc.codegen.schedule import Group
from dsc.codegen.triton import dense_attention, gemm, paged_attention, rowwise
from dsc.errors import DscError

Launcher = Callable[[dict, dict], torch.Tensor]  # (tensors by node id, the call's symbol bindings)
KINDS = frozenset({"view", "dispatch", "rowwise", "paged_append", "paged_gather", "gemm", "attention",
                   "paged_attention"})


def lower(group: Group) -> Launcher:
    kind, n = group.kind, group.root
    if kind in ("rowwise", "paged_append", "paged_gather"):
        _, kernel = rowwise.generate(group)
        return kernel
    if kind == "gemm":
        if n.op == "linear":
            return lambda v, env: gemm.linear(v[id(n.srcs[0])], v[id(n.srcs[1])])
        if len(n.srcs) != 2:
            raise DscError(f"einsum {n.attrs['spec']!r}: only two-operand contractions have a GEMM form")
        return lambda v, env: gemm.einsum(n.attrs["spec"], v[id(n.srcs[0])], v[id(n.srcs[1])])
    if kind == "attention":
        def run(v, env):
            q, k, val, lens = (v[id(s)] for s in group.inputs)
            return dense_attention.flash_attention(q, k, val, lens, n.attrs["scale"], len_offset=q.shape[1])[0]
        return run
    if kind == "paged_attention":
        dv = n.shape[-1]

        def run(v, env):
            q, cache, table, lens = (v[id(s)] for s in group.inputs)
            return paged_attention.paged_mla_attention(q, cache, table, lens, n.attrs["scale"], dv,
                                                       len_offset=q.shape[1])[0]
        return run
    raise DscError(f"the triton backend has no kernel for group {kind!r} ({n.op})")


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
        return paged_attention.signature(dt, heads=heads, page=cache.shape[1])
    raise DscError(f"the triton backend has no kernel for group {kind!r} ({n.op})")
