"""The fused MoE's kernel groups as TIR for llvm (TVMScript): token alignment, grouped
GEMMs (plain or block-scaled FP8), combine. The same contracts as the Triton kernels
(codegen/triton/fused_moe.py), which the tests hold both to.

- moe_align: a serial counting sort of the N*K slots by expert, each expert's run padded
  to a multiple of `block` with the sentinel N*K: a few thousand integer steps, less
  than a thread launch costs.
- grouped_gemm: (row block, 16-column chunk) tasks in parallel. Every row of a block
  belongs to one expert, so each weight row is read from memory once per block and
  reused from L1 by the block's rows. A block or row of padding writes zeros and does
  no work (a TE reduction would run its dot products anyway, and with E * (block - 1)
  padding rows against N*K real ones that is most of the work). Each dot product runs
  in `lanes` vector lanes summed at the end. gate+up share the row's loads,
  SiLU(gate) * up in the epilogue; down takes the routing weight. FP8 weights are uint8
  bytes decoded in the loop (fp8.py), with the activation's per-token group scales
  computed once per task.
- combine: the inverse of the sort (slot -> row), then tokens in parallel, each summing
  its K rows in float32 in a fixed order.

Values are rounded to the activation dtype where the reference rounds (after each
GEMM, after SiLU, after the product; FP8 products stay float32 until the end).
"""

from __future__ import annotations

import torch

from dsc.codegen.tvm import fp8
from dsc.codegen.tvm.build import (KernelDef, compiled, deliver, knobs, loop_kinds, output_buffer, require_tvm,
                                   store_as, tvm_dtype)
from dsc.codegen.tvm.gemm import TVM_OF_TORCH
from dsc.codegen.tvm.kernels import KERNELS
from dsc.ir.ops.grouped import EXPERT_BLOCK
from dsc.runtime.search_space import Space

TVM_INT = {torch.int32: "int32", torch.int64: "int64"}


def define_align(experts: int, block: int, topk: int, id_dtype: str, target: str = "llvm") -> KernelDef:
    require_tvm()
    from tvm.script import tirx as T

    loops = loop_kinds(target)

    @T.prim_func
    def main(i: T.handle, s: T.handle):
        n, rows = T.int64(), T.int64()
        ids = T.match_buffer(i, (n, topk), id_dtype)
        out = T.match_buffer(s, (rows,), "int32")
        for _ in loops.one():
            counts = T.decl_buffer((experts,), "int32", scope="local")
            cursor = T.decl_buffer((experts,), "int32", scope="local")
            for r in range(rows):
                out[r] = T.int32(n * topk)
            for e in range(experts):
                counts[e] = 0
            for slot in range(n * topk):  # an id of no expert (expert parallelism's -1) is not placed
                e = ids[slot // topk, slot % topk]
                if 0 <= e and e < experts:
                    counts[e] = counts[e] + 1
            cursor[0] = 0
            for e in range(experts - 1):  # each expert's first row: the padded runs before it
                cursor[e + 1] = cursor[e] + (counts[e] + block - 1) // block * block
            for slot in range(n * topk):  # stable: slots of one expert keep their order
                e = ids[slot // topk, slot % topk]
                if 0 <= e and e < experts:
                    out[cursor[e]] = T.int32(slot)
                    cursor[e] = cursor[e] + 1

    return KernelDef(f"moe_align_e{experts}_b{block}_k{topk}_{id_dtype}", main)


@KERNELS.provides
def align(ids: torch.Tensor, experts: int, block: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """moe_align: int32 [N*K + E*(block-1)], slots sorted by expert, runs padded."""
    n, k = ids.shape
    fn = compiled(define_align, experts, block, k, TVM_INT[ids.dtype])
    rows = n * k + experts * (block - 1)
    result = output_buffer(out, rows, torch.int32, ids.device)
    fn(ids.contiguous(), result)
    return deliver(result, out)


def define_grouped(kd: int, nw: int, topk: int, block: int, gather: bool, swiglu: bool, route_dt: str | None,
                   act_dt: str, out_dt: str, id_dtype: str, fp8_block: int | None, act_quant: bool,
                   target: str = "llvm", chunk: int = 16, cols: int = 4) -> KernelDef:
    """chunk: output columns per parallel task; cols: weight rows streamed together in
    one K loop (memory-level parallelism); chunk a multiple of cols."""
    require_tvm()
    from tvm.script import tirx as T

    loops = loop_kinds(target)

    lanes = next(v for v in (16, 8, 4, 2, 1) if kd % v == 0)
    half = nw // 2 if swiglu else 0
    n_out = half if swiglu else nw
    qb = fp8_block or 1
    n_kb = -(-kd // qb)  # activation scale groups per row
    mid = "float32" if fp8_block else act_dt  # FP8 products are float32 until the end (the IR's reference)
    w_dt = "uint8" if fp8_block else act_dt
    f32 = lambda v: T.float32(v)  # noqa: E731
    n_chunks = -(-n_out // chunk)

    def rnd(x):
        return store_as(x, mid).astype("float32") if mid != "float32" else x

    def weight(w_buf, s_buf, e, n, k):
        if fp8_block is None:
            return w_buf[e, n, k].astype("float32")
        return fp8.decode_e4m3(w_buf[e, n, k]) * s_buf[e, n // qb, k // qb]

    def a_row(slot, r):  # gather: the row's token; else the sorted row itself
        return slot // topk if gather else r

    def act(a_buf, sa, i, row, k):
        x = a_buf[row, k].astype("float32")
        return fp8.fake_quant(x, sa[i, k // qb]) if act_quant else x

    @T.macro
    def write(a, sorted_, ids, w, ws, route, out, sa, e, r, n0, i):
        """out[r, n0 .. n0 + cols) of a block whose rows belong to expert e (zero for a
        padding row): `cols` weight rows streamed together, for memory-level parallelism."""
        slot = T.int64(sorted_[r])
        if slot < ids.shape[0] * topk:
            row = a_row(slot, r)
            acc = T.decl_buffer((2, cols, lanes), "float32", scope="local")
            for j, l in T.grid(cols, lanes):
                acc[0, j, l] = f32(0)
                acc[1, j, l] = f32(0)
            for ko in range(kd // lanes):
                for j in T.unroll(cols):
                    for l in loops.vec(lanes):
                        acc[0, j, l] = acc[0, j, l] + act(a, sa, i, row, ko * lanes + l) * weight(
                            w, ws, e, T.min(n0 + j, n_out - 1), ko * lanes + l)
                        if swiglu:
                            acc[1, j, l] = acc[1, j, l] + act(a, sa, i, row, ko * lanes + l) * weight(
                                w, ws, e, T.min(n0 + j, n_out - 1) + half, ko * lanes + l)
            for j in range(cols):
                if n0 + j < n_out:
                    tot = T.decl_buffer((2,), "float32", scope="local")
                    tot[0] = f32(0)
                    tot[1] = f32(0)
                    for l in range(lanes):
                        tot[0] = tot[0] + acc[0, j, l]
                        tot[1] = tot[1] + acc[1, j, l]
                    h = T.decl_buffer((1,), "float32", scope="local")
                    h[0] = rnd(tot[0])
                    if swiglu:
                        h[0] = rnd(rnd(h[0] / (f32(1) + T.exp(-h[0]))) * rnd(tot[1]))
                    if route_dt is not None:
                        out[r, n0 + j] = store_as(h[0] * route[slot // topk, slot % topk].astype("float32"), out_dt)
                    else:
                        out[r, n0 + j] = store_as(h[0], out_dt)
        else:
            for j in range(cols):
                if n0 + j < n_out:
                    out[r, n0 + j] = T.Cast(out_dt, f32(0))

    @T.prim_func
    def main(a_h: T.handle, s_h: T.handle, i_h: T.handle, w_h: T.handle, ws_h: T.handle, r_h: T.handle,
             o_h: T.handle):
        n_tok, a_rows, rows, experts, s_n, s_k = T.int64(), T.int64(), T.int64(), T.int64(), T.int64(), T.int64()
        a = T.match_buffer(a_h, (a_rows, kd), act_dt)
        sorted_ = T.match_buffer(s_h, (rows,), "int32")
        ids = T.match_buffer(i_h, (n_tok, topk), id_dtype)
        w = T.match_buffer(w_h, (experts, nw, kd), w_dt)
        ws = T.match_buffer(ws_h, (experts, s_n, s_k), "float32")
        route = T.match_buffer(r_h, (n_tok, topk), route_dt or "float32")
        out = T.match_buffer(o_h, (rows, n_out), out_dt)
        for task in loops.par((rows + block - 1) // block * n_chunks):
            first = T.int64(sorted_[task // n_chunks * block])
            if first < n_tok * topk:  # a block of padding does no work: its rows are zeroed below
                e = T.int64(ids[first // topk, first % topk])
                sa = T.decl_buffer((block, n_kb), "float32", scope="local")
                if act_quant:  # each row's activation scales, once per task
                    for i in range(block):
                        if task // n_chunks * block + i < rows:
                            for kb in range(n_kb):
                                sa[i, kb] = f32(0)
                                for kk in range(qb):
                                    if kb * qb + kk < kd:
                                        sa[i, kb] = T.max(sa[i, kb], T.abs(a[a_row(
                                            T.int64(sorted_[task // n_chunks * block + i]),
                                            task // n_chunks * block + i), kb * qb + kk].astype("float32")))
                for nn in range(chunk // cols):
                    for i in range(block):  # the block's rows reuse these weight rows from L1
                        if task % n_chunks * chunk + nn * cols < n_out and task // n_chunks * block + i < rows:
                            write(a, sorted_, ids, w, ws, route, out, sa, e, task // n_chunks * block + i,
                                  task % n_chunks * chunk + nn * cols, i)
            else:
                for nn in range(chunk):
                    for i in range(block):
                        if task % n_chunks * chunk + nn < n_out and task // n_chunks * block + i < rows:
                            out[task // n_chunks * block + i, task % n_chunks * chunk + nn] = T.Cast(out_dt, f32(0))

    name = (f"grouped_gemm_{act_dt}_k{kd}_n{nw}_t{topk}_b{block}_c{chunk}x{cols}" + ("_gather" if gather else "") +
            ("_swiglu" if swiglu else "") + (f"_route_{route_dt}" if route_dt else "") +
            (f"_fp8b{fp8_block}" + ("_aq" if act_quant else "") if fp8_block else ""))
    return KernelDef(name, main)


TUNING = Space("tvm.grouped_gemm", {"chunk": (8, 16, 32, 64), "cols": (2, 4, 8)}, bucketed=("M",),
               default=lambda shape, device: {"chunk": 16, "cols": 4},
               fits=lambda config, shape, limits: config["chunk"] % config["cols"] == 0)


@KERNELS.provides
def grouped_gemm(a: torch.Tensor, sorted_slots: torch.Tensor, ids: torch.Tensor, w: torch.Tensor,
                 route_w: torch.Tensor | None, *, gather: bool, swiglu: bool, block: int,
                 scales: torch.Tensor | None = None, act_quant: bool = False, scale_block: int = 128,
                 out: torch.Tensor | None = None) -> torch.Tensor:
    """The grouped_gemm (scales given: grouped_gemm_fp8) op on the padded sorted layout."""
    fp8_w = scales is not None
    rows, (n_tok, topk), (experts, nw, kd) = sorted_slots.shape[0], ids.shape, w.shape
    act_dt = TVM_OF_TORCH[a.dtype]
    route_dt = TVM_OF_TORCH[route_w.dtype] if route_w is not None else None
    out_dtype = a.dtype  # the down projection's weighted rows too (the IR's rule)
    shape = {"M": n_tok, "N": nw, "K": kd, "experts": experts, "topk": topk, "block": block, "swiglu": swiglu,
             "fp8": scale_block if fp8_w else 0}
    fn = compiled(define_grouped, kd, nw, topk, block, gather, swiglu, route_dt, act_dt, TVM_OF_TORCH[out_dtype],
                  TVM_INT[ids.dtype], scale_block if fp8_w else None, fp8_w and act_quant,
                  **knobs(TUNING, shape, act_dt, a.device))
    width = nw // 2 if swiglu else nw
    result = output_buffer(out, (rows, width), out_dtype, a.device)
    wq = w.contiguous().view(torch.uint8) if fp8_w else w.contiguous()
    ws = scales.contiguous() if fp8_w else torch.zeros(experts, nw, 1, device=a.device)
    route = route_w.contiguous() if route_w is not None else torch.zeros(n_tok, topk, device=a.device)
    if rows and width:
        fn(a.contiguous(), sorted_slots.contiguous(), ids.contiguous(), wq, ws, route, result)
    return deliver(result, out)


@KERNELS.provides
def fp8_linear(x: torch.Tensor, wq: torch.Tensor, ws: torch.Tensor, *, act_quant: bool, block: int,
               out: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., K] @ dequant(wq, ws)ᵀ: a grouped GEMM with one expert and every row its own slot."""
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    m = x2.shape[0]
    slots = torch.arange(m, dtype=torch.int32, device=x.device)
    ids = torch.zeros(m, 1, dtype=torch.int32, device=x.device)
    y = grouped_gemm(x2, slots, ids, wq[None], None, gather=False, swiglu=False, block=1, scales=ws[None],
                     act_quant=act_quant, scale_block=block,
                     out=out.view(m, -1) if out is not None and out.is_contiguous() else None)
    y = y.view(*lead, wq.shape[0])
    if out is not None and y.data_ptr() != out.data_ptr():
        out.copy_(y)
        return out
    return y


def define_combine(topk: int, width: int, y_dt: str, out_dt: str, target: str = "llvm") -> KernelDef:
    require_tvm()
    from tvm.script import tirx as T

    loops = loop_kinds(target)

    @T.prim_func
    def main(y_h: T.handle, s_h: T.handle, inv_h: T.handle, o_h: T.handle):
        n_tok, rows = T.int64(), T.int64()
        y = T.match_buffer(y_h, (rows, width), y_dt)
        sorted_ = T.match_buffer(s_h, (rows,), "int32")
        inv = T.match_buffer(inv_h, (n_tok * topk,), "int32")
        out = T.match_buffer(o_h, (n_tok, width), out_dt)
        for _ in loops.one():
            for s in range(n_tok * topk):  # a slot of no expert is held by no row
                inv[s] = T.int32(-1)
            for r in range(rows):  # the sort's inverse: which row holds each slot
                if T.int64(sorted_[r]) < n_tok * topk:
                    inv[sorted_[r]] = T.int32(r)
        for t in loops.par(n_tok):
            for c in range(width):
                acc = T.decl_buffer((1,), "float32", scope="local")
                acc[0] = T.float32(0)
                for j in range(topk):
                    if inv[t * topk + j] >= 0:
                        acc[0] = acc[0] + y[inv[t * topk + j], c].astype("float32")
                out[t, c] = store_as(acc[0], out_dt)

    return KernelDef(f"moe_combine_{y_dt}_{out_dt}_k{topk}_w{width}", main)


@KERNELS.provides
def combine(y: torch.Tensor, sorted_slots: torch.Tensor, ids: torch.Tensor, dtype: torch.dtype,
            out: torch.Tensor | None = None) -> torch.Tensor:
    n_tok, topk = ids.shape
    width = y.shape[1]
    fn = compiled(define_combine, topk, width, TVM_OF_TORCH[y.dtype], TVM_OF_TORCH[dtype])
    result = output_buffer(out, (n_tok, width), dtype, y.device)
    if n_tok:
        inverse = torch.empty(n_tok * topk, dtype=torch.int32, device=y.device)
        fn(y.contiguous(), sorted_slots.contiguous(), inverse, result)
    return deliver(result, out)


# -- what each group kind defines (dsc.codegen.tvm.kernels.kernel_defs) ----------------------

@KERNELS.lists("moe_align")
def _align_defs(group, d) -> list:
    n = group.root
    return [d(define_align, n.attrs["experts"], n.attrs["block"], n.srcs[0].shape[1], tvm_dtype(n.srcs[0]))]


@KERNELS.lists("grouped_gemm", "grouped_gemm_fp8")
def _grouped_defs(group, d) -> list:
    n = group.root
    a, _, ids, w = n.srcs[:4]
    fp8 = group.kind == "grouped_gemm_fp8"
    n_w = 5 if fp8 else 4
    route = n.srcs[n_w] if len(n.srcs) > n_w else None
    return [d(define_grouped, w.shape[2], w.shape[1], ids.shape[1], n.srcs[1].attrs["block"], n.attrs["gather"],
              n.attrs["swiglu"], tvm_dtype(route) if route else None, tvm_dtype(a), tvm_dtype(n), tvm_dtype(ids),
              n.attrs["block"] if fp8 else None, fp8 and n.attrs["act_quant"])]


@KERNELS.lists("fp8_gemm")
def _fp8_gemm_defs(group, d) -> list:
    n = group.root
    x, wq, _ = n.srcs
    return [d(define_grouped, wq.shape[1], wq.shape[0], 1, 1, False, False, None, tvm_dtype(x), tvm_dtype(n), "int32",
              n.attrs["block"], n.attrs["act_quant"])]


@KERNELS.lists("moe_combine")
def _combine_defs(group, d) -> list:
    n = group.root
    y, _, ids = n.srcs
    return [d(define_combine, ids.shape[1], y.shape[1], tvm_dtype(y), tvm_dtype(n))]


@KERNELS.lists("moe_experts")
def _experts_defs(group, d) -> list:
    x, ids, w, gate, up, down = group.root.srcs
    e, inter, hidden = gate.shape
    dt = tvm_dtype
    return [d(define_align, e, EXPERT_BLOCK, ids.shape[1], dt(ids)),
            d(define_grouped, hidden, 2 * inter, ids.shape[1], EXPERT_BLOCK, True, True, None, dt(x), dt(x), dt(ids),
              None, False),
            d(define_grouped, inter, hidden, ids.shape[1], EXPERT_BLOCK, False, False, dt(w), dt(x), dt(x),
              dt(ids), None, False),  # the down projection's rows in x's dtype (the IR's rule)
            d(define_combine, ids.shape[1], hidden, dt(x), dt(x))]
