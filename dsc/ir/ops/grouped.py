"""Expert-grouped MoE ops: the fused form `fuse_experts` produces.

    slots  = (token, k) pairs, flattened: slot = token * top_k + k
    sorted = moe_align(ids)      slots grouped by expert, each expert's run padded to a
                                 multiple of `block` with the sentinel N * top_k
    h      = grouped_gemm(x, sorted, ids, W_gate_up, gather=True, swiglu=True)
    y      = grouped_gemm(h, sorted, ids, W_down, route_w)
    out    = moe_combine(y, sorted, ids)

Every `block` consecutive entries of `sorted` belong to one expert (the expert of the
block's first slot), which is what lets a grouped GEMM kernel run one weight matrix per
block of rows (vLLM's fused_moe, SGLang's and DeepGEMM's grouped layouts).
"""

from __future__ import annotations

import sympy
import torch
import torch.nn.functional as F

from dsc.ir.opdef import Attr, OpDef, register
from dsc.ir.ops.checks import dim_match, float_dtype, int_dtype, rank_is, same_dtype
from dsc.ir.types import TensorType, i32

# Rows per expert block of the grouped GEMMs: the moe_align block fuse_experts writes, and
# what an unfused moe_experts and dsc.ops.fused_moe run at. Kernels tune their own tiles inside it.
EXPERT_BLOCK = 16


def padded_slots(tokens, top_k: int, experts: int, block: int):
    """Rows of the sorted layout: every slot plus at most block - 1 padding per expert."""
    return sympy.expand(sympy.sympify(tokens) * top_k + experts * (block - 1))


def used_rows(sorted_len, ids: TensorType, experts):
    """Rows of the padded layout a call really touches: every slot, plus the padding of
    the experts that got any (at most min(E, slots) of them). Buffers are sized for the
    worst case; kernels skip empty blocks."""
    slots = sympy.sympify(ids.numel())
    pad = sympy.simplify((sympy.sympify(sorted_len) - slots) / experts)
    return slots + sympy.Min(experts, slots) * pad


def _row_bytes(t: TensorType, rows) -> sympy.Expr:
    return rows * sympy.sympify(t.nbytes()) / sympy.sympify(t.shape[0])


@register
class AppendIota(OpDef):
    """ids [N, K] -> [N, K + count] with columns start, start + 1, ... (always-selected experts)."""

    name = "append_iota"
    operands = ("ids",)
    attributes = {"start": Attr("int"), "count": Attr("int")}

    def infer(self, srcs, a):
        rank_is(self, "ids", srcs[0], 2)
        int_dtype(self, "ids", srcs[0])
        return srcs[0].with_shape([srcs[0].shape[0], srcs[0].shape[1] + a["count"]])

    def reference(self, args, a):
        ids = args[0]
        extra = torch.arange(a["start"], a["start"] + a["count"], dtype=ids.dtype, device=ids.device)
        return torch.cat([ids, extra.expand(ids.shape[0], -1)], dim=1)


@register
class AppendConst(OpDef):
    """w [N, K] -> [N, K + count] with constant columns (weight one for shared experts)."""

    name = "append_const"
    operands = ("x",)
    attributes = {"value": Attr("float"), "count": Attr("int")}

    def infer(self, srcs, a):
        rank_is(self, "x", srcs[0], 2)
        float_dtype(self, "x", srcs[0])
        return srcs[0].with_shape([srcs[0].shape[0], srcs[0].shape[1] + a["count"]])

    def reference(self, args, a):
        x = args[0]
        return torch.cat([x, torch.full((x.shape[0], a["count"]), a["value"], dtype=x.dtype, device=x.device)], 1)


@register
class MoeAlign(OpDef):
    """Slots sorted by expert, each expert's run padded to a multiple of block (int32). A
    slot whose id names no expert (outside 0 .. experts - 1: expert parallelism's -1, an
    expert another rank holds) is not placed, so it adds nothing downstream."""

    name = "moe_align"
    operands = ("ids",)
    attributes = {"experts": Attr("int"), "block": Attr("int")}

    def infer(self, srcs, a):
        ids = srcs[0]
        rank_is(self, "ids", ids, 2)
        int_dtype(self, "ids", ids)
        if not isinstance(ids.shape[1], int) or a["block"] < 1 or a["experts"] < 1:
            raise self.fail(f"needs an int top-k dim, block >= 1 and experts >= 1, got {ids}, {a}")
        return TensorType([padded_slots(ids.shape[0], ids.shape[1], a["experts"], a["block"])], i32)

    def reference(self, args, a):
        ids = args[0]
        n, k = ids.shape
        flat = ids.reshape(-1).to(torch.int64)
        block, sentinel = a["block"], n * k
        rows = n * k + a["experts"] * (block - 1)
        out = torch.full((rows,), sentinel, dtype=torch.int32, device=ids.device)
        held = (flat >= 0) & (flat < a["experts"])
        # slots of expert 0, then 1, ...; those of no expert last, never placed
        order = torch.argsort(torch.where(held, flat, a["experts"]), stable=True)
        counts = torch.bincount(flat[held], minlength=a["experts"]).tolist()
        start, pos = 0, 0
        for c in counts:
            out[pos:pos + c] = order[start:start + c].to(torch.int32)
            start += c
            pos += -(-c // block) * block
        return out

    def bytes(self, srcs, out, a):
        # reads the ids twice (count, then place); writes the used rows of the layout
        return 2 * sympy.sympify(srcs[0].nbytes()) + _row_bytes(out, used_rows(out.shape[0], srcs[0], a["experts"]))


@register
class GroupedGemm(OpDef):
    """One GEMM per block of `sorted` rows, with the weight of the block's expert.

    Row r reads a[slot // top_k] (gather=True: a holds tokens) or a[r] (a is already in
    sorted order) and computes w[e] @ row, e = ids.flat[slot]. swiglu=True takes
    w[e] = [gate; up] and returns silu(gate) * up (half the width). With route_w, the
    row is scaled by route_w.flat[slot] in float32 and rounded to a's dtype (the model's:
    the down projection written as vLLM's fused MoE and DeepSeek's own inference write
    it, half the bytes of float32 rows for the combine, which sums them in float32).
    Padding rows are zero.
    """

    name = "grouped_gemm"
    operands = ("a", "sorted", "ids", "w", "route_w?")
    attributes = {"gather": Attr("bool"), "swiglu": Attr("bool", False)}

    def infer(self, srcs, a):
        x, sorted_, ids, w = srcs[:4]
        rank_is(self, "a", x, 2)
        float_dtype(self, "a", x)
        rank_is(self, "sorted", sorted_, 1)
        int_dtype(self, "sorted", sorted_)
        rank_is(self, "ids", ids, 2)
        rank_is(self, "w", w, 3)
        same_dtype(self, x, w)
        dim_match(self, "w's input width", w.shape[2], x.shape[1])
        if not a["gather"]:
            dim_match(self, "a's rows (one per sorted slot)", x.shape[0], sorted_.shape[0])
        width = w.shape[1]
        if a["swiglu"]:
            if not isinstance(width, int) or width % 2:
                raise self.fail(f"swiglu needs an even weight width, got {width}")
            width //= 2
        dtype = x.dtype
        if len(srcs) == 5:
            rank_is(self, "route_w", srcs[4], 2)
            float_dtype(self, "route_w", srcs[4])
            dim_match(self, "route_w's shape", srcs[4].shape[1], ids.shape[1])
        return TensorType([sorted_.shape[0], width], dtype)

    def reference(self, args, a):
        x, sorted_, ids, w = args[:4]
        route = args[4] if len(args) == 5 else None
        k = ids.shape[1]
        flat_ids = ids.reshape(-1).to(torch.int64)
        slots = sorted_.to(torch.int64)
        valid = slots < flat_ids.numel()
        width = w.shape[1] // 2 if a["swiglu"] else w.shape[1]
        out = torch.zeros(slots.shape[0], width, dtype=x.dtype, device=x.device)
        rows = torch.nonzero(valid).reshape(-1)
        experts = flat_ids[slots[rows]]
        for e in experts.unique().tolist():
            r = rows[experts == e]
            src = x[slots[r] // k] if a["gather"] else x[r]
            h = F.linear(src, w[e])
            if a["swiglu"]:
                h = F.silu(h[:, :width]) * h[:, width:]
            if route is not None:
                h = h.float() * route.reshape(-1)[slots[r]].float()[:, None]
            out[r] = h.to(out.dtype)
        return out

    def flops(self, srcs, out, a):
        x, _, ids, w = srcs[:4]
        return 2 * sympy.sympify(ids.numel()) * w.shape[1] * w.shape[2]  # padding rows cost nothing real

    def bytes(self, srcs, out, a):
        x, sorted_, ids, w = srcs[:4]
        e = w.shape[0]
        rows = used_rows(sorted_.shape[0], ids, e)
        touched = sympy.Min(e, sympy.sympify(ids.numel()))
        a_bytes = sympy.sympify(x.nbytes()) if a["gather"] else _row_bytes(x, rows)
        io = a_bytes + _row_bytes(sorted_, rows) + _row_bytes(out, rows) + sum(
            sympy.sympify(t.nbytes()) for t in [ids] + list(srcs[4:]))
        return io + touched * sympy.sympify(w.nbytes()) / e


@register
class MoeCombine(OpDef):
    """Sum the sorted rows y [M, H] back into token order [N, H] (cast to `dtype`)."""

    name = "moe_combine"
    operands = ("y", "sorted", "ids")
    attributes = {"dtype": Attr("dtype")}

    def infer(self, srcs, a):
        y, sorted_, ids = srcs
        rank_is(self, "y", y, 2)
        dim_match(self, "y's rows", y.shape[0], sorted_.shape[0])
        return TensorType([ids.shape[0], y.shape[1]], a["dtype"])

    def reference(self, args, a):
        from dsc.ir.types import DTYPES, to_torch

        y, sorted_, ids = args
        n, k = ids.shape
        slots = sorted_.to(torch.int64)
        valid = slots < n * k
        out = torch.zeros(n, y.shape[1], dtype=torch.float32, device=y.device)
        out.index_add_(0, slots[valid] // k, y[valid].float())
        return out.to(to_torch(DTYPES[a["dtype"]]))

    def flops(self, srcs, out, a):
        return srcs[2].numel() * srcs[0].shape[1]

    def bytes(self, srcs, out, a):
        y, sorted_, ids = srcs
        rows = ids.numel()  # padding rows are skipped
        return _row_bytes(y, rows) + _row_bytes(sorted_, rows) + sympy.sympify(ids.nbytes()) + \
            sympy.sympify(out.nbytes())
