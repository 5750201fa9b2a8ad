"""The GEMM group as TensorIR for llvm: C[b] = A[b] @ Bᵀ[b] with B in nn.Linear's
[N, K] layout (rows of B are contiguous in K, so the inner product streams both
operands). float32 accumulation, rounded once to the output dtype."""

from __future__ import annotations

import torch

from dsc.codegen import contraction
from dsc.codegen.tvm.build import build, require_tvm, store_as

_KERNELS: dict[tuple, object] = {}
TVM_OF_TORCH = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def _kernel(dtype: torch.dtype, k: int):
    key = (dtype, k)
    if key not in _KERNELS:
        tvm = require_tvm()
        te = tvm.te
        bt, m, n = te.var("Bt", "int64"), te.var("M", "int64"), te.var("N", "int64")
        dt = TVM_OF_TORCH[dtype]
        a = te.placeholder([bt, m, k], dt, name="A")
        b = te.placeholder([bt, n, k], dt, name="B")
        r = te.reduce_axis((0, k), name="k")
        acc = te.compute([bt, m, n], lambda z, i, j: te.sum(a[z, i, r].astype("float32") *
                                                            b[z, j, r].astype("float32"), axis=r), name="acc")

        c = te.compute([bt, m, n], lambda z, i, j: store_as(acc[z, i, j], dt), name="C")
        sch = tvm.s_tir.Schedule(tvm.IRModule({"main": te.create_prim_func([a, b, c])}))
        # every output element is a dot product over K, contiguous in both operands: split
        # K into vector lanes (rfactor) and vectorize them; columns outermost and in
        # parallel, rows inside, so each weight row is read once for all M rows (decode's
        # GEMV is the case that matters on a CPU). Large-M GEMMs want register tiles over a
        # packed weight layout: not yet (measured in the issue 5 note).
        lanes = next(v for v in (16, 8, 4, 2, 1) if k % v == 0)
        blk = sch.get_sblock("acc")
        z, i, j, kk = sch.get_loops(blk)
        sch.reorder(z, j, i, kk)
        ko, ki = sch.split(kk, [None, lanes])
        rf = sch.rfactor(ki, factor_axis=3)
        zr, jr, ir, kor, kir = sch.get_loops(rf)
        sch.parallel(sch.fuse(zr, jr))
        sch.vectorize(kir)
        for name in ("acc", "C"):
            loops = sch.get_loops(sch.get_sblock(name))
            sch.parallel(sch.fuse(loops[0], loops[1]))
        _KERNELS[key] = build(sch.mod, f"bmm_nt_{dt}_k{k}")
    return _KERNELS[key]


def bmm_into(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """c[i] = a[i] @ b[i] for a [Bt, M, K], b [Bt, K, N], c [Bt, M, N] (views): the
    kernel takes compact tensors, so strided ones are laid out first."""
    fn = _kernel(a.dtype, a.shape[2])
    bt_nk = b.transpose(1, 2)  # nn.Linear weights come back to their own compact [N, K] here
    target = c if c.is_contiguous() else torch.empty(c.shape, dtype=c.dtype)
    if a.shape[1] and b.shape[2]:
        fn(a.contiguous(), bt_nk.contiguous(), target)
    if target is not c:
        c.copy_(target)
    return c


def linear(x: torch.Tensor, w: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    return contraction.linear(x, w, bmm_into, out)


def einsum(spec: str, x: torch.Tensor, y: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    return contraction.einsum(spec, x, y, bmm_into, out)
