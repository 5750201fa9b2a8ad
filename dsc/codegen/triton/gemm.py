"""Kernel group: (batched) GEMM for linear and einsum, where no fusion applies.

C[b] = A[b] @ B[b] with every operand addressed through strides, so a linear's
nn.Linear weight [N, K] is read as B = Wᵀ without a copy, and an einsum's per-head
contraction runs on permuted views. float32 accumulation; tile sizes and pipelining
are constexpr parameters (the autotuner's search space).
"""

from __future__ import annotations

import torch

from dsc.codegen import contraction
from dsc.codegen.triton.build import (TRITON_TYPES, KernelSpec, choosing_for, launch_options, load_kernel, next_pow2,
                                      with_helpers)
from dsc.codegen.triton.kernels import KERNELS
from dsc.runtime.device import device_limits
from dsc.runtime.search_space import Space

SOURCE = '''
import triton
import triton.language as tl


@triton.jit
def batched_gemm(a_ptr, sab, sam, sak, b_ptr, sbb, sbk, sbn, c_ptr, scb, scm, scn, part_ptr, M, N, K,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
                 DOT_F32: tl.constexpr, SPLIT_K: tl.constexpr = 1):
    pid = tl.program_id(0)
    batch = tl.program_id(1).to(tl.int64)
    # grouped ordering: GROUP_M row tiles share their B tiles in L2
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * tiles_n
    first_m = (pid // per_group) * GROUP_M
    group_m = tl.minimum(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % group_m
    pid_n = (pid % per_group) // group_m
    # split-K: program k of SPLIT_K takes its share of the K steps (skinny decode GEMMs
    # have too few output tiles to fill the SMs)
    pid_k = tl.program_id(2)
    per_split = tl.cdiv(tl.cdiv(K, BLOCK_K), SPLIT_K) * BLOCK_K
    k_lo = pid_k * per_split
    k_hi = tl.minimum(K, k_lo + per_split)

    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    a = a_ptr + batch * sab + rm[:, None].to(tl.int64) * sam + (rk[None, :] + k_lo) * sak
    b = b_ptr + batch * sbb + (rk[:, None] + k_lo) * sbk + rn[None, :].to(tl.int64) * sbn
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k0 in range(k_lo, k_hi, BLOCK_K):
        ka = tl.load(a, mask=(rm[:, None] < M) & (rk[None, :] + k0 < k_hi), other=0.0)
        kb = tl.load(b, mask=(rk[:, None] + k0 < k_hi) & (rn[None, :] < N), other=0.0)
        if DOT_F32:
            ka = ka.to(tl.float32)
            kb = kb.to(tl.float32)
        acc = tl.dot(ka, kb, acc)
        a += BLOCK_K * sak
        b += BLOCK_K * sbk
    ok = (rm[:, None] < M) & (rn[None, :] < N)
    if SPLIT_K == 1:
        c = c_ptr + batch * scb + rm[:, None].to(tl.int64) * scm + rn[None, :] * scn
        tl.store(c, to_out(acc, c_ptr.dtype.element_ty), mask=ok)
    else:  # float32 partials [SPLIT_K, batch, M, N], summed in order by gemm_split_reduce
        part = (pid_k * tl.num_programs(1) + batch) * M + rm[:, None].to(tl.int64)
        tl.store(part_ptr + part * N + rn[None, :], acc, mask=ok)


@triton.jit
def gemm_split_reduce(part_ptr, c_ptr, scb, scm, scn, M, N, SPLIT_K: tl.constexpr, BLOCK: tl.constexpr):
    batch = tl.program_id(1).to(tl.int64)
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = i < M * N
    size = tl.num_programs(1) * M * N
    acc = tl.zeros([BLOCK], tl.float32)
    for s in tl.static_range(SPLIT_K):  # a fixed order: deterministic, unlike atomics
        acc += tl.load(part_ptr + s * size + batch * M * N + i, mask=ok, other=0.0)
    m = i // N
    n = i % N
    tl.store(c_ptr + batch * scb + m * scm + n * scn, to_out(acc, c_ptr.dtype.element_ty), mask=ok)
'''

SPEC = KernelSpec("batched_gemm", with_helpers(SOURCE), "(cdiv(M, BLOCK_M) * cdiv(N, BLOCK_N), batch, SPLIT_K)",
                  dot_rows="BLOCK_M")
REDUCE = KernelSpec("gemm_split_reduce", with_helpers(SOURCE), "(cdiv(M * N, BLOCK), batch)")
REDUCE_BLOCK = 256  # a decode kv_a output (64 x 576) is 144 programs


def default_split_k(tiles: int, k: int, block_k: int, sms: int) -> int:
    """K splits for a GEMM whose output tiles fill under half the SMs (a decode batch's
    q_a / kv_a projections: 5-12 tiles on 132 SMs): a power of two up to one wave and 16,
    each split keeping at least four K steps."""
    if 2 * tiles >= sms:
        return 1
    split = 1
    while split < 16 and 2 * split * tiles <= sms and 2 * split * 4 * block_k <= k:
        split *= 2
    return split


def default_config(shape, device: torch.device) -> dict:
    m, n, k = shape["M"], shape["N"], shape["K"]
    if device.type != "cuda":  # the interpreter: few, large programs
        return {"BLOCK_M": max(16, min(64, next_pow2(m))), "BLOCK_N": max(16, min(128, next_pow2(n))),
                "BLOCK_K": max(16, min(64, next_pow2(k))), "GROUP_M": 8, "SPLIT_K": 1, "num_warps": 4,
                "num_stages": 1}
    bm, bn, bk = 64 if m > 32 else 16, 128, 64
    tiles = shape["batch"] * -(-m // bm) * -(-n // bn)
    return {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8,
            "SPLIT_K": default_split_k(tiles, k, bk, device_limits(device).sms), "num_warps": 4, "num_stages": 3}


def fits(config: dict, shape, limits) -> bool:
    """Shared memory for the pipelined A and B tiles, the float32 accumulator within a
    thread's registers (half of them: the operands need the rest), no tile more than
    twice the problem, and no warp without a 16x16 piece of the output."""
    bm, bn, bk, warps = config["BLOCK_M"], config["BLOCK_N"], config["BLOCK_K"], config["num_warps"]
    smem = config["num_stages"] * (bm * bk + bk * bn) * shape["itemsize"]
    return (smem <= limits.smem_per_block and bm * bn // (32 * warps) <= limits.regs_per_thread // 2
            and bm <= max(16, next_pow2(shape["M"])) and bn <= max(16, next_pow2(shape["N"]))
            and bk <= max(16, next_pow2(shape["K"])) and warps * 256 <= bm * bn
            and config["SPLIT_K"] * bk <= max(bk, shape["K"]))


TUNING = Space("triton.gemm", {"BLOCK_M": (16, 32, 64, 128), "BLOCK_N": (32, 64, 128, 256), "BLOCK_K": (32, 64, 128),
                               "GROUP_M": (1, 8), "SPLIT_K": (1, 2, 4, 8, 16), "num_warps": (4, 8),
                               "num_stages": (2, 3, 4, 5)},
               bucketed=("M",), default=default_config, fits=fits)


def bmm_into(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, config: dict | None = None) -> torch.Tensor:
    """c[i] = a[i] @ b[i] for 3-D views a [Bt, M, K], b [Bt, K, N], c [Bt, M, N]."""
    bt, m, k = a.shape
    n = b.shape[2]
    shape = {"batch": bt, "M": m, "N": n, "K": k, "itemsize": a.element_size()}
    device = choosing_for(a)
    cfg = config or TUNING.choose(shape, a.dtype, device)
    meta = {key: v for key, v in cfg.items() if key not in ("num_warps", "num_stages")}
    launch = launch_options(cfg, device)
    split = cfg.get("SPLIT_K", 1)
    grid = (-(-m // cfg["BLOCK_M"]) * -(-n // cfg["BLOCK_N"]), bt, split)
    if m and n and bt:
        part = torch.empty(split * bt * m * n, dtype=torch.float32, device=a.device) if split > 1 else c
        load_kernel(SPEC, a.device)[grid](a, a.stride(0), a.stride(1), a.stride(2), b, b.stride(0), b.stride(1),
                                          b.stride(2), c, c.stride(0), c.stride(1), c.stride(2), part, m, n, k,
                                          DOT_F32=device.type != "cuda" or a.dtype == torch.float32,
                                          **meta, **launch)
        if split > 1:
            load_kernel(REDUCE, a.device)[(-(-m * n // REDUCE_BLOCK), bt)](
                part, c, c.stride(0), c.stride(1), c.stride(2), m, n, SPLIT_K=split, BLOCK=REDUCE_BLOCK)
    return c


@KERNELS.provides
def linear(x: torch.Tensor, w: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., K] @ w[N, K]ᵀ (into out, a contiguous [..., N], when given)."""
    return contraction.linear(x, w, bmm_into, out)


@KERNELS.provides
def einsum(spec: str, x: torch.Tensor, y: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    return contraction.einsum(spec, x, y, bmm_into, out)


def signature(dtype: str) -> list[tuple]:
    """(spec, signature, constexprs) at GPU tile sizes, for compile checks: the GEMM, and
    its split-K form with the reduction a skinny launch adds."""
    sig = {name: "i32" for name in ("sab", "sam", "sak", "sbb", "sbk", "sbn", "scb", "scm", "scn", "M", "N", "K")}
    sig.update({"a_ptr": f"*{dtype}", "b_ptr": f"*{dtype}", "c_ptr": f"*{dtype}", "part_ptr": "*fp32"})
    const = {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8, "DOT_F32": dtype == "fp32", "SPLIT_K": 1}
    order = ["a_ptr", "sab", "sam", "sak", "b_ptr", "sbb", "sbk", "sbn", "c_ptr", "scb", "scm", "scn", "part_ptr",
             "M", "N", "K"]
    gemm = {**{k: sig[k] for k in order}, **{k: "constexpr" for k in const}}
    reduce_sig = {"part_ptr": "*fp32", "c_ptr": f"*{dtype}", "scb": "i32", "scm": "i32", "scn": "i32", "M": "i32",
                  "N": "i32", "SPLIT_K": "constexpr", "BLOCK": "constexpr"}
    return [(SPEC, gemm, const), (SPEC, gemm, {**const, "BLOCK_M": 16, "SPLIT_K": 8}),
            (REDUCE, reduce_sig, {"SPLIT_K": 8, "BLOCK": REDUCE_BLOCK})]


@KERNELS.lists("gemm")
def _jobs(group) -> list[tuple]:
    return signature(TRITON_TYPES[group.root.dtype.name])
