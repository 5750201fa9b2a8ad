"""Kernel groups -> launchers of TVM-built kernels (the tvm backend's lowering for llvm).

The same groups as the Triton backend (dsc.codegen.schedule); each launcher takes the
tensors by node id, the call's symbol bindings and a planned output buffer."""

from __future__ import annotations

import inspect

from dsc.codegen.kinds import GROUP_KINDS, ROW_KINDS
from dsc.codegen.lowering import KINDS, Launcher
from dsc.codegen.lowering import lower as lower_with
from dsc.codegen.router_spec import router_spec
from dsc.codegen.schedule import Group
from dsc.codegen.tvm import attention, fused_moe, gemm, router
from dsc.codegen.tvm.build import kernel_key
from dsc.codegen.tvm.rowwise import TVM_DTYPES, RowKernel, define_rows, define_scatter, rows_key
from dsc.errors import DscError
from dsc.ir.ops.grouped import EXPERT_BLOCK

__all__ = ["KINDS", "KERNELS", "lower", "kernel_defs"]

class TvmKernels:
    """The tvm backend's kernels behind dsc.codegen.lowering's calling convention."""

    name = "tvm"
    rows = staticmethod(RowKernel)
    linear = staticmethod(gemm.linear)
    einsum = staticmethod(gemm.einsum)
    route = staticmethod(router.route)
    align = staticmethod(fused_moe.align)
    grouped_gemm = staticmethod(fused_moe.grouped_gemm)
    fp8_linear = staticmethod(fused_moe.fp8_linear)
    combine = staticmethod(fused_moe.combine)

    @staticmethod
    def attention(q, k, v, lengths, scale, out=None):
        return attention.attention(q, k, v, lengths, scale, out=out)[0]

    @staticmethod
    def paged_attention(q, cache, table, lengths, scale, v_dim, len_offset, out=None, fp8_group=None):
        return attention.paged_mla_attention(q, cache, table, lengths, scale, v_dim, len_offset=len_offset, out=out,
                                             fp8_group=fp8_group)[0]


KERNELS = TvmKernels()


def lower(group: Group) -> Launcher:
    return lower_with(group, KERNELS)


# -- one definition listing per kernel-group kind: DEFS below ------------------------------
# Each takes the group and d(define, *args) -> (key, definition), and lists the kernels a
# group of that kind may launch.

def _dt(node) -> str:
    return TVM_DTYPES[node.dtype.name]


def _rows_defs(group: Group, d) -> list:
    rows = define_rows(group)[0]
    defs = [(rows_key(group), rows)] if rows is not None else []
    if group.kind == "paged_append":
        cache = group.root.srcs[0]
        defs.append(d(define_scatter, _dt(cache), cache.shape[2], cache.shape[1]))
    return defs


def _gemm_defs(group: Group, d) -> list:
    n = group.root
    if n.op == "linear":
        return [d(gemm.define_nt, _dt(n), _static(n.srcs[1].shape[1], "in features"))]
    k, nn = _einsum_kn(n)
    return [d(gemm.define_nt, _dt(n), k)] + ([d(gemm.define_nn, _dt(n), k, nn)] if isinstance(nn, int) else [])


def _attention_defs(group: Group, d) -> list:
    n = group.root
    q, k, v, _ = n.srcs
    return [d(attention.define_dense, _dt(q), q.shape[3], v.shape[3], k.shape[2] == 1 and q.shape[2] != 1,
              float(n.attrs["scale"]))]


def _paged_attention_defs(group: Group, d) -> list:
    n = group.root
    q, cache = group.inputs[:2]
    unpack = next((m for m in group.nodes if m.op == "kv_unpack_fp8"), None)
    return [d(attention.define_paged, _dt(q), q.shape[3], n.shape[-1], cache.shape[1], float(n.attrs["scale"]),
              unpack.attrs["group"] if unpack else None, cache.shape[2])]


def _router_defs(group: Group, d) -> list:
    return [d(router.define_router, router_spec(group), group.inputs[0].shape[-1], len(group.inputs) > 1)]


def _moe_align_defs(group: Group, d) -> list:
    n = group.root
    return [d(fused_moe.define_align, n.attrs["experts"], n.attrs["block"], n.srcs[0].shape[1], _dt(n.srcs[0]))]


def _grouped_gemm_defs(group: Group, d) -> list:
    n = group.root
    a, _, ids, w = n.srcs[:4]
    fp8 = group.kind == "grouped_gemm_fp8"
    n_w = 5 if fp8 else 4
    route = n.srcs[n_w] if len(n.srcs) > n_w else None
    return [d(fused_moe.define_grouped, w.shape[2], w.shape[1], ids.shape[1], n.srcs[1].attrs["block"],
              n.attrs["gather"], n.attrs["swiglu"], _dt(route) if route else None, _dt(a), _dt(n), _dt(ids),
              n.attrs["block"] if fp8 else None, fp8 and n.attrs["act_quant"])]


def _fp8_gemm_defs(group: Group, d) -> list:
    n = group.root
    x, wq, _ = n.srcs
    return [d(fused_moe.define_grouped, wq.shape[1], wq.shape[0], 1, 1, False, False, None, _dt(x), _dt(n), "int32",
              n.attrs["block"], n.attrs["act_quant"])]


def _moe_combine_defs(group: Group, d) -> list:
    n = group.root
    y, _, ids = n.srcs
    return [d(fused_moe.define_combine, ids.shape[1], y.shape[1], _dt(y), _dt(n))]


def _moe_experts_defs(group: Group, d) -> list:
    x, ids, w, gate, up, down = group.root.srcs
    e, inter, hidden = gate.shape
    return [d(fused_moe.define_align, e, EXPERT_BLOCK, ids.shape[1], _dt(ids)),
            d(fused_moe.define_grouped, hidden, 2 * inter, ids.shape[1], EXPERT_BLOCK, True, True, None, _dt(x),
              _dt(x), _dt(ids), None, False),
            d(fused_moe.define_grouped, inter, hidden, ids.shape[1], EXPERT_BLOCK, False, False, _dt(w), _dt(x),
              "float32", _dt(ids), None, False),
            d(fused_moe.define_combine, ids.shape[1], hidden, "float32", _dt(x))]


DEFS = {**{kind: _rows_defs for kind in ROW_KINDS}, "gemm": _gemm_defs, "attention": _attention_defs,
        "paged_attention": _paged_attention_defs, "router": _router_defs, "moe_align": _moe_align_defs,
        "grouped_gemm": _grouped_gemm_defs, "grouped_gemm_fp8": _grouped_gemm_defs, "fp8_gemm": _fp8_gemm_defs,
        "moe_combine": _moe_combine_defs, "moe_experts": _moe_experts_defs}


def kernel_defs(group: Group, target: str = "llvm") -> list[tuple[str, object]]:
    """(key, definition) of every kernel a group may launch, from the IR alone (static
    dtypes, widths and attributes): what `dsc compile --backend tvm` emits, under the
    keys the launchers ask for (build.kernel_key). An einsum lists both GEMM layouts
    (the launcher picks by its operand's layout)."""
    if GROUP_KINDS[group.kind].host:
        return []
    defs = DEFS.get(group.kind)
    if defs is None:
        raise DscError(f"the tvm backend has no kernel for group {group.kind!r} ({group.root.op})")

    def d(define, *args):
        made = define(*args, target=target) if "target" in inspect.signature(define).parameters else define(*args)
        return kernel_key(define, args), made

    return defs(group, d)


def _static(d, what: str) -> int:
    if not isinstance(d, int):
        raise DscError(f"the tvm kernels need a static {what}, got {d}")
    return d


def _einsum_kn(n) -> tuple[int, object]:
    """(K, N) of a two-operand einsum's GEMM form: K static, N an int or symbolic."""
    xl, rest = n.attrs["spec"].replace(" ", "").split(",")
    yl, out = rest.split("->")
    size = dict(zip(yl, n.srcs[1].shape))
    k, nn = 1, 1
    for c in yl:
        if c in xl and c not in out:
            k *= _static(size[c], f"contraction dim {c!r}")
        elif c not in xl:
            nn = nn * size[c] if isinstance(nn, int) and isinstance(size[c], int) else None
    return k, nn
