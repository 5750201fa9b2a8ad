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
from dsc.runtime.search_space import Space

SOURCE = '''
import triton
import triton.language as tl


@triton.jit
def batched_gemm(a_ptr, sab, sam, sak, b_ptr, sbb, sbk, sbn, c_ptr, scb, scm, scn, M, N, K,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
                 DOT_F32: tl.constexpr):
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

    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    a = a_ptr + batch * sab + rm[:, None].to(tl.int64) * sam + rk[None, :] * sak
    b = b_ptr + batch * sbb + rk[:, None] * sbk + rn[None, :].to(tl.int64) * sbn
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ka = tl.load(a, mask=(rm[:, None] < M) & (rk[None, :] + k0 < K), other=0.0)
        kb = tl.load(b, mask=(rk[:, None] + k0 < K) & (rn[None, :] < N), other=0.0)
        if DOT_F32:
            ka = ka.to(tl.float32)
            kb = kb.to(tl.float32)
        acc = tl.dot(ka, kb, acc)
        a += BLOCK_K * sak
        b += BLOCK_K * sbk
    c = c_ptr + batch * scb + rm[:, None].to(tl.int64) * scm + rn[None, :] * scn
    tl.store(c, to_out(acc, c_ptr.dtype.element_ty), mask=(rm[:, None] < M) & (rn[None, :] < N))
'''

SPEC = KernelSpec("batched_gemm", with_helpers(SOURCE), "(cdiv(M, BLOCK_M) * cdiv(N, BLOCK_N), batch)",
                  dot_rows="BLOCK_M")


def default_config(shape, device: torch.device) -> dict:
    m, n, k = shape["M"], shape["N"], shape["K"]
    if device.type != "cuda":  # the interpreter: few, large programs
        return {"BLOCK_M": max(16, min(64, next_pow2(m))), "BLOCK_N": max(16, min(128, next_pow2(n))),
                "BLOCK_K": max(16, min(64, next_pow2(k))), "GROUP_M": 8, "num_warps": 4, "num_stages": 1}
    return {"BLOCK_M": 64 if m > 32 else 16, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 4,
            "num_stages": 3}


def fits(config: dict, shape, limits) -> bool:
    """Shared memory for the pipelined A and B tiles, the float32 accumulator within a
    thread's registers (half of them: the operands need the rest), no tile more than
    twice the problem, and no warp without a 16x16 piece of the output."""
    bm, bn, bk, warps = config["BLOCK_M"], config["BLOCK_N"], config["BLOCK_K"], config["num_warps"]
    smem = config["num_stages"] * (bm * bk + bk * bn) * shape["itemsize"]
    return (smem <= limits.smem_per_block and bm * bn // (32 * warps) <= limits.regs_per_thread // 2
            and bm <= max(16, next_pow2(shape["M"])) and bn <= max(16, next_pow2(shape["N"]))
            and bk <= max(16, next_pow2(shape["K"])) and warps * 256 <= bm * bn)


TUNING = Space("triton.gemm", {"BLOCK_M": (16, 32, 64, 128), "BLOCK_N": (32, 64, 128, 256), "BLOCK_K": (32, 64, 128),
                               "GROUP_M": (1, 8), "num_warps": (4, 8), "num_stages": (2, 3, 4, 5)},
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
    grid = (-(-m // cfg["BLOCK_M"]) * -(-n // cfg["BLOCK_N"]), bt)
    if m and n and bt:
        load_kernel(SPEC, a.device)[grid](a, a.stride(0), a.stride(1), a.stride(2), b, b.stride(0), b.stride(1),
                                          b.stride(2), c, c.stride(0), c.stride(1), c.stride(2), m, n, k,
                                          DOT_F32=device.type != "cuda" or a.dtype == torch.float32,
                                          **meta, **launch)
    return c


@KERNELS.provides
def linear(x: torch.Tensor, w: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., K] @ w[N, K]ᵀ (into out, a contiguous [..., N], when given)."""
    return contraction.linear(x, w, bmm_into, out)


@KERNELS.provides
def einsum(spec: str, x: torch.Tensor, y: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    return contraction.einsum(spec, x, y, bmm_into, out)


def signature(dtype: str) -> list[tuple]:
    """(spec, signature, constexprs) at GPU tile sizes, for compile checks."""
    sig = {name: "i32" for name in ("sab", "sam", "sak", "sbb", "sbk", "sbn", "scb", "scm", "scn", "M", "N", "K")}
    sig.update({"a_ptr": f"*{dtype}", "b_ptr": f"*{dtype}", "c_ptr": f"*{dtype}"})
    const = {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8, "DOT_F32": dtype == "fp32"}
    order = ["a_ptr", "sab", "sam", "sak", "b_ptr", "sbb", "sbk", "sbn", "c_ptr", "scb", "scm", "scn", "M", "N", "K"]
    return [(SPEC, {**{k: sig[k] for k in order}, **{k: "constexpr" for k in const}}, const)]


@KERNELS.lists("gemm")
def _jobs(group) -> list[tuple]:
    return signature(TRITON_TYPES[group.root.dtype.name])
