"""Kernel group: the MoE router in one kernel.

router scores (softmax or sigmoid, float32) -> expert selection (greedy, group-limited
greedy, or noaux_tc with the correction bias used for selection only) -> the selected
experts' unbiased scores -> optional renormalization -> routed scaling -> the
always-selected shared experts appended (ids start.., weight one). BLOCK_T tokens per
program (on a GPU, one warp over two of V3's tokens: `tiles`), every expert of a token
in registers (E <= 256 for DeepSeek-V3); top-k is k rounds of argmax, which also yields
DeepSeek's best-first order.
"""

from __future__ import annotations

import torch

from dsc.codegen.groups.router import RouterSpec, router_spec
from dsc.codegen.triton.build import KernelSpec, choosing_for, load_kernel, next_pow2
from dsc.codegen.triton.kernels import KERNELS

SOURCE = '''
import triton
import triton.language as tl


@triton.jit
def moe_router(logits_ptr, bias_ptr, ids_ptr, w_ptr, N, eps, scale, extra_w,
               E: tl.constexpr, K: tl.constexpr, G: tl.constexpr, TG: tl.constexpr, EXTRA: tl.constexpr,
               EXTRA_START: tl.constexpr, SIGMOID: tl.constexpr, METHOD: tl.constexpr, HAS_BIAS: tl.constexpr,
               NORMALIZE: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_G: tl.constexpr,
               BLOCK_K: tl.constexpr):
    t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)[:, None]
    e = tl.arange(0, BLOCK_E)[None, :]
    t_ok = t < N
    e_ok = e < E
    x = tl.load(logits_ptr + t.to(tl.int64) * E + e, mask=t_ok & e_ok, other=0.0).to(tl.float32)
    x = tl.where(e_ok, x, float("-inf"))  # rows past N stay finite: no NaN anywhere
    if SIGMOID:
        s = 1.0 / (1.0 + tl.exp(-x))
    else:
        m = tl.max(x, axis=1)[:, None]
        p = tl.exp(x - m)
        s = p / tl.sum(p, axis=1)[:, None]
    # non-finite scores (a NaN or inf logit) count as 0: k distinct experts, finite weights (vLLM's rule)
    s = tl.where(e_ok & (s == s) & (tl.abs(s) < float("inf")), s, 0.0)
    choice = s
    if HAS_BIAS:
        choice = s + tl.load(bias_ptr + e, mask=e_ok, other=0.0).to(tl.float32)
        choice = tl.where((choice == choice) & (tl.abs(choice) < float("inf")), choice, 0.0)
    choice = tl.where(e_ok, choice, float("-inf"))

    if METHOD != 0:  # group-limited: keep the TG best groups (by max, or by the sum of the best two)
        gid = e // (E // G)
        g = tl.arange(0, BLOCK_G)[None, :]
        gscore = tl.full([BLOCK_T, BLOCK_G], float("-inf"), tl.float32)
        for j in tl.static_range(G):
            v = tl.where(gid == j, choice, float("-inf"))
            best = tl.max(v, axis=1)
            if METHOD == 2:
                first = tl.argmax(v, axis=1)
                best = best + tl.max(tl.where(e == first[:, None], float("-inf"), v), axis=1)
            gscore = tl.where(g == j, best[:, None], gscore)
        kept = tl.zeros([BLOCK_T, BLOCK_E], tl.int32)
        for _ in tl.static_range(TG):
            top = tl.argmax(gscore, axis=1)[:, None]
            kept = tl.where(gid == top, 1, kept)
            gscore = tl.where(g == top, float("-inf"), gscore)
        choice = tl.where(kept > 0, choice, float("-inf"))

    k = tl.arange(0, BLOCK_K)[None, :]
    ids = tl.zeros([BLOCK_T, BLOCK_K], tl.int32)
    w = tl.zeros([BLOCK_T, BLOCK_K], tl.float32)
    for j in tl.static_range(K):
        top = tl.argmax(choice, axis=1)[:, None]
        picked = e == top
        ids = tl.where(k == j, top, ids)
        w = tl.where(k == j, tl.sum(tl.where(picked, s, 0.0), axis=1)[:, None], w)
        choice = tl.where(picked, float("-inf"), choice)
    if NORMALIZE:
        w = w / (tl.sum(tl.where(k < K, w, 0.0), axis=1)[:, None] + eps)
    w = w * scale
    ids = tl.where(k >= K, EXTRA_START + k - K, ids)
    w = tl.where(k >= K, extra_w, w)
    out = t.to(tl.int64) * (K + EXTRA) + k
    ok = t_ok & (k < K + EXTRA)
    tl.store(ids_ptr + out, ids.to(tl.int64), mask=ok)
    tl.store(w_ptr + out, w, mask=ok)
'''

SPEC = KernelSpec("moe_router", SOURCE, "(cdiv(N, BLOCK_T),)")
METHODS = {"greedy": 0, "group_limited_greedy": 1, "noaux_tc": 2}


@KERNELS.provides
def route(logits: torch.Tensor, bias: torch.Tensor | None, spec: RouterSpec,
          out: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [N, E] float32 -> (ids [N, K + extra] int64, weights [N, K + extra] float32),
    into the planned (ids, weights) buffers of out where given."""
    n, e = logits.shape
    width = spec.top_k + spec.extra
    ids, w = out if out is not None else (None, None)
    if ids is None:
        ids = torch.empty(n, width, dtype=torch.int64, device=logits.device)
    if w is None:
        w = torch.empty(n, width, dtype=torch.float32, device=logits.device)
    block_t, launch = tiles(e, n, choosing_for(logits))
    if n:
        logits = logits.contiguous()
        load_kernel(SPEC, logits.device)[(-(-n // block_t),)](
            logits, bias if bias is not None else logits, ids, w, n, spec.eps, spec.scale, spec.extra_w,
            **constexprs(spec, e, bias is not None, block_t), **launch)
    return ids, w


def tiles(experts: int, tokens: int, device) -> tuple[int, dict]:
    """Tokens per program and launch options. On a GPU one warp over 512 scores (two of
    V3's tokens): 92-165 registers, no spills, 4-5 s to compile for sm_80/sm_90, where 16
    tokens on four warps took 33 s and spilled on sm_80 (ptxas -v, triton 3.6). The
    interpreter takes up to 4096 scores a program: fewer, larger programs."""
    block_e = next_pow2(experts)
    if device.type == "cuda":
        return max(1, min(16, 512 // block_e, next_pow2(tokens))), {"num_warps": 1}
    return max(1, min(16, 4096 // block_e, next_pow2(tokens))), {}


def constexprs(spec: RouterSpec, experts: int, has_bias: bool, block_t: int) -> dict:
    return dict(E=experts, K=spec.top_k, G=spec.n_group, TG=spec.topk_group, EXTRA=spec.extra,
                EXTRA_START=spec.extra_start, SIGMOID=spec.func == "sigmoid", METHOD=METHODS[spec.method],
                HAS_BIAS=has_bias, NORMALIZE=spec.normalize, BLOCK_T=block_t, BLOCK_E=next_pow2(experts),
                BLOCK_G=next_pow2(spec.n_group), BLOCK_K=next_pow2(spec.top_k + spec.extra))


def signature(spec: RouterSpec, experts: int, has_bias: bool) -> list[tuple]:
    sig = {"logits_ptr": "*fp32", "bias_ptr": "*fp32", "ids_ptr": "*i64", "w_ptr": "*fp32", "N": "i32",
           "eps": "fp32", "scale": "fp32", "extra_w": "fp32"}
    const = constexprs(spec, experts, has_bias, max(1, min(16, 512 // next_pow2(experts))))
    return [(SPEC, {**sig, **{k: "constexpr" for k in const}}, const)]


@KERNELS.lists("router")
def _jobs(group) -> list[tuple]:
    return signature(router_spec(group), group.inputs[0].shape[-1], len(group.inputs) > 1)
