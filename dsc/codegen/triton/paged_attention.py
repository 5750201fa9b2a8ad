"""Kernel group: MLA attention over the paged latent cache, split-KV (flash-decoding).

Absorbed MLA reads one latent row per cached token, [c_kv ; k_pe] (DK = 576 wide for
V3), shared by every query head; the value is the row's first DV (512) columns. So one
tile of cache rows is loaded once and used twice: as K for q·kᵀ and, its first DV
columns, as V for p·v (FlashMLA's trick).

Stage 1: grid (batch, query-row blocks, splits). A block of BLOCK_M query rows packs
(token, head) pairs, so 16 heads x 2 MTP tokens fill one tensor-core tile. Each split
walks its share of the row's cache positions page by page through the block table (any
page size: each position's page is looked up) with an online softmax, and writes a
partial output and its log-sum-exp. The split length comes from the block table's
capacity, not from the lengths, so the launch needs no host sync (CUDA-graph safe);
splits past a row's length exit early. Stage 2 merges the splits by their LSE.

Causal: query token t of a row with `total` visible tokens (new ones included) sees
positions 0 .. total - T + t.
"""

from __future__ import annotations

import math

import torch

from dsc.codegen.triton.build import (TRITON_TYPES, KernelSpec, choosing_for, launch_options, load_kernel, next_pow2,
                                      on_hopper, with_helpers)
from dsc.codegen.triton.kernels import KERNELS
from dsc.runtime.device import REFERENCE_CARDS, device_limits
from dsc.runtime.search_space import Space

SOURCE = '''
import triton
import triton.language as tl


@triton.jit
def paged_mla_split(q_ptr, stride_qb, stride_qt, stride_qh, cache_ptr, table_ptr, stride_tb, lens_ptr, len_offset,
                    mid_o_ptr, mid_lse_ptr, T, H, split_len, scale_log2,
                    DK: tl.constexpr, DV: tl.constexpr, PAGE: tl.constexpr, SPLITS: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_DR: tl.constexpr,
                    CAUSAL: tl.constexpr, DOT_F32: tl.constexpr, FP8_KV: tl.constexpr = False,
                    GROUP: tl.constexpr = 128, ROW_BYTES: tl.constexpr = 0):
    b = tl.program_id(0)
    split = tl.program_id(2)
    m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)  # query rows: (token, head) pairs
    row_ok = m < T * H
    t = m // H
    h = m % H
    total = tl.load(lens_ptr + b) + len_offset
    if CAUSAL:
        last = total - T + t  # the last position each query row sees
    else:
        last = total - 1 + t * 0
    start = split * split_len
    stop = tl.minimum(start + split_len, total)

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
            kv = tl.reshape(tl.reshape(kq, [BLOCK_N, BLOCK_DV // GROUP, GROUP]) * ks[:, :, None], [BLOCK_N, BLOCK_DV])
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
        s = tl.where(pos[None, :] <= last[:, None], s * scale_log2, float("-inf"))
        p, m_i, l_i, acc = softmax_step(s, m_i, l_i, acc)
        acc += tl.dot(p.to(kv.dtype), kv)  # V is the first DV columns of the K tile

    out, lse = softmax_finish(m_i, l_i, acc)
    mid = (b.to(tl.int64) * T * H + m) * SPLITS + split
    tl.store(mid_o_ptr + mid[:, None] * DV + dv[None, :], out, mask=row_ok[:, None] & (dv[None, :] < DV))
    tl.store(mid_lse_ptr + mid, lse, mask=row_ok)


@triton.jit
def paged_mla_combine(mid_o_ptr, mid_lse_ptr, out_ptr, lse_ptr, T, H,
                      DV: tl.constexpr, SPLITS: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_DV: tl.constexpr):
    row = tl.program_id(0)  # (b, t, h) row-major
    s = tl.arange(0, BLOCK_S)
    dv = tl.arange(0, BLOCK_DV)
    lse = tl.load(mid_lse_ptr + row.to(tl.int64) * SPLITS + s, mask=s < SPLITS, other=float("-inf"))
    g = tl.max(lse, axis=0)
    g_safe = tl.where(g == float("-inf"), 0.0, g)
    w = tl.exp(lse - g_safe)
    total = tl.sum(w, axis=0)
    o = tl.load(mid_o_ptr + (row.to(tl.int64) * SPLITS + s[:, None]) * DV + dv[None, :],
                mask=(s[:, None] < SPLITS) & (dv[None, :] < DV), other=0.0)
    out = tl.sum(o * w[:, None], axis=0) / tl.where(total > 0, total, 1.0)
    tl.store(out_ptr + row.to(tl.int64) * DV + dv, to_out(out, out_ptr.dtype.element_ty), mask=dv < DV)
    # lse goes out as [B, H, T] (FlashMLA's layout)
    b = row // (T * H)
    t = (row // H) % T
    h = row % H
    # a row that saw no position: lse = +inf, FlashMLA's convention (out is 0)
    tl.store(lse_ptr + (b * H + h) * T + t, tl.where(total > 0, g_safe + tl.log(tl.where(total > 0, total, 1.0)),
                                                         float("inf")))
'''

SPLIT = KernelSpec("paged_mla_split", with_helpers(SOURCE), "(B, cdiv(T * H, BLOCK_M), SPLITS)",
                   dot_rows="BLOCK_M")
COMBINE = KernelSpec("paged_mla_combine", with_helpers(SOURCE), "(B * T * H,)")


def default_block_m(rows: int, device) -> int:
    """Query rows per program. tl.dot needs 16. On Hopper, 64 wherever a row block fills
    them (eight warps: two warpgroups, each a 64-row wgmma over half of the 512 value
    columns, FlashMLA's layout); elsewhere at most 32 (past 32 rows of four warps the
    [BLOCK_M, 512] float32 accumulator spills)."""
    if on_hopper(device) and rows >= 64:
        return 64
    return max(16, min(32, next_pow2(rows)))


def default_splits(batch: int, row_blocks: int, capacity: int, block_n: int, device) -> int:
    """Enough programs for two waves of the GPU's SMs; one split on the CPU interpreter,
    where every program costs milliseconds."""
    if device.type != "cuda":
        return 1
    want = -(-2 * device_limits(device).sms // max(1, batch * row_blocks))
    return max(1, min(want, -(-capacity // (4 * block_n)), 64))


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
    splits = default_splits(shape["batch"], -(-shape["rows"] // bm), shape["context"], bn, device)
    return {"BLOCK_M": bm, "BLOCK_N": bn, "splits": splits, "num_warps": 8 if bm == 64 else 4,
            "num_stages": 2 if cuda else 1}


def fits(config: dict, shape, limits) -> bool:
    """Pipelined K tiles (at least two) and the q tile in shared memory; the [BLOCK_M, DV] float32
    accumulator within three quarters of a thread's registers; no row tile past the rows;
    splits of at least four inner steps each."""
    bm, bn, dk = config["BLOCK_M"], config["BLOCK_N"], shape["dk"]
    item = 1 if shape["fp8"] else shape["itemsize"]
    # Triton keeps two K tiles even unpipelined (measured by compiling for sm_90: 68 KiB
    # at one stage, V3 widths, bf16)
    smem = max(2, config["num_stages"]) * bn * dk * item + bm * dk * shape["itemsize"]
    acc = bm * next_pow2(shape["dv"]) // (32 * config["num_warps"])
    return (smem <= limits.smem_per_block and acc <= 3 * limits.regs_per_thread // 4
            and bm <= max(16, next_pow2(shape["rows"])) and config["splits"] * 4 * bn <= max(4 * bn, shape["context"]))


TUNING = Space("triton.paged_attention", {"BLOCK_M": (16, 32, 64), "BLOCK_N": (16, 32, 64),
                                          "splits": (1, 2, 4, 8, 16, 32, 64), "num_warps": (4, 8),
                                          "num_stages": (1, 2, 3)},
               bucketed=("batch", "context"), default=default_config, fits=fits)


@KERNELS.provides("paged_attention")
def paged_mla_attention(q: torch.Tensor, cache: torch.Tensor, block_table: torch.Tensor, lengths: torch.Tensor,
                        scale: float, v_dim: int, *, len_offset: int = 0, causal: bool = True,
                        num_splits: int | None = None, fp8_group: int | None = None,
                        out: torch.Tensor | None = None,
                        config: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """q [B, T, H, DK]; cache [pages, page_size, DK]; block_table [B, P] int32; lengths [B]
    int32 (plus len_offset: the tokens each row holds, new ones included). Returns
    (out [B, T, H, v_dim] in q's dtype, lse [B, H, T] float32, natural log). With
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
    row_blocks = -(-rows // bm)
    splits = num_splits or cfg["splits"]
    launch = launch_options(cfg, device)
    per_split = -(-capacity // splits)
    split_len = -(-per_split // bn) * bn  # whole inner steps
    q = q if q.stride(-1) == 1 else q.contiguous()
    cache = cache.contiguous()
    table = block_table.contiguous()
    mid_o = torch.empty(batch * rows * splits * v_dim, dtype=torch.float32, device=q.device)
    mid_lse = torch.empty(batch * rows * splits, dtype=torch.float32, device=q.device)
    if out is None:
        out = torch.empty(batch, tokens, heads, v_dim, dtype=q.dtype, device=q.device)
    lse = torch.empty(batch, heads, tokens, dtype=torch.float32, device=q.device)
    interpret = device.type != "cuda"
    split = load_kernel(SPLIT, q.device)
    split[(batch, row_blocks, splits)](
        q, q.stride(0), q.stride(1), q.stride(2), cache, table, table.stride(0), lengths, len_offset,
        mid_o, mid_lse, tokens, heads, split_len, scale * math.log2(math.e),
        DK=dk, DV=v_dim, PAGE=page, SPLITS=splits, BLOCK_M=bm, BLOCK_N=bn, BLOCK_DV=max(16, next_pow2(v_dim)),
        BLOCK_DR=max(16, next_pow2(dk - v_dim)), CAUSAL=causal, DOT_F32=interpret or q.dtype == torch.float32, **fp8,
        **launch)
    combine = load_kernel(COMBINE, q.device)
    combine[(batch * rows,)](mid_o, mid_lse, out, lse, tokens, heads, DV=v_dim, SPLITS=splits,
                             BLOCK_S=next_pow2(splits), BLOCK_DV=next_pow2(v_dim))
    return out, lse


def signature(dtype: str, heads: int = 128, tokens: int = 1, page: int = 64, splits: int = 8,
              fp8_group: int | None = None, row_bytes: int = 656) -> list[tuple]:
    """(spec, signature, constexprs) of both kernels at DeepSeek-V3's widths, for compile
    checks; with fp8_group, over the FP8 cache (rows of row_bytes)."""
    bm = default_block_m(tokens * heads, REFERENCE_CARDS["sm90"])
    split_sig = {"q_ptr": f"*{dtype}", "stride_qb": "i32", "stride_qt": "i32", "stride_qh": "i32",
                 "cache_ptr": "*u8" if fp8_group else f"*{dtype}", "table_ptr": "*i32", "stride_tb": "i32",
                 "lens_ptr": "*i32",
                 "len_offset": "i32", "mid_o_ptr": "*fp32", "mid_lse_ptr": "*fp32", "T": "i32", "H": "i32",
                 "split_len": "i32", "scale_log2": "fp32"}
    split_const = {"DK": 576, "DV": 512, "PAGE": page, "SPLITS": splits, "BLOCK_M": bm, "BLOCK_N": 16,
                   "BLOCK_DV": 512, "BLOCK_DR": 64, "CAUSAL": True, "DOT_F32": dtype == "fp32",
                   "FP8_KV": fp8_group is not None, "GROUP": fp8_group or 128,
                   "ROW_BYTES": row_bytes if fp8_group else 0}
    comb_sig = {"mid_o_ptr": "*fp32", "mid_lse_ptr": "*fp32", "out_ptr": f"*{dtype}", "lse_ptr": "*fp32",
                "T": "i32", "H": "i32"}
    comb_const = {"DV": 512, "SPLITS": splits, "BLOCK_S": next_pow2(splits), "BLOCK_DV": 512}
    return [(SPLIT, {**split_sig, **{k: "constexpr" for k in split_const}}, split_const),
            (COMBINE, {**comb_sig, **{k: "constexpr" for k in comb_const}}, comb_const)]


@KERNELS.lists("paged_attention")
def _jobs(group) -> list[tuple]:
    q, cache = group.inputs[:2]
    heads = q.shape[2] if isinstance(q.shape[2], int) else 128
    unpack = next((m for m in group.nodes if m.op == "kv_unpack_fp8"), None)
    return signature(TRITON_TYPES[group.root.dtype.name], heads=heads, page=cache.shape[1],
                     fp8_group=unpack.attrs["group"] if unpack else None, row_bytes=cache.shape[2])
