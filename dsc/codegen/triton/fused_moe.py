"""Kernel groups of the fused MoE: token alignment, grouped GEMMs, combine.

- moe_align: a counting sort of the N*K (token, expert) slots by expert, each expert's
  run padded to a multiple of the GEMM's row block, padding marked with the sentinel
  N*K (vLLM's moe_align_block_size, in its parallel form): per-chunk histograms
  (tl.histogram), one small program's padded prefix sums, then a stable placement per
  chunk, so the layout is exactly the reference's. No [slots, experts] tile (the
  one-program version spilled 18 KB per thread at V3's 257 experts), no atomics.
- grouped_gemm: one program per (row tile, column tile). moe_tiles cuts the layout into
  tiles of BLOCK_M rows (tuned per batch bucket, 16 to 128) that never cross an expert's
  run, so every row of a tile belongs to one expert, whose weight tile it reads. gate+up runs as two dots sharing the A
  tile with SiLU(gate)*up in the epilogue; down takes the routing weight in its
  epilogue and writes its rows in the activation dtype (vLLM's layout, half the bytes of
  float32 rows). Blocks of padding do no K loop and write zeros.
- combine: the inverse of the sort (slot -> row), then one program per token summing
  its K rows in float32 in a fixed order (deterministic, unlike atomics).

Values are rounded to the activation dtype where the reference rounds (after each
GEMM, after SiLU, after the product), so bf16 runs agree with the interpreter.
"""

from __future__ import annotations

import torch

from dsc.codegen.triton.build import (TRITON_TYPES, KernelSpec, choosing_for, launch_options, load_kernel, next_pow2,
                                      on_hopper, with_helpers)
from dsc.codegen.triton.kernels import KERNELS
from dsc.ir.ops.grouped import EXPERT_BLOCK
from dsc.runtime.search_space import Space

SOURCE = '''
import triton
import triton.language as tl


@triton.jit
def moe_align_count(ids_ptr, sorted_ptr, counts_ptr, NK, ROWS, FILL, E: tl.constexpr, BINS: tl.constexpr,
                    CHUNK: tl.constexpr, SUB: tl.constexpr):
    """Program p: the sentinel into its FILL rows of the layout, and the expert histogram of
    its CHUNK slots into counts[p] (bin E and up: ids outside 0..E-1 and the masked tail,
    never placed)."""
    p = tl.program_id(0)
    c = tl.arange(0, SUB)
    for r0 in range(p * FILL, tl.minimum(p * FILL + FILL, ROWS), SUB):
        tl.store(sorted_ptr + r0 + c, tl.zeros([SUB], tl.int32) + NK, mask=(r0 + c < ROWS) & (r0 + c < p * FILL + FILL))
    counts = tl.zeros([BINS], tl.int32)
    for s0 in range(p * CHUNK, tl.minimum(p * CHUNK + CHUNK, NK), SUB):
        x = tl.load(ids_ptr + s0 + c, mask=s0 + c < NK, other=-1)
        x = tl.where((s0 + c < NK) & (x >= 0) & (x < E), x, E).to(tl.int32)  # the spare bin: no mask (see align)
        counts += tl.histogram(x, BINS)
    tl.store(counts_ptr + p * BINS + tl.arange(0, BINS), counts)


@triton.jit
def moe_align_offsets(counts_ptr, PROGRAMS, E: tl.constexpr, BINS: tl.constexpr, BLOCK: tl.constexpr):
    """Each expert's run padded to BLOCK rows, its first row an exclusive prefix sum; then
    counts[p] becomes where program p's first slot of each expert goes."""
    bins = tl.arange(0, BINS)
    total = tl.zeros([BINS], tl.int32)
    for p in range(0, PROGRAMS):
        total += tl.load(counts_ptr + p * BINS + bins)
    padded = tl.where(bins < E, (total + BLOCK - 1) // BLOCK * BLOCK, 0)
    cursor = tl.cumsum(padded, axis=0) - padded
    for p in range(0, PROGRAMS):
        here = tl.load(counts_ptr + p * BINS + bins)
        tl.store(counts_ptr + p * BINS + bins, cursor)
        cursor += here


@triton.jit
def moe_align_place(ids_ptr, sorted_ptr, counts_ptr, NK, E: tl.constexpr, BINS: tl.constexpr, CHUNK: tl.constexpr,
                    SUB: tl.constexpr):
    """Program p places its CHUNK slots in order, SUB at a time: a slot goes to its
    expert's cursor plus the slots of that expert before it in the SUB; the cursors (its
    row of counts) then advance by the SUB's histogram. Stable, so the layout is exactly
    the reference's."""
    p = tl.program_id(0)
    c = tl.arange(0, SUB)
    cursor = counts_ptr + p * BINS
    for s0 in range(p * CHUNK, tl.minimum(p * CHUNK + CHUNK, NK), SUB):
        ok = s0 + c < NK
        x = tl.load(ids_ptr + s0 + c, mask=ok, other=-1)
        ok = ok & (x >= 0) & (x < E)
        x = tl.where(ok, x, E).to(tl.int32)
        earlier = (x[:, None] == x[None, :]) & (c[None, :] < c[:, None])
        rank = tl.sum(earlier.to(tl.int32), axis=1)
        base = tl.load(cursor + x)
        tl.store(sorted_ptr + base + rank, s0 + c, mask=ok)
        tl.debug_barrier()  # every thread read the cursors before they move
        bins = tl.arange(0, BINS)
        tl.store(cursor + bins, tl.load(cursor + bins) + tl.histogram(x, BINS))
        tl.debug_barrier()


@triton.jit
def _run_key(sorted_ptr, ids_ptr, b, ok, NK, EB: tl.constexpr):
    """The expert whose run layout block b (of EB rows) is in, -1 in the sentinel tail: a
    run's every block starts with a real slot (runs are padded to EB at their end)."""
    first = tl.load(sorted_ptr + b * EB, mask=ok, other=NK)
    return tl.where(first < NK, tl.load(ids_ptr + first, mask=ok & (first < NK), other=0).to(tl.int32), -1)


@triton.jit
def _max_combine(a, b):
    return tl.maximum(a, b)


@triton.jit
def moe_tiles(sorted_ptr, ids_ptr, tiles_ptr, NK, BLOCKS, TILES, EB: tl.constexpr, R: tl.constexpr,
              BLOCK: tl.constexpr, BLOCK_T: tl.constexpr):
    """The grouped GEMM's row tiles over the layout: a tile of R blocks (R * EB rows) starts
    at every run's first block and every R-th block after it (the tail of sentinel blocks
    is one more run, written as zeros), so no tile mixes experts. tiles[t] = its first
    block, -1 past the last tile. One program, a scan over the blocks."""
    b = tl.arange(0, BLOCK)
    ok = b < BLOCKS
    key = _run_key(sorted_ptr, ids_ptr, b, ok, NK, EB)
    before = _run_key(sorted_ptr, ids_ptr, b - 1, ok & (b > 0), NK, EB)
    change = ok & ((b == 0) | (key != before))
    run_start = tl.associative_scan(tl.where(change, b, 0), 0, _max_combine)
    starts = ok & (change | ((b - run_start) % R == 0))
    index = tl.cumsum(starts.to(tl.int32), 0) - 1
    tl.store(tiles_ptr + index, b, mask=starts)
    count = tl.sum(starts.to(tl.int32), 0)
    t = tl.arange(0, BLOCK_T)
    tl.store(tiles_ptr + t, tl.zeros([BLOCK_T], tl.int32) - 1, mask=(t >= count) & (t < TILES))


@triton.jit
def grouped_gemm(a_ptr, sam, sorted_ptr, tiles_ptr, ids_ptr, wg_ptr, wu_ptr, swe, swn, swk, s_ptr, sse, KB, UP_OFF,
                 route_ptr, out_ptr, NK, ROWS, N, K, TILES,
                 TOPK: tl.constexpr, GATHER: tl.constexpr, SWIGLU: tl.constexpr, ROUTE: tl.constexpr,
                 WFP8: tl.constexpr, ACT_QUANT: tl.constexpr, EB: tl.constexpr, BLOCK_M: tl.constexpr,
                 BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr, DOT_F32: tl.constexpr):
    # launch order (grid (GROUP_M, column tiles, groups), x fastest): GROUP_M row tiles at
    # a time, each column tile of the group's rows in turn (vLLM's GROUP_SIZE_M). A row
    # tile's activations are re-read by its column tiles GROUP_M programs apart, and an
    # expert's next tile reads the weight tile just read: both from L2, not HBM. (The
    # same order computed from a 1-D program id, by division, capped sm_80's registers
    # at 128 and spilled.)
    tile = tl.program_id(2) * GROUP_M + tl.program_id(0)
    col = tl.program_id(1)
    if tile >= TILES:  # the last group's spare slots
        return
    start = tl.load(tiles_ptr + tile)  # this tile's first layout block (moe_tiles)
    if start < 0:  # past the last tile
        return
    r = start * EB + tl.arange(0, BLOCK_M)
    n = col * BLOCK_N + tl.arange(0, BLOCK_N)
    kk = tl.arange(0, BLOCK_K)
    key = _run_key(sorted_ptr, ids_ptr, start, start >= 0, NK, EB)
    # the tile's rows: its run's blocks only (a run may end before BLOCK_M rows)
    r_ok = (r < ROWS) & (_run_key(sorted_ptr, ids_ptr, r // EB, r < ROWS, NK, EB) == key)
    slot = tl.load(sorted_ptr + r, mask=r_ok, other=NK)
    valid = slot < NK
    first = tl.where(key >= 0, 0, NK)  # a tail tile does no work
    expert = tl.maximum(key, 0).to(tl.int64)
    if GATHER:
        row = slot // TOPK
    else:
        row = r
    a = a_ptr + row[:, None].to(tl.int64) * sam + kk[None, :]
    w_off = expert * swe + n[None, :].to(tl.int64) * swn + kk[:, None].to(tl.int64) * swk
    acc_g = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    acc_u = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    k_end = tl.where(first < NK, K, 0)  # a block of padding does no work
    for k0 in range(0, k_end, BLOCK_K):
        x = tl.load(a + k0, mask=valid[:, None] & (kk[None, :] + k0 < K), other=0.0)
        wmask = (kk[:, None] + k0 < K) & (n[None, :] < N)
        wg = tl.load(wg_ptr + w_off + k0 * swk, mask=wmask, other=0.0)
        if WFP8:  # block scales of the gate (or only) rows, and of the up rows UP_OFF further down
            s_row = s_ptr + expert * sse + k0 // BLOCK_K
            acc_g += fp8_step(x, wg, tl.load(s_row + (n // BLOCK_K) * KB, mask=n < N, other=0.0), ACT_QUANT, DOT_F32)
            if SWIGLU:
                wu = tl.load(wu_ptr + w_off + k0 * swk, mask=wmask, other=0.0)
                su = tl.load(s_row + ((n + UP_OFF) // BLOCK_K) * KB, mask=n < N, other=0.0)
                acc_u += fp8_step(x, wu, su, ACT_QUANT, DOT_F32)
        else:
            if DOT_F32:
                x = x.to(tl.float32)
                wg = wg.to(tl.float32)
            acc_g = tl.dot(x, wg, acc_g)
            if SWIGLU:
                wu = tl.load(wu_ptr + w_off + k0 * swk, mask=wmask, other=0.0)
                if DOT_F32:
                    wu = wu.to(tl.float32)
                acc_u = tl.dot(x, wu, acc_u)
    # the plain path rounds to the activation dtype where the reference does; the FP8
    # path (like its reference) keeps float32 until the store
    act = a_ptr.dtype.element_ty if not WFP8 else tl.float32
    h = to_out(acc_g, act).to(tl.float32)
    if SWIGLU:
        u = to_out(acc_u, act).to(tl.float32)
        h = to_out(to_out(h / (1.0 + tl.exp(-h)), act).to(tl.float32) * u, act).to(tl.float32)
    if ROUTE:
        h = h * tl.load(route_ptr + slot, mask=valid, other=0.0).to(tl.float32)[:, None]
    h = tl.where(valid[:, None], h, 0.0)
    tl.store(out_ptr + r[:, None].to(tl.int64) * N + n[None, :], to_out(h, out_ptr.dtype.element_ty),
             mask=r_ok[:, None] & (n[None, :] < N))


@triton.jit
def moe_inverse(sorted_ptr, inv_ptr, NK, ROWS, BLOCK: tl.constexpr):
    r = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    slot = tl.load(sorted_ptr + r, mask=r < ROWS, other=NK)
    tl.store(inv_ptr + slot, r, mask=slot < NK)


@triton.jit
def moe_combine(y_ptr, inv_ptr, out_ptr, H, TOPK: tl.constexpr, BLOCK_H: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    acc = tl.zeros([BLOCK_H], tl.float32)
    for j in tl.static_range(TOPK):
        row = tl.load(inv_ptr + t * TOPK + j).to(tl.int64)  # -1: a slot of no expert, not placed
        acc += tl.load(y_ptr + row * H + h, mask=(h < H) & (row + h * 0 >= 0), other=0.0).to(tl.float32)
    tl.store(out_ptr + t * H + h, to_out(acc, out_ptr.dtype.element_ty), mask=h < H)
'''

ALIGN_COUNT = KernelSpec("moe_align_count", with_helpers(SOURCE), "(cdiv(NK, CHUNK),)")
ALIGN_OFFSETS = KernelSpec("moe_align_offsets", with_helpers(SOURCE), "(1,)")
ALIGN_PLACE = KernelSpec("moe_align_place", with_helpers(SOURCE), "(cdiv(NK, CHUNK),)")
GEMM = KernelSpec("grouped_gemm", with_helpers(SOURCE), "(GROUP_M, cdiv(N, BLOCK_N), cdiv(tiles bound, GROUP_M))",
                  dot_rows="BLOCK_M")
TILES = KernelSpec("moe_tiles", with_helpers(SOURCE), "(1,)")
INVERSE = KernelSpec("moe_inverse", with_helpers(SOURCE), "(cdiv(ROWS, BLOCK),)")
COMBINE = KernelSpec("moe_combine", with_helpers(SOURCE), "(N tokens, cdiv(H, BLOCK_H))")
ALIGN_CHUNK = 1024  # slots per align program: 36 programs for V3's 4096-token prefill, 1 for a decode batch
ALIGN_SUB = 64  # slots a program places at once ([SUB, SUB] rank compare: no spills)


def align_bins(experts: int) -> int:
    """Histogram bins: the experts and at least one spare (out-of-range ids and the masked
    tail; Triton's interpreter counts masked-out elements in bin 0, so no mask is used)."""
    return next_pow2(experts + 1)


@KERNELS.provides
def align(ids: torch.Tensor, experts: int, block: int, out: torch.Tensor | None = None, *,
          chunk: int = ALIGN_CHUNK, sub: int = ALIGN_SUB) -> torch.Tensor:
    """ids [N, K] -> sorted slots [N*K + experts*(block-1)] int32 (sentinel N*K). Three
    launches, no atomics: per-chunk expert histograms (and the sentinel fill), the padded
    prefix sums, a stable placement per chunk. chunk, sub: powers of two, sub <= chunk."""
    nk = ids.numel()
    rows = nk + experts * (block - 1)
    if out is None:
        out = torch.empty(rows, dtype=torch.int32, device=ids.device)
    programs = max(1, -(-nk // chunk))
    bins = align_bins(experts)
    counts = torch.empty(programs * bins, dtype=torch.int32, device=ids.device)
    ids = ids.contiguous()
    fill = -(-rows // programs)
    tiles = {"E": experts, "BINS": bins, "CHUNK": chunk, "SUB": sub}
    load_kernel(ALIGN_COUNT, ids.device)[(programs,)](ids, out, counts, nk, rows, fill, **tiles)
    load_kernel(ALIGN_OFFSETS, ids.device)[(1,)](counts, programs, E=experts, BINS=bins, BLOCK=block)
    load_kernel(ALIGN_PLACE, ids.device)[(programs,)](ids, out, counts, nk, **tiles)
    return out


def grouped_gemm(a: torch.Tensor, sorted_slots: torch.Tensor, ids: torch.Tensor, w_gate: torch.Tensor,
                 w_up: torch.Tensor | None, route: torch.Tensor | None, *, gather: bool, block: int,
                 scales: torch.Tensor | None = None, up_offset: int = 0, act_quant: bool = False,
                 scale_block: int = 128, out: torch.Tensor | None = None,
                 config: dict | None = None) -> torch.Tensor:
    """Rows of the sorted layout (runs padded to `block` rows): (silu(a wgᵀ) * a wuᵀ if w_up
    else a wgᵀ) [* route], padding rows zero. Row tiles of BLOCK_M (a multiple of block,
    tuned per batch bucket) within one expert's run (moe_tiles); config: a TUNING config
    instead of the tuned or default one (tests draw tiles with it). w_gate / w_up [E, N, K]
    (any strides, the same for both: views of one w13); out in a's dtype. With
    scales [E, ceil(rows/b), ceil(K/b)] the weights are block-scaled e4m3 (the up rows
    start up_offset rows into the scaled weight); act_quant quantizes the activations per
    row per scale_block channels."""
    rows = sorted_slots.shape[0]
    n, k = w_gate.shape[1], w_gate.shape[2]
    if out is None:
        out = torch.empty(rows, n, dtype=a.dtype, device=a.device)
    a = a if a.stride(-1) == 1 else a.contiguous()
    ids = ids.contiguous()
    fp8 = scales is not None
    shape = {"M": ids.shape[0], "N": n, "K": k, "experts": w_gate.shape[0], "topk": ids.shape[1],
             "block": block, "swiglu": w_up is not None, "fp8": scale_block if fp8 else 0,
             "itemsize": a.element_size()}
    device = choosing_for(a)
    tuned = config or TUNING.choose(shape, a.dtype, device)
    bm = tuned["BLOCK_M"]
    cfg = {"BLOCK_M": bm, "BLOCK_N": tuned["BLOCK_N"], "BLOCK_K": tuned["BLOCK_K"], "GROUP_M": tuned["GROUP_M"],
           **launch_options(tuned, device)}
    blocks = -(-rows // block)
    # tiles of bm rows never mix experts: at most one partial tile per run (the experts'
    # and the sentinel tail's) beyond the full ones
    bound = -(-blocks // (bm // block)) + w_gate.shape[0] + 1
    grid = (cfg["GROUP_M"], -(-n // cfg["BLOCK_N"]), -(-bound // cfg["GROUP_M"]))
    if rows and n:
        tiles = torch.empty(bound, dtype=torch.int32, device=a.device)
        load_kernel(TILES, a.device)[(1,)](sorted_slots, ids, tiles, ids.numel(), blocks, bound, EB=block,
                                           R=bm // block, BLOCK=next_pow2(blocks), BLOCK_T=next_pow2(bound),
                                           **({"num_warps": 8} if device.type == "cuda" else {}))
        s = scales.contiguous() if fp8 else a
        if w_up is not None and w_up.stride() != w_gate.stride():  # the kernel walks both with one set of strides
            w_gate, w_up = w_gate.contiguous(), w_up.contiguous()
        if fp8 and not act_quant:
            w_gate, w_up = w_gate.view(torch.uint8), w_up.view(torch.uint8) if w_up is not None else None
        load_kernel(GEMM, a.device)[grid](
            a, a.stride(0), sorted_slots, tiles, ids, w_gate, w_up if w_up is not None else w_gate,
            w_gate.stride(0), w_gate.stride(1), w_gate.stride(2), s, s.stride(0) if fp8 else 0,
            s.shape[-1] if fp8 else 0, up_offset,
            route.contiguous() if route is not None else a, out, ids.numel(), rows, n, k, bound, TOPK=ids.shape[1],
            GATHER=gather, SWIGLU=w_up is not None, ROUTE=route is not None, WFP8=fp8, ACT_QUANT=act_quant,
            EB=block, DOT_F32=device.type != "cuda" or (a.dtype == torch.float32 and not act_quant), **cfg)
    return out


def default_block_m(shape) -> int:
    """Rows per tile: the rows an expert gets on average (balanced routing), 16 to 128:
    16 for a decode batch (a few rows per expert), 64 and 128 at prefill (wgmma tiles on
    sm_90, each expert's weights re-streamed once per tile: 2 passes at 4096 tokens of
    V3 instead of 9 with 16-row tiles)."""
    per_expert = shape["M"] * shape["topk"] / max(1, shape["experts"])
    return max(shape["block"], min(128, next_pow2(max(1, int(per_expert)))))


def default_config(shape, device: torch.device) -> dict:
    fixed = _fixed(shape)
    if device.type != "cuda":
        return {"BLOCK_M": shape["block"], "BLOCK_N": max(16, min(128, next_pow2(shape["N"]))),
                "BLOCK_K": max(16, min(64, next_pow2(shape["K"]))), "GROUP_M": 1, "num_warps": 4, "num_stages": 1,
                **fixed}
    bm = default_block_m(shape)
    hopper = on_hopper(device)
    if shape["fp8"] and not hopper:
        # weight-only FP8 decodes the weight tile in registers: 64 rows and up spilled on
        # sm_80 (656-720 B per thread), 16 and 32 do not
        bm = min(bm, 32)
    # 128 x 128 on eight warps only for Hopper's bf16 (wgmma, 241 registers); its FP8 tile
    # (per-row activation scales beside two accumulators) and sm_80's 128-row tiles spill
    # at 128 columns and fit at 64 (measured with ptxas -v, triton 3.6)
    bn = 128 if hopper and bm == 128 and not shape["fp8"] else 64
    # groups of 16 row tiles: all of a group's column tiles stay within one wave of
    # programs' reach, and an expert's tiles (consecutive) share a group but for 1 in 16
    return {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": 64, "GROUP_M": 16, "num_warps": 8 if bm == 128 else 4,
            "num_stages": 3, **fixed}


def _fixed(shape) -> dict:
    return {"BLOCK_K": shape["fp8"]} if shape["fp8"] else {}  # one weight scale per K step


def fits(config: dict, shape, limits) -> bool:
    """Pipelined activation and weight tiles (two weights under SwiGLU) in shared memory,
    the accumulators within half of a thread's registers, no tile past the problem."""
    bm, bn, bk, warps = config["BLOCK_M"], config["BLOCK_N"], config["BLOCK_K"], config["num_warps"]
    mats = 2 if shape["swiglu"] else 1
    w_item = 1 if shape["fp8"] else shape["itemsize"]
    smem = config["num_stages"] * (bm * bk * shape["itemsize"] + mats * bk * bn * w_item)
    return (smem <= limits.smem_per_block and mats * bm * bn // (32 * warps) <= (limits.regs_per_thread + 1) // 2
            and bm % shape["block"] == 0 and bn <= max(16, next_pow2(shape["N"]))
            and bk <= max(16, next_pow2(shape["K"])))


TUNING = Space("triton.grouped_gemm", {"BLOCK_M": (16, 32, 64, 128), "BLOCK_N": (32, 64, 128, 256),
                                       "BLOCK_K": (32, 64, 128, 256), "GROUP_M": (1, 4, 16, 32, 64),
                                       "num_warps": (2, 4, 8), "num_stages": (2, 3, 4, 5)},
               bucketed=("M",), default=default_config, fits=fits, fixed=_fixed)


@KERNELS.provides
def combine(y: torch.Tensor, sorted_slots: torch.Tensor, ids: torch.Tensor, dtype: torch.dtype,
            out: torch.Tensor | None = None) -> torch.Tensor:
    """Sum each token's K rows of y [rows, H] (sorted layout) into [N, H] in `dtype`."""
    tokens, topk = ids.shape
    rows, h = y.shape
    inv = torch.full((tokens * topk,), -1, dtype=torch.int32, device=y.device)  # (slots of no expert stay -1)
    if out is None:
        out = torch.empty(tokens, h, dtype=dtype, device=y.device)
    if tokens:
        load_kernel(INVERSE, y.device)[(-(-rows // 1024),)](sorted_slots, inv, tokens * topk, rows, BLOCK=1024)
        bh = min(1024, next_pow2(h))
        load_kernel(COMBINE, y.device)[(tokens, -(-h // bh))](y, inv, out, h, TOPK=topk, BLOCK_H=bh)
    return out


def signature(dtype: str, experts: int = 257, topk: int = 9, block: int = 16, fp8: bool = False,
              act_quant: bool = True) -> list[tuple]:
    """(spec, signature, constexprs) of every fused-MoE kernel at DeepSeek-V3's sizes."""
    def job(spec, sig, const):
        return (spec, {**sig, **{k: "constexpr" for k in const}}, const)

    tiles = {"E": experts, "BINS": align_bins(experts), "CHUNK": ALIGN_CHUNK, "SUB": ALIGN_SUB}
    align_jobs = [job(ALIGN_COUNT, {"ids_ptr": "*i64", "sorted_ptr": "*i32", "counts_ptr": "*i32", "NK": "i32",
                                    "ROWS": "i32", "FILL": "i32"}, tiles),
                  job(ALIGN_OFFSETS, {"counts_ptr": "*i32", "PROGRAMS": "i32"},
                      {"E": experts, "BINS": align_bins(experts), "BLOCK": block}),
                  job(ALIGN_PLACE, {"ids_ptr": "*i64", "sorted_ptr": "*i32", "counts_ptr": "*i32", "NK": "i32"}, tiles)]
    wdt = ("fp8e4nv" if act_quant else "u8") if fp8 else dtype
    gemm_sig = {"a_ptr": f"*{dtype}", "sam": "i32", "sorted_ptr": "*i32", "tiles_ptr": "*i32", "ids_ptr": "*i64",
                "wg_ptr": f"*{wdt}", "wu_ptr": f"*{wdt}", "swe": "i32", "swn": "i32", "swk": "i32", "s_ptr": "*fp32",
                "sse": "i32",
                "KB": "i32", "UP_OFF": "i32", "route_ptr": "*fp32", "out_ptr": f"*{dtype}", "NK": "i32",
                "ROWS": "i32", "N": "i32", "K": "i32", "TILES": "i32"}
    common = {"TOPK": topk, "EB": block, "BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 128 if fp8 else 64, "GROUP_M": 16,
              "WFP8": fp8,
              "ACT_QUANT": fp8 and act_quant, "DOT_F32": dtype == "fp32" and not (fp8 and act_quant)}
    up = job(GEMM, gemm_sig, {"GATHER": True, "SWIGLU": True, "ROUTE": False, **common})
    down = job(GEMM, gemm_sig, {"GATHER": False, "SWIGLU": False, "ROUTE": True, **common})
    inverse = job(INVERSE, {"sorted_ptr": "*i32", "inv_ptr": "*i32", "NK": "i32", "ROWS": "i32"}, {"BLOCK": 1024})
    comb = job(COMBINE, {"y_ptr": f"*{dtype}", "inv_ptr": "*i32", "out_ptr": f"*{dtype}", "H": "i32"},
               {"TOPK": topk, "BLOCK_H": 1024})
    tiles_job = job(TILES, {"sorted_ptr": "*i32", "ids_ptr": "*i64", "tiles_ptr": "*i32", "NK": "i32",
                            "BLOCKS": "i32", "TILES": "i32"},
                    {"EB": block, "R": 64 // block, "BLOCK": 4096, "BLOCK_T": 4096})
    return [*align_jobs, tiles_job, up, down, inverse, comb]


@KERNELS.provides("grouped_gemm")
def _grouped_gemm(a, slots, ids, w, route, *, gather, swiglu, block, scales=None, act_quant=False, scale_block=128,
                  out=None, config=None):
    """The group kinds' convention (one weight, gate rows then up rows under swiglu) on
    this kernel's two weight views."""
    half = w.shape[1] // 2 if swiglu else 0
    gate, up = (w[:, :half], w[:, half:]) if half else (w, None)
    return grouped_gemm(a, slots, ids, gate, up, route, gather=gather, block=block, scales=scales, up_offset=half,
                        act_quant=act_quant, scale_block=scale_block, out=out, config=config)


@KERNELS.lists("moe_align", "grouped_gemm", "grouped_gemm_fp8", "moe_combine", "moe_experts")
def _jobs(group) -> list[tuple]:
    """The fused-MoE kernels (align, the two grouped GEMM variants, the combine's two) a group uses."""
    kind, n = group.kind, group.root
    if kind == "moe_experts":
        ids, gate = n.srcs[1], n.srcs[3]
        experts, block, act = gate.shape[0], EXPERT_BLOCK, n.dtype.name
    else:
        align_node = n if kind == "moe_align" else n.srcs[1]
        ids, experts, block = align_node.srcs[0], align_node.attrs["experts"], align_node.attrs["block"]
        act = n.srcs[0].dtype.name if kind.startswith("grouped_gemm") else n.dtype.name
    fp8 = kind == "grouped_gemm_fp8"
    jobs = signature(TRITON_TYPES[act] if act in TRITON_TYPES else "fp32", experts, ids.shape[1], block, fp8=fp8,
                     act_quant=fp8 and n.attrs["act_quant"])
    swiglu = bool(n.attrs.get("swiglu"))  # gate+up with SiLU, or down with routing weights

    def used(job) -> bool:
        name = job[0].name
        if kind == "moe_experts":
            return True
        if kind == "moe_align":
            return name.startswith("moe_align")
        if kind == "moe_combine":
            return name in ("moe_inverse", "moe_combine")
        return name == "moe_tiles" or (name == "grouped_gemm" and job[2]["SWIGLU"] == swiglu)
    return [job for job in jobs if used(job)]
