"""Kernel group: MLA attention over the paged latent cache, split-KV (flash-decoding).

Absorbed MLA reads one latent row per cached token, [c_kv ; k_pe] (DK = 576 wide for
V3), shared by every query head; the value is the row's first DV (512) columns. So one
tile of cache rows is loaded once and used twice: as K for q·kᵀ and, its first DV
columns, as V for p·v (FlashMLA's trick).

A schedule (mla_schedule, FlashMLA's tile-scheduler metadata) first cuts the batch's
work into items of about equal cost: every batch row costs its 64-position blocks plus a
fixed overhead, the rows laid end to end are cut into `parts` pieces, and each piece of
a row between two cuts is one item. So an uneven varlen batch balances: a long row is
shared by several programs, none holds more than one cut's worth, and the GPU's block
scheduler evens out the short ones. It runs on the device from the lengths (no host
sync, CUDA-graph safe); one per decode step serves every layer.

Split: grid (items, query-row blocks). A block of BLOCK_M query rows packs (token, head)
pairs, so 16 heads x 2 MTP tokens fill one tensor-core tile. A program walks its item's
cache positions page by page through the block table (any page size: each position's
page is looked up) with an online softmax. A row that is one item goes straight to the
output; a share goes with its log-sum-exp to a buffer, and the combine merges only the
rows that were shared, over their actual shares.

Causal: query token t of a row with `total` visible tokens (new ones included) sees
positions 0 .. total - T + t.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dsc.codegen.triton.build import (TRITON_TYPES, KernelSpec, choosing_for, launch_options, load_kernel, next_pow2,
                                      on_hopper, with_helpers)
from dsc.codegen.triton.kernels import KERNELS
from dsc.errors import InputError
from dsc.runtime.device import REFERENCE_CARDS, device_limits
from dsc.runtime.search_space import Space

SOURCE = '''
import triton
import triton.language as tl


@triton.jit
def mla_schedule(lens_ptr, len_offset, B, items_ptr, splits_ptr, P, ITEMS,
                 UNIT: tl.constexpr, OVERHEAD: tl.constexpr, BLOCK_B: tl.constexpr):
    """One program: the work items of decode_schedule, items[i] = (row, first block, end
    block) for each share of each row in row order, (-1, 0, 0) past the last up to ITEMS;
    splits = the prefix sum of each row's share count [B + 1]."""
    b = tl.arange(0, BLOCK_B)
    ok = b < B
    total = tl.load(lens_ptr + b, mask=ok, other=0) + len_offset
    blocks = tl.maximum((total + UNIT - 1) // UNIT, 1)  # an empty row still writes its output
    cost = tl.where(ok, blocks + OVERHEAD, 0)
    end = tl.cumsum(cost, 0)  # in units: a row's overhead, then its blocks, rows end to end
    start = end - blocks  # the unit of a row's first block
    payload = (tl.sum(cost, 0) + P - 1) // P
    first_cut = start // payload
    count = tl.where(ok, (end - 1) // payload - first_cut + 1, 0)
    ends = tl.cumsum(count, 0)
    tl.store(splits_ptr + 1 + b, ends, mask=ok)
    tl.store(splits_ptr + b, tl.zeros([BLOCK_B], tl.int32), mask=b == 0)
    base = ends - count
    col = tl.arange(0, 4)[None, :]  # an item's three fields, one masked store per row
    for s in range(0, tl.max(count, 0)):
        lo = tl.maximum(start, (first_cut + s) * payload) - start
        hi = tl.minimum(end, (first_cut + s + 1) * payload) - start
        fields = tl.where(col == 0, b[:, None], tl.where(col == 1, lo[:, None], hi[:, None]))
        tl.store(items_ptr + (base + s)[:, None] * 3 + col, fields, mask=(ok & (s < count))[:, None] & (col < 3))
    for i0 in range(tl.sum(count, 0), ITEMS, BLOCK_B):  # the spare items: row -1
        i = i0 + b
        tl.store(items_ptr + i[:, None] * 3 + col, tl.where(col == 0, -1, 0) + i[:, None] * 0,
                 mask=(i < ITEMS)[:, None] & (col < 3))


@triton.jit
def paged_mla_split(q_ptr, stride_qb, stride_qt, stride_qh, cache_ptr, table_ptr, stride_tb, lens_ptr, len_offset,
                    items_ptr, splits_ptr, out_ptr, lse_ptr, mid_o_ptr, mid_lse_ptr, T, H, scale_log2,
                    DK: tl.constexpr, DV: tl.constexpr, PAGE: tl.constexpr, UNIT: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_DR: tl.constexpr,
                    CAUSAL: tl.constexpr, DOT_F32: tl.constexpr, FP8_KV: tl.constexpr = False,
                    GROUP: tl.constexpr = 128, ROW_BYTES: tl.constexpr = 0):
    item = tl.program_id(0)  # one share of one batch row (mla_schedule)
    b = tl.load(items_ptr + item * 3)
    if b < 0:  # past the schedule's last item
        return
    m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)  # query rows: (token, head) pairs
    row_ok = m < T * H
    t = m // H
    h = m % H
    total = tl.load(lens_ptr + b) + len_offset
    if CAUSAL:
        seen = total - T + t  # the last position each query row sees
    else:
        seen = total - 1 + t * 0
    start = tl.load(items_ptr + item * 3 + 1) * UNIT
    stop = tl.minimum(tl.load(items_ptr + item * 3 + 2) * UNIT, total)
    shares = tl.load(splits_ptr + b + 1) - tl.load(splits_ptr + b)  # 1: this item is all of row b

    dv = tl.arange(0, BLOCK_DV)
    dr = tl.arange(0, BLOCK_DR)
    q_row = q_ptr + b.to(tl.int64) * stride_qb + t * stride_qt + h * stride_qh
    q_nope = tl.load(q_row[:, None] + dv[None, :], mask=row_ok[:, None] & (dv[None, :] < DV), other=0.0)
    q_pe = tl.load(q_row[:, None] + DV + dr[None, :], mask=row_ok[:, None] & (dr[None, :] < DK - DV), other=0.0)
    if DOT_F32:
        q_nope = q_nope.to(tl.float32)
        q_pe = q_pe.to(tl.float32)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    for n0 in range(start, stop, BLOCK_N):
        pos = n0 + tl.arange(0, BLOCK_N)
        pos_ok = pos < stop
        page = tl.load(table_ptr + b.to(tl.int64) * stride_tb + pos // PAGE, mask=pos_ok, other=0)
        kv_ok = pos_ok[:, None] & (dv[None, :] < DV)
        pe_ok = pos_ok[:, None] & (dr[None, :] < DK - DV)
        if FP8_KV:  # kv_pack_fp8 rows: DV e4m3 bytes, DV / GROUP float32 scales, the rope part in bf16
            row = cache_ptr + (page.to(tl.int64) * PAGE + pos % PAGE) * ROW_BYTES
            kq = decode_e4m3(tl.load(row[:, None] + dv[None, :], mask=kv_ok, other=0))
            # one scale per GROUP columns, [BLOCK_N, DV / GROUP], broadcast through a reshape (a
            # [BLOCK_N, DV] float32 scale tile spilled 536 B per thread on sm_90)
            g = tl.arange(0, BLOCK_DV // GROUP)
            ks = tl.load((row + DV).to(tl.pointer_type(tl.float32))[:, None] + g[None, :],
                         mask=pos_ok[:, None] & (g[None, :] < DV // GROUP), other=0.0)
            kv = tl.reshape(tl.reshape(kq, [BLOCK_N, BLOCK_DV // GROUP, GROUP]) * ks[:, :, None],
                            [BLOCK_N, BLOCK_DV])
            kv = to_out(kv, q_ptr.dtype.element_ty)
            k_pe = tl.load((row + DV + 4 * (DV // GROUP)).to(tl.pointer_type(tl.bfloat16))[:, None] + dr[None, :],
                           mask=pe_ok, other=0.0).to(q_ptr.dtype.element_ty)
        else:
            row = cache_ptr + (page.to(tl.int64) * PAGE + pos % PAGE) * DK
            kv = tl.load(row[:, None] + dv[None, :], mask=kv_ok, other=0.0)
            k_pe = tl.load(row[:, None] + DV + dr[None, :], mask=pe_ok, other=0.0)
        if DOT_F32:
            kv = kv.to(tl.float32)
            k_pe = k_pe.to(tl.float32)
        s = tl.dot(q_nope, tl.trans(kv)) + tl.dot(q_pe, tl.trans(k_pe))
        s = tl.where(pos[None, :] <= seen[:, None], s * scale_log2, float("-inf"))
        p, m_i, l_i, acc = softmax_step(s, m_i, l_i, acc)
        acc += tl.dot(p.to(kv.dtype), kv)  # V is the first DV columns of the K tile

    out, lse = softmax_finish(m_i, l_i, acc)
    # a row that is one item goes straight to the output (lse as [B, H, T], FlashMLA's
    # layout; +inf where a query saw nothing, its convention: out is 0), a share to the
    # combine's buffer: masked stores, not a branch (one more live copy of the tile)
    whole = row_ok & (shares + m * 0 == 1)
    shared = row_ok & (shares + m * 0 > 1)
    cols = dv[None, :] < DV
    tl.store(out_ptr + ((b.to(tl.int64) * T * H + m) * DV)[:, None] + dv[None, :],
             to_out(out, out_ptr.dtype.element_ty), mask=whole[:, None] & cols)
    tl.store(lse_ptr + (b.to(tl.int64) * H + h) * T + t, tl.where(l_i > 0, lse, float("inf")), mask=whole)
    mid = item.to(tl.int64) * T * H + m  # shares of a row are consecutive items
    tl.store(mid_o_ptr + (mid * DV)[:, None] + dv[None, :], out, mask=shared[:, None] & cols)
    tl.store(mid_lse_ptr + mid, lse, mask=shared)


@triton.jit
def paged_mla_combine(mid_o_ptr, mid_lse_ptr, splits_ptr, out_ptr, lse_ptr, T, H,
                      DV: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_DV: tl.constexpr):
    """Program (b, r): BLOCK_R query rows of batch row b, merged over the row's shares by
    their LSE; a row the schedule kept whole was written by its split program already."""
    b = tl.program_id(0)
    r = tl.program_id(1) * BLOCK_R + tl.arange(0, BLOCK_R)
    ok = r < T * H
    dv = tl.arange(0, BLOCK_DV)
    base = tl.load(splits_ptr + b)
    shares = tl.load(splits_ptr + b + 1) - base
    if shares > 1:
        g = tl.full([BLOCK_R], float("-inf"), tl.float32)
        for s in range(0, shares):
            g = tl.maximum(g, tl.load(mid_lse_ptr + (base + s).to(tl.int64) * T * H + r, mask=ok,
                                      other=float("-inf")))
        g_safe = tl.where(g == float("-inf"), 0.0, g)
        acc = tl.zeros([BLOCK_R, BLOCK_DV], tl.float32)
        total = tl.zeros([BLOCK_R], tl.float32)
        for s in range(0, shares):
            mid = (base + s).to(tl.int64) * T * H + r
            w = tl.exp(tl.load(mid_lse_ptr + mid, mask=ok, other=float("-inf")) - g_safe)
            acc += w[:, None] * tl.load(mid_o_ptr + (mid * DV)[:, None] + dv[None, :],
                                        mask=ok[:, None] & (dv[None, :] < DV), other=0.0)
            total += w
        seen = total > 0
        out = acc / tl.where(seen, total, 1.0)[:, None]
        tl.store(out_ptr + ((b.to(tl.int64) * T * H + r) * DV)[:, None] + dv[None, :],
                 to_out(out, out_ptr.dtype.element_ty), mask=ok[:, None] & (dv[None, :] < DV))
        # a row that saw no position: lse = +inf, FlashMLA's convention (out is 0)
        tl.store(lse_ptr + (b.to(tl.int64) * H + r % H) * T + r // H,
                 tl.where(seen, g_safe + tl.log(tl.where(seen, total, 1.0)), float("inf")), mask=ok)
'''

SCHEDULE = KernelSpec("mla_schedule", with_helpers(SOURCE), "(1,)")
SPLIT = KernelSpec("paged_mla_split", with_helpers(SOURCE), "(B + parts - 1, cdiv(T * H, BLOCK_M))",
                   dot_rows="BLOCK_M")
COMBINE = KernelSpec("paged_mla_combine", with_helpers(SOURCE), "(B, cdiv(T * H, BLOCK_R))")
UNIT = 64  # cache positions per schedule block (FlashMLA's block_size_n); every BLOCK_N divides it
ROW_OVERHEAD = 5  # a batch row's fixed cost in blocks (its q tile in, its output out): FlashMLA's
COMBINE_ROWS = 8  # query rows per combine program: [8, 512] float32, 32 registers a thread


def default_block_m(rows: int, device) -> int:
    """Query rows per program. tl.dot needs 16. On Hopper, 64 wherever a row block fills
    them (eight warps: two warpgroups, each a 64-row wgmma over half of the 512 value
    columns, FlashMLA's layout); elsewhere at most 32 (past 32 rows of four warps the
    [BLOCK_M, 512] float32 accumulator spills)."""
    if on_hopper(device) and rows >= 64:
        return 64
    return max(16, min(32, next_pow2(rows)))


def default_parts(row_blocks: int, device) -> int:
    """Pieces the schedule cuts the batch's work into, per query-row block: one wave over
    the GPU's SMs (FlashMLA's num_sm_parts); one on the CPU interpreter, where every
    program costs milliseconds (each row is then one item)."""
    if device.type != "cuda":
        return 1
    return max(1, device_limits(device).sms // max(1, row_blocks))


def default_config(shape, device) -> dict:
    cuda = device.type == "cuda"
    bm = default_block_m(shape["rows"], device)
    if cuda and bm == 32 and shape["fp8"]:
        # FP8 rows dequantized beside a 32-row accumulator spilled on sm_80 (752 B per thread
        # with four warps; eight got 128 registers and spilled more): 16 rows there
        bm = 16
    # under a 64-row tile, 64 cache positions a step (FlashMLA's page-sized step: the q tile
    # both warpgroups re-read each step is amortized over twice the positions of 32; 216 KiB
    # of shared memory, 255 registers, no spills on sm_90), 32 for FP8 rows dequantized in
    # registers (254 registers); 16 otherwise
    bn = (32 if shape["fp8"] else 64) if cuda and bm == 64 else 16
    return {"BLOCK_M": bm, "BLOCK_N": bn, "parts": default_parts(-(-shape["rows"] // bm), device),
            "num_warps": 8 if bm == 64 else 4, "num_stages": 2 if cuda else 1}


def fits(config: dict, shape, limits) -> bool:
    """Pipelined K tiles (at least two) and the q tile in shared memory; the [BLOCK_M, DV] float32
    accumulator within three quarters of a thread's registers; no row tile past the rows;
    no more partitions than schedule blocks."""
    bm, bn, dk = config["BLOCK_M"], config["BLOCK_N"], shape["dk"]
    item = 1 if shape["fp8"] else shape["itemsize"]
    # Triton keeps two K tiles even unpipelined (measured by compiling for sm_90: 68 KiB
    # at one stage, V3 widths, bf16)
    smem = max(2, config["num_stages"]) * bn * dk * item + bm * dk * shape["itemsize"]
    acc = bm * next_pow2(shape["dv"]) // (32 * config["num_warps"])
    blocks = shape["batch"] * -(-shape["context"] // UNIT)
    return (smem <= limits.smem_per_block and acc <= 3 * limits.regs_per_thread // 4
            and bm <= max(16, next_pow2(shape["rows"])) and config["parts"] <= max(1, blocks))


TUNING = Space("triton.paged_attention", {"BLOCK_M": (16, 32, 64), "BLOCK_N": (16, 32, 64),
                                          "parts": (1, 2, 4, 8, 16, 32, 66, 132, 264), "num_warps": (4, 8),
                                          "num_stages": (1, 2, 3)},
               bucketed=("batch", "context"), default=default_config, fits=fits)


@dataclass(frozen=True)
class DecodeSchedule:
    """A decode step's cache work cut into items of about equal cost (FlashMLA's
    tile-scheduler metadata), for any number of layers over the same lengths. Each batch
    row costs its 64-position blocks plus ROW_OVERHEAD; the rows laid end to end are cut
    every ceil(total / parts) units, and each piece of a row between cuts is one item, one
    program: a long row is shared by several, a short one is one item, and no program
    holds more than one cut's worth, so the GPU's block scheduler balances the rest.
    items [batch + parts - 1, 3] int32: (row, first block, end block), row -1 past the
    last item; splits [batch + 1] int32: the prefix sum of each row's share count (1: the
    row is written whole, no combine)."""

    items: torch.Tensor
    splits: torch.Tensor

    @property
    def count(self) -> int:
        return self.items.shape[0]


def decode_schedule(lengths: torch.Tensor, parts: int, len_offset: int = 0) -> DecodeSchedule:
    """The schedule of rows holding lengths + len_offset positions cut into `parts`,
    computed on the lengths' device by one launch (no host sync: CUDA-graph safe)."""
    if parts < 1:
        raise InputError(f"a decode schedule needs at least one part, got {parts}")
    batch = lengths.shape[0]
    out = DecodeSchedule(torch.empty(max(1, batch + parts - 1), 3, dtype=torch.int32, device=lengths.device),
                         torch.empty(batch + 1, dtype=torch.int32, device=lengths.device))
    if batch:
        load_kernel(SCHEDULE, lengths.device)[(1,)](
            lengths.contiguous(), len_offset, batch, out.items, out.splits, parts, out.count, UNIT=UNIT,
            OVERHEAD=ROW_OVERHEAD, BLOCK_B=next_pow2(batch))
    else:
        out.splits.zero_()
        out.items.fill_(-1)
    return out


def schedule_reference(totals: list[int], parts: int) -> tuple[list[tuple], list[int]]:
    """decode_schedule on the host, in plain Python, from each row's positions: (its items
    as (row, first block, end block), each row's share count). The tests' oracle and the
    traffic model's view of a schedule."""
    blocks = [max(1, -(-n // UNIT)) for n in totals]
    ends, at = [], 0
    for n in blocks:
        at += n + ROW_OVERHEAD
        ends.append(at)
    payload = -(-at // parts) if totals else 1
    items, counts = [], []
    for row, (n, end) in enumerate(zip(blocks, ends)):
        start = end - n
        cuts = range(start // payload, (end - 1) // payload + 1)
        counts.append(len(cuts))
        items += [(row, max(start, c * payload) - start, min(end, (c + 1) * payload) - start) for c in cuts]
    return items, counts


@KERNELS.provides("paged_attention")
def paged_mla_attention(q: torch.Tensor, cache: torch.Tensor, block_table: torch.Tensor, lengths: torch.Tensor,
                        scale: float, v_dim: int, *, len_offset: int = 0, causal: bool = True,
                        num_splits: int | None = None, schedule: DecodeSchedule | None = None,
                        fp8_group: int | None = None, out: torch.Tensor | None = None,
                        config: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """q [B, T, H, DK]; cache [pages, page_size, DK]; block_table [B, P] int32; lengths [B]
    int32 (plus len_offset: the tokens each row holds, new ones included). Returns
    (out [B, T, H, v_dim] in q's dtype, lse [B, H, T] float32, natural log). The work is
    balanced over num_splits programs per query-row block (default: the tuned count, one
    wave of the SMs), or by a decode_schedule built once for a step's layers. With
    fp8_group the cache is uint8 rows in kv_pack_fp8's layout (v_dim = its rank),
    dequantized as they are loaded. config: a TUNING config instead of the tuned or
    default one (tests draw tiles with it)."""
    fp8 = {} if fp8_group is None else {"FP8_KV": True, "GROUP": fp8_group, "ROW_BYTES": cache.shape[2]}
    batch, tokens, heads, dk = q.shape
    page = cache.shape[1]
    rows = tokens * heads
    capacity = block_table.shape[1] * page
    shape = {"batch": batch, "rows": rows, "context": capacity, "page": page, "dk": dk, "dv": v_dim,
             "fp8": fp8_group is not None, "itemsize": q.element_size()}
    device = choosing_for(q)
    cfg = config or TUNING.choose(shape, q.dtype, device)
    bm, bn = cfg["BLOCK_M"], cfg["BLOCK_N"]
    if schedule is None:
        schedule = decode_schedule(lengths, num_splits or cfg["parts"], len_offset)
    items = schedule.count
    q = q if q.stride(-1) == 1 else q.contiguous()
    cache = cache.contiguous()
    table = block_table.contiguous()
    # one share a row of the combine's buffer per item (a row held whole writes none)
    shared = items if items > batch else 0
    mid_o = torch.empty(shared * rows * v_dim, dtype=torch.float32, device=q.device)
    mid_lse = torch.empty(shared * rows, dtype=torch.float32, device=q.device)
    given = out
    if out is None or not out.is_contiguous():  # the kernels write [B, T, H, v_dim] rows densely
        out = torch.empty(batch, tokens, heads, v_dim, dtype=q.dtype, device=q.device)
    lse = torch.empty(batch, heads, tokens, dtype=torch.float32, device=q.device)
    if not batch or not rows:
        return (out if given is None else given), lse
    interpret = device.type != "cuda"
    load_kernel(SPLIT, q.device)[(items, -(-rows // bm))](
        q, q.stride(0), q.stride(1), q.stride(2), cache, table, table.stride(0), lengths, len_offset,
        schedule.items, schedule.splits, out, lse, mid_o, mid_lse, tokens, heads, scale * math.log2(math.e),
        DK=dk, DV=v_dim, PAGE=page, UNIT=UNIT, BLOCK_M=bm, BLOCK_N=bn, BLOCK_DV=max(16, next_pow2(v_dim)),
        BLOCK_DR=max(16, next_pow2(dk - v_dim)), CAUSAL=causal, DOT_F32=interpret or q.dtype == torch.float32, **fp8,
        **launch_options(cfg, device))
    if shared:
        load_kernel(COMBINE, q.device)[(batch, -(-rows // COMBINE_ROWS))](
            mid_o, mid_lse, schedule.splits, out, lse, tokens, heads, DV=v_dim, BLOCK_R=COMBINE_ROWS,
            BLOCK_DV=next_pow2(v_dim))
    if given is not None and given is not out:
        given.copy_(out)
        out = given
    return out, lse


def signature(dtype: str, heads: int = 128, tokens: int = 1, page: int = 64, fp8_group: int | None = None,
              row_bytes: int = 656, block_n: int = 16) -> list[tuple]:
    """(spec, signature, constexprs) of the three kernels at DeepSeek-V3's widths, for
    compile checks; with fp8_group, over the FP8 cache (rows of row_bytes)."""
    bm = default_block_m(tokens * heads, REFERENCE_CARDS["sm90"])
    sched_sig = {"lens_ptr": "*i32", "len_offset": "i32", "B": "i32", "items_ptr": "*i32", "splits_ptr": "*i32",
                 "P": "i32", "ITEMS": "i32"}
    sched_const = {"UNIT": UNIT, "OVERHEAD": ROW_OVERHEAD, "BLOCK_B": 128}
    split_sig = {"q_ptr": f"*{dtype}", "stride_qb": "i32", "stride_qt": "i32", "stride_qh": "i32",
                 "cache_ptr": "*u8" if fp8_group else f"*{dtype}", "table_ptr": "*i32", "stride_tb": "i32",
                 "lens_ptr": "*i32", "len_offset": "i32", "items_ptr": "*i32", "splits_ptr": "*i32",
                 "out_ptr": f"*{dtype}", "lse_ptr": "*fp32", "mid_o_ptr": "*fp32", "mid_lse_ptr": "*fp32",
                 "T": "i32", "H": "i32", "scale_log2": "fp32"}
    split_const = {"DK": 576, "DV": 512, "PAGE": page, "UNIT": UNIT, "BLOCK_M": bm, "BLOCK_N": block_n,
                   "BLOCK_DV": 512, "BLOCK_DR": 64, "CAUSAL": True, "DOT_F32": dtype == "fp32",
                   "FP8_KV": fp8_group is not None, "GROUP": fp8_group or 128,
                   "ROW_BYTES": row_bytes if fp8_group else 0}
    comb_sig = {"mid_o_ptr": "*fp32", "mid_lse_ptr": "*fp32", "splits_ptr": "*i32", "out_ptr": f"*{dtype}",
                "lse_ptr": "*fp32", "T": "i32", "H": "i32"}
    comb_const = {"DV": 512, "BLOCK_R": COMBINE_ROWS, "BLOCK_DV": 512}
    return [(spec, {**sig, **{k: "constexpr" for k in const}}, const)
            for spec, sig, const in ((SCHEDULE, sched_sig, sched_const), (SPLIT, split_sig, split_const),
                                     (COMBINE, comb_sig, comb_const))]


@KERNELS.lists("paged_attention")
def _jobs(group) -> list[tuple]:
    q, cache = group.inputs[:2]
    heads = q.shape[2] if isinstance(q.shape[2], int) else 128
    unpack = next((m for m in group.nodes if m.op == "kv_unpack_fp8"), None)
    return signature(TRITON_TYPES[group.root.dtype.name], heads=heads, page=cache.shape[1],
                     fp8_group=unpack.attrs["group"] if unpack else None, row_bytes=cache.shape[2])
