"""The MoE router group as TIR for llvm (TVMScript): the contract of the Triton router
(codegen/triton/router.py), one token per parallel iteration with its E scores in a
local array.

scores (softmax or sigmoid, float32) -> selection scores (+ the noaux_tc correction
bias) -> for group-limited methods, the topk_group best groups kept (by their best
score, or by the sum of their best two) and the rest masked -> top_k rounds of argmax
(DeepSeek's best-first order; the first of equal scores wins) -> the unbiased scores of
the chosen experts, renormalized and scaled -> the shared experts appended.
"""

from __future__ import annotations

import torch

from dsc.codegen.groups.router import RouterSpec, router_spec
from dsc.codegen.tvm.build import KernelDef, compiled, loop_kinds, output_buffer, require_tvm
from dsc.codegen.tvm.kernels import KERNELS


def define_router(spec: RouterSpec, experts: int, has_bias: bool, target: str = "llvm") -> KernelDef:
    require_tvm()
    from tvm.script import tirx as T

    loops = loop_kinds(target)

    e_, k_, g_, tg = experts, spec.top_k, max(spec.n_group, 1), spec.topk_group
    width = k_ + spec.extra
    per = e_ // g_
    grouped = spec.method != "greedy"
    top2 = spec.method == "noaux_tc"
    sigmoid = spec.func == "sigmoid"
    neg_inf = T.float32(float("-inf"))

    def finite(v):  # non-finite scores count as 0: k distinct experts, finite weights (vLLM's rule)
        return T.if_then_else(T.isfinite(v), v, T.float32(0))

    def choice(s, bias, e):  # the correction bias steers selection only
        return finite(s[e] + bias[e]) if has_bias else s[e]

    @T.prim_func
    def main(l_h: T.handle, b_h: T.handle, i_h: T.handle, w_h: T.handle):
        n = T.int64()
        logits = T.match_buffer(l_h, (n, e_), "float32")
        bias = T.match_buffer(b_h, (e_,), "float32")
        ids = T.match_buffer(i_h, (n, width), "int64")
        w = T.match_buffer(w_h, (n, width), "float32")
        for t in loops.par(n):
            s = T.decl_buffer((e_,), "float32", scope="local")  # scores
            ch = T.decl_buffer((e_,), "float32", scope="local")  # selection scores, -inf once taken or masked
            gs = T.decl_buffer((g_,), "float32", scope="local")  # group scores
            kept = T.decl_buffer((g_,), "int32", scope="local")
            f = T.decl_buffer((3,), "float32", scope="local")  # running best, second best, sum
            at = T.decl_buffer((1,), "int32", scope="local")  # running argmax
            if sigmoid:
                for e in range(e_):
                    s[e] = T.float32(1) / (T.float32(1) + T.exp(-logits[t, e]))
            else:
                f[0] = neg_inf
                for e in range(e_):
                    f[0] = T.max(f[0], logits[t, e])
                f[2] = T.float32(0)
                for e in range(e_):
                    s[e] = T.exp(logits[t, e] - f[0])
                    f[2] = f[2] + s[e]
                for e in range(e_):
                    s[e] = s[e] / f[2]
            for e in range(e_):
                s[e] = finite(s[e])
                ch[e] = choice(s, bias, e)
            if grouped:
                for g in range(g_):
                    f[0] = neg_inf
                    at[0] = 0
                    for j in range(per):
                        if ch[g * per + j] > f[0]:
                            f[0] = ch[g * per + j]
                            at[0] = T.int32(j)
                    gs[g] = f[0]
                    if top2:
                        f[1] = neg_inf
                        for j in range(per):
                            if j != at[0] and ch[g * per + j] > f[1]:
                                f[1] = ch[g * per + j]
                        gs[g] = f[0] + f[1]
                    kept[g] = 0
                for _ in range(tg):
                    f[0] = neg_inf
                    at[0] = 0
                    for g in range(g_):
                        if kept[g] == 0 and gs[g] > f[0]:
                            f[0] = gs[g]
                            at[0] = T.int32(g)
                    kept[at[0]] = 1
                for e in range(e_):
                    if kept[e // per] == 0:
                        ch[e] = neg_inf
            f[2] = T.float32(0)
            for j in range(k_):
                f[0] = neg_inf
                at[0] = 0
                for e in range(e_):
                    if ch[e] > f[0]:
                        f[0] = ch[e]
                        at[0] = T.int32(e)
                ch[at[0]] = neg_inf
                ids[t, j] = T.int64(at[0])
                w[t, j] = s[at[0]]
                f[2] = f[2] + s[at[0]]
            for j in range(k_):
                if spec.normalize:
                    w[t, j] = w[t, j] / (f[2] + T.float32(spec.eps)) * T.float32(spec.scale)
                else:
                    w[t, j] = w[t, j] * T.float32(spec.scale)
            for j in range(spec.extra):
                ids[t, k_ + j] = T.int64(spec.extra_start + j)
                w[t, k_ + j] = T.float32(spec.extra_w)

    return KernelDef(f"moe_router_{spec.func}_{spec.method}_e{experts}_k{k_}", main)


@KERNELS.provides
def route(logits: torch.Tensor, bias: torch.Tensor | None, spec: RouterSpec,
          out: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [N, E] float32 -> (ids [N, K + extra] int64, weights [N, K + extra] float32)."""
    n, e = logits.shape
    fn = compiled(define_router, spec, e, bias is not None)
    width = spec.top_k + spec.extra
    ids, w = out if out is not None else (None, None)
    device = logits.device
    ids = output_buffer(ids, (n, width), torch.int64, device)
    w = output_buffer(w, (n, width), torch.float32, device)
    if n:
        bias = bias if bias is not None else torch.zeros(e, device=device)
        fn(logits.float().contiguous(), bias.float().contiguous(), ids, w)
    return ids, w


@KERNELS.lists("router")
def _defs(group, d) -> list:
    return [d(define_router, router_spec(group), group.inputs[0].shape[-1], len(group.inputs) > 1)]
