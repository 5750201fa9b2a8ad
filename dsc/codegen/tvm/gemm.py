"""The GEMM group as TensorIR: C[b] = A[b] @ Bᵀ[b] with B in nn.Linear's [N, K] layout
(rows of B contiguous in K, so the inner product streams both operands), or C[b] =
A[b] @ B[b] with B compact in [K, N] (einsum weights). float32 accumulation, rounded
once to the output dtype."""

from __future__ import annotations

import torch

from dsc.codegen import contraction
from dsc.codegen.tvm.build import (KernelDef, compiled, deliver, knobs, output_buffer, require_tvm, static_dim,
                                   store_as, tvm_dtype)
from dsc.codegen.tvm.kernels import KERNELS
from dsc.runtime.search_space import Space

TVM_OF_TORCH = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def _stages(dt: str, k: int, n: int | None):
    """A [Bt, M, K] times B: [Bt, N, K] (NT, n None: N symbolic) or [Bt, K, n] (NN);
    float32 accumulation rounded once to dt."""
    te = require_tvm().te
    bt, m = te.var("Bt", "int64"), te.var("M", "int64")
    a = te.placeholder([bt, m, k], dt, name="A")
    nt = n is None
    if nt:
        n = te.var("N", "int64")
    b = te.placeholder([bt, n, k] if nt else [bt, k, n], dt, name="B")
    r = te.reduce_axis((0, k), name="k")
    acc = te.compute([bt, m, n], lambda z, i, j: te.sum(
        a[z, i, r].astype("float32") * (b[z, j, r] if nt else b[z, r, j]).astype("float32"), axis=r), name="acc")
    c = te.compute([bt, m, n], lambda z, i, j: store_as(acc[z, i, j], dt), name="C")
    return [a, b, c]


def define_nt(dt: str, k: int, lanes: int | None = None, tile_m: int = 0) -> KernelDef:
    """C[b] = A[b] @ B[b]ᵀ with B [Bt, N, K] (nn.Linear's layout). lanes: the K split
    vectorized (default: the widest of 16, 8, 4 dividing K); tile_m: rows per weight
    pass (0: all rows), so a prefill's A rows stay in cache while weight rows stream."""
    lanes = lanes or next(v for v in (16, 8, 4, 2, 1) if k % v == 0)

    def schedule(sch):
        # every output element is a dot product over K, contiguous in both operands: split
        # K into vector lanes (rfactor) and vectorize them; columns outside rows, in
        # parallel, so each weight row is read once for all M rows (decode's GEMV is the
        # case that matters on a CPU); with tile_m, row tiles outermost.
        blk = sch.get_sblock("acc")
        z, i, j, kk = sch.get_loops(blk)
        if tile_m:
            io, ii = sch.split(i, [None, tile_m])
            sch.reorder(z, io, j, ii, kk)
        else:
            sch.reorder(z, j, i, kk)
        _, ki = sch.split(kk, [None, lanes])
        rf = sch.rfactor(ki, factor_axis=3)
        loops = sch.get_loops(rf)
        sch.parallel(sch.fuse(loops[0], loops[1]))  # (batch, column) or (batch, row tile)
        sch.vectorize(loops[-1])
        for name in ("acc", "C"):
            loops = sch.get_loops(sch.get_sblock(name))
            sch.parallel(sch.fuse(loops[0], loops[1]))
    return KernelDef.from_te(f"bmm_nt_{dt}_k{k}_l{lanes}_t{tile_m}", _stages(dt, k, None), schedule)


def define_nn(dt: str, k: int, n: int) -> KernelDef:
    """C[b] = A[b] @ B[b] with B [Bt, K, N] (einsum weights such as absorbed MLA's W_UK
    [H, nope, rank]): for each row, K axpy steps over a contiguous row of B, which LLVM
    vectorizes; the float32 accumulator row stays in cache."""
    def schedule(sch):
        blk = sch.get_sblock("acc")
        z, i, j, kk = sch.get_loops(blk)
        sch.reorder(kk, j)
        sch.parallel(sch.fuse(z, i))
        sch.decompose_reduction(blk, kk)
        loops = sch.get_loops(sch.get_sblock("C"))
        sch.parallel(sch.fuse(loops[0], loops[1]))
    return KernelDef.from_te(f"bmm_nn_{dt}_k{k}_n{n}", _stages(dt, k, n), schedule)


def _nt_default(shape, device) -> dict:
    # measured here (K 2048, N 3072, f32): the widest lanes; row tiles of 64 from 128
    # rows up (512 rows: 650 -> 277 ms), none below (64 rows: 34 vs 40 ms)
    return {"lanes": next(v for v in (16, 8, 4, 2, 1) if shape["K"] % v == 0),
            "tile_m": 64 if shape["M"] >= 128 else 0}


TUNING_NT = Space("tvm.gemm_nt", {"lanes": (4, 8, 16, 32), "tile_m": (0, 8, 16, 32, 64, 128)}, bucketed=("M",),
                  default=_nt_default,
                  fits=lambda config, shape, limits: shape["K"] % config["lanes"] == 0
                  and config["tile_m"] < max(shape["M"], 2))


def bmm_into(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """c[i] = a[i] @ b[i] for a [Bt, M, K], b [Bt, K, N], c [Bt, M, N] (views): the
    kernels take compact tensors. B compact in [K, N] (an einsum weight) runs the NN
    kernel; anything else is read as [N, K] (nn.Linear weights are already), laid out
    compactly first where it is not."""
    target = output_buffer(c, c.shape, c.dtype, c.device)
    dt = TVM_OF_TORCH[a.dtype]
    if a.shape[1] and b.shape[2]:
        if b.is_contiguous():
            compiled(define_nn, dt, a.shape[2], b.shape[2])(a.contiguous(), b, target)
        else:
            shape = {"batch": a.shape[0], "M": a.shape[1], "N": b.shape[2], "K": a.shape[2]}
            compiled(define_nt, dt, a.shape[2], **knobs(TUNING_NT, shape, dt, a.device))(
                a.contiguous(), b.transpose(1, 2).contiguous(), target)
    return deliver(target, c)


@KERNELS.provides
def linear(x: torch.Tensor, w: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    return contraction.linear(x, w, bmm_into, out)


@KERNELS.provides
def einsum(spec: str, x: torch.Tensor, y: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    return contraction.einsum(spec, x, y, bmm_into, out)


@KERNELS.lists("gemm")
def _defs(group, d) -> list:
    n = group.root
    if n.op == "linear":
        return [d(define_nt, tvm_dtype(n), static_dim(n.srcs[1].shape[1], "in features"))]
    k, nn = _einsum_kn(n)
    return [d(define_nt, tvm_dtype(n), k)] + ([d(define_nn, tvm_dtype(n), k, nn)] if isinstance(nn, int) else [])


def _einsum_kn(n) -> tuple[int, object]:
    """(K, N) of a two-operand einsum's GEMM form: K static, N an int or symbolic."""
    xl, rest = n.attrs["spec"].replace(" ", "").split(",")
    yl, out = rest.split("->")
    size = dict(zip(yl, n.srcs[1].shape))
    k, nn = 1, 1
    for c in yl:
        if c in xl and c not in out:
            k *= static_dim(size[c], f"contraction dim {c!r}")
        elif c not in xl:
            nn = nn * size[c] if isinstance(nn, int) and isinstance(size[c], int) else None
    return k, nn
