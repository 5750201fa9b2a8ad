"""linear and einsum as batched GEMMs, for any backend that supplies the GEMM.

A two-operand contraction is a batched GEMM over permuted views: letters in both
operands and the output are the batch, in x and the output only M, in y and the output
only N, in both operands only K (summed). `bmm_into(a [Bt, M, K], b [Bt, K, N],
c [Bt, M, N])` is the backend's kernel; the views it gets may be strided.
"""

from __future__ import annotations

from typing import Callable

import torch

from dsc.errors import DscError

BmmInto = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def linear(x: torch.Tensor, w: torch.Tensor, bmm_into: BmmInto, out: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., K] @ w[N, K]ᵀ (into out, a contiguous [..., N], when given)."""
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    if out is None:
        out = torch.empty(*lead, w.shape[0], dtype=x.dtype, device=x.device)
    bmm_into(x2[None], w.t()[None], out.view(-1, w.shape[0])[None])
    return out


def einsum(spec: str, x: torch.Tensor, y: torch.Tensor, bmm_into: BmmInto,
           out: torch.Tensor | None = None) -> torch.Tensor:
    ins, out_letters = spec.replace(" ", "").split("->")
    xl, yl = ins.split(",")
    if len(set(xl)) != len(xl) or len(set(yl)) != len(yl):
        raise DscError(f"einsum {spec!r}: repeated letters in one operand have no GEMM form")
    size = {**dict(zip(xl, x.shape)), **dict(zip(yl, y.shape))}
    batch = [c for c in out_letters if c in xl and c in yl]
    ms = [c for c in out_letters if c in xl and c not in yl]
    ns = [c for c in out_letters if c in yl and c not in xl]
    ks = [c for c in xl if c in yl and c not in out_letters]
    if set(xl) - set(batch + ms + ks) or set(yl) - set(batch + ns + ks):
        raise DscError(f"einsum {spec!r}: a letter summed within one operand has no GEMM form")

    def prod(letters):
        p = 1
        for c in letters:
            p *= size[c]
        return p

    bt, m, n, k = prod(batch), prod(ms), prod(ns), prod(ks)
    a = x.permute([xl.index(c) for c in batch + ms + ks]).reshape(bt, m, k)
    b = y.permute([yl.index(c) for c in batch + ks + ns]).reshape(bt, k, n)
    if out is None:
        out = torch.empty([size[c] for c in out_letters], dtype=x.dtype, device=x.device)
    perm = [out_letters.index(c) for c in batch + ms + ns]
    try:
        c = out.permute(perm).view(bt, m, n)
    except RuntimeError:  # the output letters interleave batch and M/N: compute, then lay out
        c = torch.empty(bt, m, n, dtype=x.dtype, device=x.device)
        bmm_into(a, b, c)
        out.permute(perm).copy_(c.view([size[ch] for ch in batch + ms + ns]))
        return out
    bmm_into(a, b, c)
    return out
