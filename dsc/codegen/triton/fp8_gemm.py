"""Kernel group: block-scaled FP8 GEMM with the activation quantization fused in.

y = x @ dequant(wq, ws)ᵀ with DeepSeek-V3's scheme: weights e4m3 with one float32
scale per 128 x 128 tile; with ACT_QUANT the activations are quantized per token per
128 channels in the GEMM's prologue (DeepGEMM takes them pre-quantized; doing it on the
A tile saves a round trip through memory). BLOCK_K is the scale block, so every K step
has one activation scale per row and one weight scale per column block, applied to the
step's partial sum (DeepGEMM's promotion of the FP8 accumulator into float32).

Dot modes: without DOT_F32, fp8 x fp8 tensor cores (sm_89+) with ACT_QUANT, or the
activation dtype with the weight upcast exactly (e4m3 values are bf16 values) without
it (weight-only FP8, A100); otherwise (Triton's interpreter) float32 dots. Weight-only
kernels read the e4m3 bytes as uint8 and decode them arithmetically: sm_80 has no fp8
type at all.
"""

from __future__ import annotations

import torch

from dsc.codegen.triton.build import (TRITON_TYPES, KernelSpec, choosing_for, launch_options, load_kernel, next_pow2,
                                      with_helpers)
from dsc.codegen.triton.gemm import REDUCE, REDUCE_BLOCK, default_split_k
from dsc.codegen.triton.gemm import signature as gemm_signature
from dsc.codegen.triton.kernels import KERNELS
from dsc.runtime.device import device_limits
from dsc.runtime.search_space import Space

SOURCE = '''
import triton
import triton.language as tl


@triton.jit
def fp8_gemm(a_ptr, sam, w_ptr, s_ptr, c_ptr, part_ptr, M, N, K, KB,
             ACT_QUANT: tl.constexpr, DOT_F32: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
             BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr = 1):
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    m_ok = rm < M
    n_ok = rn < N
    # split-K (skinny decode projections): whole scale blocks per split
    pid_k = tl.program_id(2)
    per_split = tl.cdiv(tl.cdiv(K, BLOCK_K), SPLIT_K) * BLOCK_K
    k_lo = pid_k * per_split
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k0 in range(k_lo, tl.minimum(K, k_lo + per_split), BLOCK_K):
        k_ok = rk + k0 < K
        a = tl.load(a_ptr + rm[:, None].to(tl.int64) * sam + (rk[None, :] + k0), mask=m_ok[:, None] & k_ok[None, :],
                    other=0.0)
        w = tl.load(w_ptr + rn[None, :].to(tl.int64) * K + (rk[:, None] + k0), mask=k_ok[:, None] & n_ok[None, :],
                    other=0.0)
        ws = tl.load(s_ptr + (rn // BLOCK_K) * KB + k0 // BLOCK_K, mask=n_ok, other=0.0)
        acc += fp8_step(a, w, ws, ACT_QUANT, DOT_F32)
    if SPLIT_K == 1:
        tl.store(c_ptr + rm[:, None].to(tl.int64) * N + rn[None, :], to_out(acc, c_ptr.dtype.element_ty),
                 mask=m_ok[:, None] & n_ok[None, :])
    else:  # float32 partials [SPLIT_K, M, N] for gemm.py's gemm_split_reduce
        tl.store(part_ptr + (pid_k * M + rm[:, None].to(tl.int64)) * N + rn[None, :], acc,
                 mask=m_ok[:, None] & n_ok[None, :])
'''

SPEC = KernelSpec("fp8_gemm", with_helpers(SOURCE), "(cdiv(M, BLOCK_M), cdiv(N, BLOCK_N))", dot_rows="BLOCK_M")


def default_config(shape, device: torch.device) -> dict:
    m, n = shape["M"], shape["N"]
    if device.type != "cuda":
        return {"BLOCK_M": max(16, min(64, next_pow2(m))), "BLOCK_N": max(16, min(shape["block"], next_pow2(n))),
                "SPLIT_K": 1, "num_warps": 4, "num_stages": 1}
    bm, bn = max(16, min(64, next_pow2(m))), min(shape["block"], 128)
    split = default_split_k(-(-m // bm) * -(-n // bn), shape["K"], shape["block"], device_limits(device).sms)
    return {"BLOCK_M": bm, "BLOCK_N": bn, "SPLIT_K": split, "num_warps": 4, "num_stages": 3}


def fits(config: dict, shape, limits) -> bool:
    """Pipelined activation and FP8 weight tiles in shared memory (K steps of one scale
    block), the accumulator within half of a thread's registers, no tile past the problem."""
    bm, bn, bk = config["BLOCK_M"], config["BLOCK_N"], shape["block"]
    smem = config["num_stages"] * (bm * bk * shape["itemsize"] + bk * bn)
    return (smem <= limits.smem_per_block and bm * bn // (32 * config["num_warps"]) <= limits.regs_per_thread // 2
            and bm <= max(16, next_pow2(shape["M"])) and bn <= max(16, next_pow2(shape["N"]))
            and config["SPLIT_K"] * bk <= max(bk, shape["K"]))


TUNING = Space("triton.fp8_gemm", {"BLOCK_M": (16, 32, 64, 128), "BLOCK_N": (32, 64, 128, 256),
                                   "SPLIT_K": (1, 2, 4, 8, 16), "num_warps": (4, 8), "num_stages": (2, 3, 4, 5)},
               bucketed=("M",), default=default_config, fits=fits)


@KERNELS.provides
def fp8_linear(x: torch.Tensor, wq: torch.Tensor, ws: torch.Tensor, *, act_quant: bool, block: int,
               out: torch.Tensor | None = None, config: dict | None = None) -> torch.Tensor:
    """x [..., K] (any float dtype) @ dequant(wq [N, K] e4m3, ws [ceil(N/b), ceil(K/b)])ᵀ -> x's dtype.
    config: a TUNING config instead of the tuned or default one (tests draw tiles with it)."""
    lead = x.shape[:-1]
    k = x.shape[-1]
    n = wq.shape[0]
    a = x.reshape(-1, k)
    a = a if a.stride(-1) == 1 else a.contiguous()
    m = a.shape[0]
    if out is None:
        out = torch.empty(*lead, n, dtype=x.dtype, device=x.device)
    device = choosing_for(x)
    native = device.type == "cuda" and not (x.dtype == torch.float32 and not act_quant)
    shape = {"M": m, "N": n, "K": k, "block": block, "act_quant": act_quant, "itemsize": x.element_size()}
    cfg = config or TUNING.choose(shape, x.dtype, device)
    bm, bn, split = cfg["BLOCK_M"], cfg["BLOCK_N"], cfg.get("SPLIT_K", 1)
    launch = launch_options(cfg, device)
    w = wq.contiguous() if act_quant else wq.contiguous().view(torch.uint8)  # weight-only: bytes, decoded
    if m and n:
        c = out.view(-1, n)
        part = torch.empty(split * m * n, dtype=torch.float32, device=x.device) if split > 1 else c
        load_kernel(SPEC, x.device)[(-(-m // bm), -(-n // bn), split)](
            a, a.stride(0), w, ws.contiguous(), c, part, m, n, k, ws.shape[-1],
            ACT_QUANT=act_quant, DOT_F32=not native, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=block, SPLIT_K=split, **launch)
        if split > 1:
            load_kernel(REDUCE, x.device)[(-(-m * n // REDUCE_BLOCK), 1)](
                part, c, 0, c.stride(0), c.stride(1), m, n, SPLIT_K=split, BLOCK=REDUCE_BLOCK)
    return out


def signature(dtype: str, act_quant: bool, block: int = 128) -> list[tuple]:
    """The FP8 GEMM, its split-K form and the reduction that form adds (gemm.py's)."""
    sig = {"a_ptr": f"*{dtype}", "sam": "i32", "w_ptr": "*fp8e4nv" if act_quant else "*u8", "s_ptr": "*fp32",
           "c_ptr": f"*{dtype}", "part_ptr": "*fp32", "M": "i32", "N": "i32", "K": "i32", "KB": "i32"}
    const = {"ACT_QUANT": act_quant, "DOT_F32": dtype == "fp32" and not act_quant, "BLOCK_M": 64,
             "BLOCK_N": 128, "BLOCK_K": block, "SPLIT_K": 1}
    full = {**sig, **{k: "constexpr" for k in const}}
    return [(SPEC, full, const), (SPEC, full, {**const, "BLOCK_M": 16, "SPLIT_K": 8}),
            *[job for job in gemm_signature(dtype) if job[0] is REDUCE]]


@KERNELS.lists("fp8_gemm")
def _jobs(group) -> list[tuple]:
    n = group.root
    return signature(TRITON_TYPES[n.dtype.name], n.attrs["act_quant"], n.attrs["block"])
