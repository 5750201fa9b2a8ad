"""Kernel groups -> launchers of Triton kernels (the triton backend's lowering)."""

from __future__ import annotations

from dsc.codegen.kinds import GROUP_KINDS, ROW_KINDS
from dsc.codegen.lowering import KINDS, Launcher
from dsc.codegen.lowering import lower as lower_with
from dsc.codegen.router_spec import router_spec
from dsc.codegen.schedule import Group
from dsc.codegen.triton import dense_attention, fp8_gemm, fused_moe, gemm, paged_attention, router, rowwise
from dsc.codegen.triton.rowwise import TRITON_TYPES
from dsc.errors import DscError
from dsc.ir.ops.grouped import EXPERT_BLOCK

__all__ = ["KINDS", "KERNELS", "lower", "compile_jobs", "ON_GPU"]


class TritonKernels:
    """The triton backend's kernels behind dsc.codegen.lowering's calling convention."""

    name = "triton"

    def rows(self, group: Group):
        return rowwise.generate(group)[1]

    linear = staticmethod(gemm.linear)
    einsum = staticmethod(gemm.einsum)
    route = staticmethod(router.route)
    align = staticmethod(fused_moe.align)
    combine = staticmethod(fused_moe.combine)
    fp8_linear = staticmethod(fp8_gemm.fp8_linear)

    @staticmethod
    def attention(q, k, v, lengths, scale, out=None):
        return dense_attention.flash_attention(q, k, v, lengths, scale, len_offset=q.shape[1], out=out)[0]

    @staticmethod
    def paged_attention(q, cache, table, lengths, scale, v_dim, len_offset, out=None, fp8_group=None):
        return paged_attention.paged_mla_attention(q, cache, table, lengths, scale, v_dim, len_offset=len_offset,
                                                   out=out, fp8_group=fp8_group)[0]

    @staticmethod
    def grouped_gemm(a, slots, ids, w, route, *, gather, swiglu, block, scales=None, act_quant=False,
                     scale_block=128, out=None):
        half = w.shape[1] // 2 if swiglu else 0  # gate and up as two views of one weight
        gate, up = (w[:, :half], w[:, half:]) if half else (w, None)
        return fused_moe.grouped_gemm(a, slots, ids, gate, up, route, gather=gather, block=block, scales=scales,
                                      up_offset=half, act_quant=act_quant, scale_block=scale_block, out=out)


KERNELS = TritonKernels()


def lower(group: Group) -> Launcher:
    return lower_with(group, KERNELS)


# What launchers pick by device (tiles, splits, float32 dots for the interpreter): launch_jobs
# (dsc/executor/launches.py) takes these from compile_jobs (GPU values), every other argument from the recorded launch.
ON_GPU = {gemm.SPEC.name: ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M", "DOT_F32"),
          dense_attention.SPEC.name: ("DOT_F32",),
          paged_attention.SPLIT.name: ("SPLITS", "DOT_F32"), paged_attention.COMBINE.name: ("SPLITS", "BLOCK_S"),
          fp8_gemm.SPEC.name: ("BLOCK_M", "BLOCK_N", "DOT_F32"),
          fused_moe.GEMM.name: ("BLOCK_N", "BLOCK_K", "DOT_F32")}


# -- one compile listing per kernel-group kind: JOBS below --------------------------------
# Each gives (spec, signature, constexprs) of every kernel a group of that kind launches,
# at GPU tile sizes.

def _rows_jobs(group: Group) -> list[tuple]:
    spec, kernel = rowwise.generate(group)
    return [(spec, *kernel.signature())]


def _gemm_jobs(group: Group) -> list[tuple]:
    return gemm.signature(TRITON_TYPES[group.root.dtype.name])


def _attention_jobs(group: Group) -> list[tuple]:
    return dense_attention.signature(TRITON_TYPES[group.root.dtype.name])


def _paged_attention_jobs(group: Group) -> list[tuple]:
    q, cache = group.inputs[:2]
    heads = q.shape[2] if isinstance(q.shape[2], int) else 128
    unpack = next((m for m in group.nodes if m.op == "kv_unpack_fp8"), None)
    return paged_attention.signature(TRITON_TYPES[group.root.dtype.name], heads=heads, page=cache.shape[1],
                                     fp8_group=unpack.attrs["group"] if unpack else None, row_bytes=cache.shape[2])


def _router_jobs(group: Group) -> list[tuple]:
    return router.signature(router_spec(group), group.inputs[0].shape[-1], len(group.inputs) > 1)


def _fp8_gemm_jobs(group: Group) -> list[tuple]:
    n = group.root
    return fp8_gemm.signature(TRITON_TYPES[n.dtype.name], n.attrs["act_quant"], n.attrs["block"])


def _moe_jobs(group: Group) -> list[tuple]:
    """The fused-MoE kernels (align, the two grouped GEMM variants, the combine's two) a group uses."""
    kind, n = group.kind, group.root
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


JOBS = {**{kind: _rows_jobs for kind in ROW_KINDS}, "gemm": _gemm_jobs, "attention": _attention_jobs,
        "paged_attention": _paged_attention_jobs, "router": _router_jobs, "fp8_gemm": _fp8_gemm_jobs,
        **{kind: _moe_jobs for kind in ("moe_align", "grouped_gemm", "grouped_gemm_fp8", "moe_combine",
                                        "moe_experts")}}


def compile_jobs(group: Group) -> list[tuple]:
    """(spec, signature, constexprs) of every kernel a group launches, at GPU tile
    sizes: what the sm_80/sm_90 compile check and `dsc compile`'s manifest use."""
    if GROUP_KINDS[group.kind].host:
        return []
    jobs = JOBS.get(group.kind)
    if jobs is None:
        raise DscError(f"the triton backend has no kernel for group {group.kind!r} ({group.root.op})")
    return jobs(group)
