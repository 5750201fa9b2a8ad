"""Row-fusion groups as TensorIR: the same regions the Triton backend fuses (see
dsc.codegen.schedule), generated from the IR's expressions with TVM's tensor expressions.

Each node's value is a function from an index tuple to a float32 expression, so a
slice or concat is an index shift, RoPE reads its partner column by evaluating its
operand there, and only the row reductions (RMSNorm's sum of squares, normalize_sum's
sum, the FP8 pack's group maxima) become stages of their own. Every value is rounded to
its IR dtype where the reference rounds. The schedule runs rows in parallel.

paged_gather reads each row's pages through the block table (and with kv_unpack_fp8
decodes the FP8 row as it reads). paged_append computes its new rows (packing them to
FP8 bytes when the region ends in kv_pack_fp8) and a second small kernel scatters them
into the pages: a TE stage cannot write through the block table in place.
"""

from __future__ import annotations

import sympy
import torch

from dsc.codegen.kinds import ROW_KINDS
from dsc.codegen.paged import check_pages_hold
from dsc.codegen.row_emitter import RowEmitter
from dsc.codegen.schedule import Group
from dsc.codegen.tvm import fp8
from dsc.codegen.tvm.kernels import KERNELS
from dsc.codegen.tvm.build import (TVM_DTYPES, KernelDef, artifact, bf16_bits, build, compiled, deliver, loop_kinds,
                                   output_buffer, require_tvm, store_as)
from dsc.errors import DscError
from dsc.ir.interpreter import concrete
from dsc.ir.node import Node
from dsc.ir.ops.rope import rope_tables
from dsc.ir.types import to_torch



class _Expr(RowEmitter):
    backend = "tvm"

    def __init__(self, group: Group):
        tvm = require_tvm()
        self.tvm, self.te = tvm, tvm.te
        self.region = {id(n) for n in group.nodes}
        self.vars: dict[str, object] = {}
        self.loads: list[tuple[Node, object]] = []  # external nodes and their placeholders
        self.tables: list[tuple[Node, object]] = []  # rope nodes and their frequency placeholders
        self.memo: dict[int, object] = {}
        self.stages: list[str] = []  # reduction stages, scheduled beside the output
        # the kernel's arguments in the canonical order (row_operands), which a launcher
        # without TVM derives from the group alone
        loads, ropes = row_operands(group)
        for n in loads:
            self.placeholder(n)
        for n in ropes:
            self.tables.append((n, self.te.placeholder([n.shape[-1] // 2], "float32", name=f"freq{len(self.tables)}")))

    def dim(self, d):
        """A TVM extent for an IR dim: ints stay ints; a symbol, or a compound of symbols
        (64*P), is one int64 var of that name (TVM binds each var from the first buffer
        shape that holds it, and cannot solve a compound shape for its symbols)."""
        if isinstance(d, int):
            return d
        e = sympy.sympify(d)
        if e.is_Integer:
            return int(e)
        name = str(e) if e.is_Symbol else "d_" + "".join(ch if ch.isalnum() else "_" for ch in str(e).replace(" ", ""))
        return self.vars.setdefault(name, self.te.var(name, "int64"))

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
            self.memo[id(n)] = self.emit(n)
        return self.memo[id(n)]

    def row_sum(self, fn, lead_shape, width: int, name: str):
        r = self.te.reduce_axis((0, width), name=f"r_{name}")
        self.stages.append(name)
        return self.te.compute([self.dim(d) for d in lead_shape],
                               lambda *lead: self.te.sum(fn(tuple(lead) + (r,)), axis=r), name=name)

    # -- one emitter per op: EMIT below ----------------------------------------------------
    def _cast(self, n: Node):
        x, dt = self.value(n.srcs[0], n.type.rank), n.dtype.name
        return lambda idx: self.round(x(idx), dt)

    def _binary(combine):
        def emit(self, n: Node):
            def narrow(s):  # a width-1 operand broadcasts along the row
                fn = self.value(s, n.type.rank)
                return (lambda idx: fn(idx[:-1] + (0,))) if s.shape[-1] == 1 and n.shape[-1] != 1 else fn
            a, b = (narrow(s) for s in n.srcs)
            dt = n.dtype.name
            return lambda idx: self.round(combine(a(idx), b(idx)), dt)
        return emit

    def _scale(self, n: Node):
        x, dt, factor = self.value(n.srcs[0], n.type.rank), n.dtype.name, n.attrs["factor"]
        return lambda idx: self.round(x(idx) * factor, dt)

    def _silu(self, n: Node):
        x, dt, te = self.value(n.srcs[0], n.type.rank), n.dtype.name, self.te
        return lambda idx: self.round(x(idx) / (1.0 + te.exp(-x(idx))), dt)

    def _rms_norm(self, n: Node):
        x, w = (self.value(s, n.type.rank) for s in n.srcs)
        width, dt, eps, tir = n.shape[-1], n.dtype.name, n.attrs["eps"], self.tvm.tirx
        ss = self.row_sum(lambda idx: x(idx) * x(idx), n.shape[:-1], width, f"ss{len(self.memo)}")
        return lambda idx: self.round(
            self.round(x(idx) * tir.rsqrt(ss[idx[:-1]] / width + eps), dt) * w(idx), dt)

    def _normalize_sum(self, n: Node):
        x = self.value(n.srcs[0], n.type.rank)
        width, dt, eps = n.shape[-1], n.dtype.name, n.attrs["eps"]
        total = self.row_sum(x, n.shape[:-1], width, f"sum{len(self.memo)}")
        return lambda idx: self.round(x(idx) / self.round(self.round(total[idx[:-1]], dt) + eps, dt), dt)

    def _rope(self, n: Node):
        return self.rope(n, self.value(n.srcs[0], n.type.rank))

    def _concat(self, n: Node):
        tir = self.tvm.tirx
        pieces, off = [], 0
        for s in n.srcs:
            pieces.append((off, s.shape[-1], self.value(s, n.type.rank)))
            off += s.shape[-1]

        def cat(idx):
            c = idx[-1]
            out = pieces[-1][2](idx[:-1] + (c - pieces[-1][0],))
            for start, w, fn in reversed(pieces[:-1]):
                out = tir.if_then_else(c < start + w, fn(idx[:-1] + (c - start,)), out)
            return out
        return cat

    def _paged_gather(self, n: Node):
        return lambda idx: self.f32(self.paged_row(n, idx)(idx[-1]))

    def _kv_unpack_fp8(self, n: Node):  # gathered and dequantized in one pass
        self.value(n.srcs[0], n.type.rank)  # the gather's entry, as every op's operands have one
        rank, group, dt = n.attrs["rank"], n.attrs["group"], n.dtype.name
        return lambda idx: self.round(fp8.unpack_latent(self.paged_row(n.srcs[0], idx), idx[-1], rank, group), dt)

    def paged_row(self, gather: Node, idx):
        """column j -> the raw cache element j of row (idx[-3], idx[-2]) of a paged_gather."""
        cache, table = (self.placeholder(s) for s in gather.srcs)
        page = gather.srcs[0].shape[1]
        b, s = idx[-3], idx[-2]
        block = table[b, s // page].astype("int64")
        return lambda j: cache[block, s % page, j]

    def packed(self, pack: Node):
        """kv_pack_fp8's bytes of a row: a function idx -> uint8 expression (column idx[-1])."""
        tir = self.tvm.tirx
        rank, group = pack.attrs["rank"], pack.attrs["group"]
        n_scales, rope = rank // group, pack.srcs[0].shape[-1] - rank
        v = self.value(pack.srcs[0], pack.type.rank)
        r = self.te.reduce_axis((0, group), name="r_amax")
        self.stages.append("amax")
        amax = self.te.compute([self.dim(d) for d in pack.shape[:-1]] + [n_scales], lambda *li: self.te.max(
            tir.abs(v(tuple(li[:-1]) + (li[-1] * group + r,))), axis=r), name="amax")

        def scale(lead, g):
            return tir.max(amax[lead + (g,)], tir.const(fp8.MIN_AMAX, "float32")) / fp8.E4M3_MAX

        def byte(idx):
            lead, c = tuple(idx[:-1]), idx[-1]
            cq = tir.min(c, rank - 1)  # every branch of the Select is evaluated: keep each in range
            q = fp8.encode_e4m3(fp8.round_e4m3(v(lead + (cq,)) / scale(lead, cq // group)))
            j = tir.min(tir.max(c - rank, 0), 4 * n_scales - 1)
            s_byte = fp8.byte_of_f32(scale(lead, j // 4), j % 4)
            k = tir.min(tir.max(c - rank - 4 * n_scales, 0), 2 * rope - 1)
            bits = bf16_bits(v(lead + (rank + k // 2,)))
            r_byte = ((bits >> (tir.const(16, "uint32") + (k % 2).astype("uint32") * tir.const(8, "uint32")))
                      & tir.const(255, "uint32")).astype("uint8")
            return tir.Select(c < rank, q, tir.Select(c < rank + 4 * n_scales, s_byte, r_byte))
        return byte

    def rope(self, n: Node, x):
        tir, te = self.tvm.tirx, self.te
        half = n.shape[-1] // 2
        freq = next(f for m, f in self.tables if m is n)
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

    EMIT = {"cast": _cast, "add": _binary(lambda a, b: a + b), "mul": _binary(lambda a, b: a * b), "scale": _scale,
            "silu": _silu, "rms_norm": _rms_norm, "rope": _rope, "normalize_sum": _normalize_sum, "concat": _concat,
            "paged_gather": _paged_gather, "kv_unpack_fp8": _kv_unpack_fp8}
    del _binary


def value_node(group: Group) -> Node:
    """The value a row group computes: paged_append's new rows, else the root."""
    return group.root.srcs[3] if group.root.op == "paged_append" else group.root


def row_operands(group: Group) -> tuple[list[Node], list[Node]]:
    """(loads, rope nodes) of a row group's kernel, in argument order: the group inputs
    its value reads, in group.inputs order, then one frequency table per RoPE node, in
    group.nodes order. Derived from the IR alone."""
    inside = {id(n) for n in group.nodes}
    v = value_node(group)
    reach, stack = set(), [v] if id(v) in inside else []
    while stack:
        n = stack.pop()
        if id(n) in reach:
            continue
        reach.add(id(n))
        stack.extend(s for s in n.srcs if id(s) in inside)
    read = {id(s) for n in group.nodes if id(n) in reach for s in n.srcs}
    loads = [s for s in group.inputs if id(s) in read and id(s) not in inside]
    return loads, [n for n in group.nodes if id(n) in reach and n.op == "rope"]


def rows_key(group: Group) -> str:
    """A stable name of a row group's kernel across processes (the artifact manifest's
    key): every fused node's op, attributes and type, and where each operand comes from."""
    import hashlib

    pos = {id(n): f"r{i}" for i, n in enumerate(group.nodes)}
    pos.update({id(n): f"i{i}" for i, n in enumerate(group.inputs)})
    text = ";".join(f"{n.op}{sorted(n.attrs.items())}{n.type}({','.join(pos[id(s)] for s in n.srcs)})"
                    for n in group.nodes)
    text += "|" + ";".join(str(n.type) for n in group.inputs)
    return "define_rows[" + hashlib.sha256(text.encode()).hexdigest()[:16] + "]"


def define_rows(group: Group) -> tuple[KernelDef | None, _Expr]:
    """The row kernel of a group: its value (for paged_append: the new rows, FP8-packed
    when the region ends in kv_pack_fp8) for every row; None when paged_append's rows
    come from outside the region (only the scatter runs)."""
    e = _Expr(group)
    v = value_node(group)
    if id(v) not in e.region:
        return None, e
    shape = [e.dim(d) for d in v.shape]
    if v.op == "kv_pack_fp8":
        byte = e.packed(v)
        out = e.te.compute(shape, lambda *idx: byte(tuple(idx)), name="out")
    else:
        fn = e.value(v, v.type.rank)
        out = e.te.compute(shape, lambda *idx: store_as(fn(tuple(idx)), TVM_DTYPES[v.dtype.name]), name="out")
    if [n for n, _ in e.loads] != row_operands(group)[0]:
        raise DscError(f"{group}: the row kernel read an operand row_operands does not list")
    args = [p for _, p in e.loads] + [f for _, f in e.tables] + [out]
    stages = e.stages + ["out"]

    def schedule(sch):
        for name in stages:  # rows in parallel
            loops = sch.get_loops(sch.get_sblock(name))
            if len(loops) > 1:
                sch.parallel(loops[0])
    return KernelDef.from_te("row_" + "_".join(n.op for n in reversed(group.nodes)), args, schedule), e


def define_scatter(dtype: str, width: int, page: int, target: str = "llvm") -> KernelDef:
    """rows [B, T, width] written to slots lens[b] + t of each row's pages, in place."""
    require_tvm()
    from tvm.script import tirx as T

    loops = loop_kinds(target)

    @T.prim_func
    def main(c: T.handle, tb: T.handle, ln: T.handle, r: T.handle):
        nb, b, p, t = T.int64(), T.int64(), T.int64(), T.int64()
        cache = T.match_buffer(c, (nb, page, width), dtype)
        table = T.match_buffer(tb, (b, p), "int32")
        lens = T.match_buffer(ln, (b,), "int32")
        rows = T.match_buffer(r, (b, t, width), dtype)
        for bt in loops.par(b * t):
            pos = T.int64(lens[bt // t]) + bt % t
            blk = T.int64(table[bt // t, pos // page])
            for d in range(width):
                cache[blk, pos % page, d] = rows[bt // t, bt % t, d]

    return KernelDef(f"paged_scatter_{dtype}_{width}_p{page}", main)


@KERNELS.provides("rows")
class RowKernel:
    """A compiled row region (kinds rowwise, paged_gather, paged_append): call with the
    group's tensors by node id."""

    def __init__(self, group: Group):
        if group.kind not in ROW_KINDS:
            raise DscError(f"tvm row kernels do not cover group {group.kind!r}")
        root = group.root
        self.value_node = value_node(group)
        self.scatter = None
        if root.op == "paged_append":
            cache = root.srcs[0]
            self.scatter = compiled(define_scatter, TVM_DTYPES[cache.dtype.name], cache.shape[2], cache.shape[1])
        self.group = group
        loads, ropes = row_operands(group)
        self.loads = loads
        self.rope = [rope_tables(n.shape[-1], n.attrs)[0] for n in ropes]
        self._rope_on: dict = {}  # the tables moved to each device once
        self.fn = None
        if id(self.value_node) in {id(n) for n in group.nodes}:
            self.fn = artifact(rows_key(group))
            if self.fn is None:
                defn = define_rows(group)[0]
                self.fn = build(defn.cpu_module(), defn.name)

    def __call__(self, values: dict, env: dict, out: torch.Tensor | None = None) -> torch.Tensor:
        v = self.value_node
        if self.fn is None:
            rows = values[id(v)].contiguous()
        else:
            shape = [concrete(d, env) for d in v.shape]
            dtype = to_torch(v.dtype)
            device = values[id(self.group.inputs[0])].device
            rows = output_buffer(out if self.scatter is None else None, shape, dtype, device)
            if device not in self._rope_on:
                self._rope_on[device] = [f.to(device).contiguous() for f in self.rope]
            args = [values[id(n)].contiguous() for n in self.loads] + self._rope_on[device]
            if rows.numel():
                self.fn(*args, rows)
        if self.scatter is None:
            return deliver(rows, out)
        cache, table, lens = (values[id(s)] for s in self.group.root.srcs[:3])
        check_pages_hold(table, lens, cache.shape[1], rows.shape[1])
        if not cache.is_contiguous():
            raise DscError("paged_append: the tvm backend writes into a compact cache only")
        if rows.numel():
            self.scatter(cache, table.to(torch.int32).contiguous(), lens.to(torch.int32).contiguous(), rows)
        return cache


@KERNELS.lists(*ROW_KINDS)
def _defs(group: Group, d) -> list:
    rows = define_rows(group)[0]
    defs = [(rows_key(group), rows)] if rows is not None else []
    if group.kind == "paged_append":
        cache = group.root.srcs[0]
        defs.append(d(define_scatter, TVM_DTYPES[cache.dtype.name], cache.shape[2], cache.shape[1]))
    return defs
