"""Row-fusion groups as TensorIR: the same regions the Triton backend fuses (see
dsc.codegen.schedule), generated from the IR's expressions with TVM's tensor expressions.

Each node's value is a function from an index tuple to a float32 expression, so a
slice or concat is an index shift, RoPE reads its partner column by evaluating its
operand there, and only the row reductions (RMSNorm's sum of squares, normalize_sum's
sum) become stages of their own. Every value is rounded to its IR dtype where the
reference rounds. The schedule runs rows in parallel.
"""

from __future__ import annotations

import sympy
import torch

from dsc.codegen.schedule import Group
from dsc.codegen.tvm.build import build, require_tvm, store_as
from dsc.errors import DscError
from dsc.ir.interpreter import concrete
from dsc.ir.node import Node
from dsc.ir.ops.rope import rope_tables
from dsc.ir.types import to_torch

TVM_DTYPES = {"f32": "float32", "bf16": "bfloat16", "f16": "float16", "i32": "int32", "i64": "int64",
              "u8": "uint8"}


class _Expr:
    def __init__(self, group: Group):
        tvm = require_tvm()
        self.tvm, self.te = tvm, tvm.te
        self.region = {id(n) for n in group.nodes}
        self.vars: dict[str, object] = {}
        self.loads: list[tuple[Node, object]] = []  # external nodes and their placeholders
        self.tables: list[tuple[Node, object]] = []  # rope nodes and their frequency placeholders
        self.memo: dict[int, object] = {}
        self.stages: list[str] = []  # reduction stages, scheduled beside the output

    def dim(self, d):
        if isinstance(d, int):
            return d
        e = sympy.sympify(d)
        if e.is_Integer:
            return int(e)
        if e.is_Symbol:
            return self.vars.setdefault(e.name, self.te.var(e.name, "int64"))
        if e.is_Mul or e.is_Add:
            parts = [self.dim(a) for a in e.args]
            out = parts[0]
            for p in parts[1:]:
                out = out * p if e.is_Mul else out + p
            return out
        raise DscError(f"tvm row kernels: cannot express the dim {d}")

    def placeholder(self, n: Node):
        for m, p in self.loads:
            if m is n:
                return p
        p = self.te.placeholder([self.dim(d) for d in n.shape], TVM_DTYPES[n.dtype.name], name=f"in{len(self.loads)}")
        self.loads.append((n, p))
        return p

    def f32(self, x):
        return x.astype("float32")

    def round(self, x, dt: str):
        """x rounded to dtype dt, kept in float32 (see build.store_as)."""
        return x if dt == "f32" else store_as(x, TVM_DTYPES[dt]).astype("float32")

    def value(self, n: Node, user_rank: int):
        """A function idx -> float32 expression of n (idx has user_rank entries)."""
        if id(n) not in self.region:
            p = self.placeholder(n)
            shape = n.shape

            def load(idx):
                tail = idx[len(idx) - len(shape):]
                return self.f32(p[tuple(0 if s == 1 else i for s, i in zip(shape, tail))])
            return load
        if id(n) not in self.memo:
            self.memo[id(n)] = self.compute(n)
        return self.memo[id(n)]

    def row_sum(self, fn, lead_shape, width: int, name: str):
        r = self.te.reduce_axis((0, width), name=f"r_{name}")
        self.stages.append(name)
        return self.te.compute([self.dim(d) for d in lead_shape],
                               lambda *lead: self.te.sum(fn(tuple(lead) + (r,)), axis=r), name=name)

    def compute(self, n: Node):
        te, tir = self.te, self.tvm.tirx
        rank, dt, width = n.type.rank, n.dtype.name, n.shape[-1]
        src = [self.value(s, rank) for s in n.srcs]
        if n.op == "cast":
            return lambda idx: self.round(src[0](idx), dt)
        if n.op in ("add", "mul"):
            def narrow(s, fn):  # a width-1 operand broadcasts along the row
                return (lambda idx: fn(idx[:-1] + (0,))) if s.shape[-1] == 1 and width != 1 else fn
            a, b = (narrow(s, fn) for s, fn in zip(n.srcs, src))
            return (lambda idx: self.round(a(idx) + b(idx), dt)) if n.op == "add" else \
                (lambda idx: self.round(a(idx) * b(idx), dt))
        if n.op == "scale":
            return lambda idx: self.round(src[0](idx) * n.attrs["factor"], dt)
        if n.op == "silu":
            return lambda idx: self.round(src[0](idx) / (1.0 + te.exp(-src[0](idx))), dt)
        if n.op == "rms_norm":
            x, w = src
            ss = self.row_sum(lambda idx: x(idx) * x(idx), n.shape[:-1], width, f"ss{len(self.memo)}")
            eps = n.attrs["eps"]
            return lambda idx: self.round(
                self.round(x(idx) * tir.rsqrt(ss[idx[:-1]] / width + eps), dt) * w(idx), dt)
        if n.op == "normalize_sum":
            x = src[0]
            total = self.row_sum(x, n.shape[:-1], width, f"sum{len(self.memo)}")
            eps = n.attrs["eps"]
            return lambda idx: self.round(x(idx) / self.round(self.round(total[idx[:-1]], dt) + eps, dt), dt)
        if n.op == "rope":
            return self.rope(n, src[0])
        if n.op == "concat":
            pieces, off = [], 0
            for s, fn in zip(n.srcs, src):
                pieces.append((off, s.shape[-1], fn))
                off += s.shape[-1]

            def cat(idx):
                c = idx[-1]
                out = pieces[-1][2](idx[:-1] + (c - pieces[-1][0],))
                for start, w, fn in reversed(pieces[:-1]):
                    out = tir.if_then_else(c < start + w, fn(idx[:-1] + (c - start,)), out)
                return out
            return cat
        raise DscError(f"tvm row kernels have no expression for op {n.op!r}")

    def rope(self, n: Node, x):
        tir, te = self.tvm.tirx, self.te
        half = n.shape[-1] // 2
        freq = te.placeholder([half], "float32", name=f"freq{len(self.tables)}")
        self.tables.append((n, freq))
        pos = self.placeholder(n.srcs[1])
        _, mscale = rope_tables(n.shape[-1], n.attrs)
        interleave = n.attrs["interleave"]

        def rotate(idx):
            c = idx[-1]
            h = tir.floormod(c, half)
            i1, i2 = (2 * h, 2 * h + 1) if interleave else (h, h + half)
            x1, x2 = x(idx[:-1] + (i1,)), x(idx[:-1] + (i2,))
            angle = pos[idx[0], idx[1]].astype("float32") * freq[h]
            cos, sin = te.cos(angle) * mscale, te.sin(angle) * mscale
            return self.round(tir.Select(c < half, x1 * cos - x2 * sin, x2 * cos + x1 * sin), n.dtype.name)
        return rotate


class RowKernel:
    """A compiled row region: call with the group's tensors by node id."""

    def __init__(self, group: Group):
        if group.kind != "rowwise":
            raise DscError(f"the tvm backend has no {group.kind!r} kernels yet (the paged cache comes next)")
        tvm = require_tvm()
        e = _Expr(group)
        root = group.root
        fn = e.value(root, root.type.rank)
        out = e.te.compute([e.dim(d) for d in root.shape],
                           lambda *idx: store_as(fn(tuple(idx)), TVM_DTYPES[root.dtype.name]), name="out")
        args = [p for _, p in e.loads] + [f for _, f in e.tables] + [out]
        sch = tvm.s_tir.Schedule(tvm.IRModule({"main": e.te.create_prim_func(args)}))
        for name in e.stages + ["out"]:  # rows in parallel
            loops = sch.get_loops(sch.get_sblock(name))
            if len(loops) > 1:
                sch.parallel(loops[0])
        self.group, self.loads, self.tables = group, e.loads, e.tables
        self.rope = [rope_tables(n.shape[-1], n.attrs)[0] for n, _ in e.tables]
        self.fn = build(sch.mod, "row_" + "_".join(n.op for n in reversed(group.nodes)))

    def __call__(self, values: dict, env: dict, out: torch.Tensor | None = None) -> torch.Tensor:
        root = self.group.root
        shape = [concrete(d, env) for d in root.shape]
        dtype = to_torch(root.dtype)
        result = out if out is not None and out.is_contiguous() else torch.empty(shape, dtype=dtype)
        args = [values[id(n)].contiguous() for n, _ in self.loads] + [f.contiguous() for f in self.rope]
        self.fn(*args, result)
        if out is not None and result is not out:
            out.copy_(result)
            return out
        return result
