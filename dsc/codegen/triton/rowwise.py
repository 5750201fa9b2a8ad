"""Generated row kernels: a fused region of row ops emitted as one Triton kernel.

A region (see dsc.codegen.schedule) computes one value of shape [L0, .., Lk-1, W]
whose every row is independent: elementwise ops, casts, RMSNorm (a reduction over the
row), RoPE, last-axis concat. Each program handles BLOCK_R rows as a [BLOCK_R, BLOCK_W]
tile. The source is generated from the IR: every node's value is a Triton expression
of the column index, so a slice or concat is an index shift, RoPE reads its partner
column by evaluating its operand at the partner index, and values outside the region
are strided loads (stride 0 where they broadcast). Math runs in float32 and each value
is rounded to its IR dtype where the reference rounds, so the kernel and the
interpreter agree to the last bit up to the order of the row reduction.

The root is stored to a fresh buffer, or (paged_append) straight into the slots of
the paged cache; paged_gather is a region whose only value is a paged load.
"""

from __future__ import annotations

import hashlib

import torch

from dsc.codegen.paged import check_pages_hold
from dsc.codegen.row_emitter import RowEmitter
from dsc.codegen.schedule import Group
from dsc.codegen.kinds import ROW_KINDS
from dsc.codegen.triton.build import TRITON_TYPES, KernelSpec, load_kernel, next_pow2, with_helpers
from dsc.codegen.triton.kernels import KERNELS
from dsc.errors import DscError
from dsc.ir.interpreter import concrete
from dsc.ir.node import Node
from dsc.ir.ops.rope import rope_tables
from dsc.ir.types import to_torch

_TL = {"f32": "tl.float32", "bf16": "tl.bfloat16", "f16": "tl.float16"}


class _Emitter(RowEmitter):
    backend = "triton"

    def __init__(self, group: Group):
        self.group = group
        self.region = {id(n) for n in group.nodes}
        self.root = group.root
        self.lines: list[str] = []
        self.memo: dict[tuple, str] = {}
        self.loads: list[tuple[Node, str]] = []  # (external node, alignment "right" | "left")
        self.tables: list[Node] = []  # rope nodes: one inverse-frequency table each
        self.count = 0

    def tmp(self, expr: str) -> str:
        self.count += 1
        name = f"v{self.count}"
        self.lines.append(f"    {name} = {expr}")
        return name

    # -- external tensors ---------------------------------------------------------------
    def operand(self, n: Node, align: str) -> int:
        for i, (m, a) in enumerate(self.loads):
            if m is n and a == align:
                return i
        self.loads.append((n, align))
        return len(self.loads) - 1

    def row_offset(self, i: int, rank_of_user: int) -> str:
        """Offset of row (idx0, .., idx{k-1}) in external tensor i, [BLOCK_R, 1]."""
        key = ("off", i)
        if key not in self.memo:
            n, align = self.loads[i]
            terms = []
            if align == "right":  # dims aligned to the user's trailing dims; the last is the column
                shift = rank_of_user - n.type.rank
                terms = [f"idx{j + shift} * s{i}_{j}" for j in range(n.type.rank - 1)]
            else:  # "left": per-row values indexed by the leading dims (rope's positions)
                terms = [f"idx{j} * s{i}_{j}" for j in range(n.type.rank)]
            self.memo[key] = self.tmp(" + ".join(terms) if terms else "rows * 0")
        return self.memo[key]

    def load(self, n: Node, col: str, mask: str, user_rank: int) -> str:
        i = self.operand(n, "right")
        off = self.row_offset(i, user_rank)
        width = n.shape[-1]
        col = "0 * c" if width == 1 else col
        return self.tmp(f"tl.load(in{i} + {off} + ({col}) * s{i}_{n.type.rank - 1}, "
                        f"mask=row_ok & ({mask}) & ({col} < {width}), other=0.0).to(tl.float32)")

    # -- values -------------------------------------------------------------------------
    def value(self, n: Node, col: str, mask: str, user_rank: int) -> str:
        """A [BLOCK_R, BLOCK_W] float32 expression: n at column `col` of each row."""
        key = (id(n), col, mask)
        if key in self.memo:
            return self.memo[key]
        if id(n) not in self.region:
            v = self.load(n, col, mask, user_rank)
        else:
            v = self.emit(n, col, mask)
        self.memo[key] = v
        return v

    def round(self, expr: str, dtype: str) -> str:
        if dtype == "f32":
            return self.tmp(expr)
        if dtype not in _TL:
            raise DscError(f"row kernels compute float values, got dtype {dtype}")
        return self.tmp(f"to_out({expr}, {_TL[dtype]}).to(tl.float32)")

    # -- one emitter per op: EMIT below ----------------------------------------------------
    def _cast(self, n: Node, col: str, mask: str) -> str:
        return self.round(self.value(n.srcs[0], col, mask, n.type.rank), n.dtype.name)

    def _binary(symbol: str):
        def emit(self, n: Node, col: str, mask: str) -> str:
            a, b = (self.value(s, "0 * c" if s.shape[-1] == 1 and n.shape[-1] != 1 else col, mask, n.type.rank)
                    for s in n.srcs)  # a width-1 operand broadcasts along the row
            return self.round(f"{a} {symbol} {b}", n.dtype.name)
        return emit

    def _scale(self, n: Node, col: str, mask: str) -> str:
        return self.round(f"{self.value(n.srcs[0], col, mask, n.type.rank)} * {n.attrs['factor']!r}", n.dtype.name)

    def _silu(self, n: Node, col: str, mask: str) -> str:
        x = self.value(n.srcs[0], col, mask, n.type.rank)
        return self.round(f"{x} / (1.0 + tl.exp(-{x}))", n.dtype.name)

    def _rms_norm(self, n: Node, col: str, mask: str) -> str:
        x, w = n.srcs
        rank, width, dt = n.type.rank, n.shape[-1], n.dtype.name
        full = self.value(x, "c", f"c < {width}", rank)
        key = ("inv_rms", id(n))
        if key not in self.memo:
            ss = self.tmp(f"tl.sum(tl.where(c < {width}, {full} * {full}, 0.0), axis=1)[:, None]")
            self.memo[key] = self.tmp(f"1.0 / tl.sqrt({ss} / {width} + {n.attrs['eps']!r})")
        normed = self.round(f"{self.value(x, col, mask, rank)} * {self.memo[key]}", dt)
        return self.round(f"{normed} * {self.value(w, col, mask, rank)}", dt)

    def _normalize_sum(self, n: Node, col: str, mask: str) -> str:
        rank, width, dt = n.type.rank, n.shape[-1], n.dtype.name
        key = ("sum", id(n))
        if key not in self.memo:
            full = self.value(n.srcs[0], "c", f"c < {width}", rank)
            # the reference sums in the value's dtype: the sum and the denominator are rounded
            total = self.round(f"tl.sum(tl.where(c < {width}, {full}, 0.0), axis=1)[:, None]", dt)
            self.memo[key] = self.round(f"{total} + {n.attrs['eps']!r}", dt)
        return self.round(f"{self.value(n.srcs[0], col, mask, rank)} / {self.memo[key]}", dt)

    def _concat(self, n: Node, col: str, mask: str) -> str:
        out, off = "0.0", 0
        pieces = []
        for s in n.srcs:
            w = s.shape[-1]
            inside = f"({col} >= {off}) & ({col} < {off + w})"
            pieces.append((inside, self.value(s, f"({col} - {off})", f"({mask}) & {inside}", n.type.rank)))
            off += w
        for inside, v in reversed(pieces):
            out = f"tl.where({inside}, {v}, {out})"
        return self.tmp(out)

    def _paged_gather(self, n: Node, col: str, mask: str) -> str:
        return self.paged_load(n, col, mask)

    def _kv_unpack_fp8(self, n: Node, col: str, mask: str) -> str:  # gathered and dequantized in one pass
        return self.round(self.paged_load(n.srcs[0], col, mask, unpack=n), n.dtype.name)

    def rope(self, n: Node, col: str, mask: str) -> str:
        x, pos = n.srcs
        d = n.shape[-1]
        half = d // 2
        h = self.tmp(f"({col}) % {half}")
        if n.attrs["interleave"]:
            i1, i2 = f"(2 * {h})", f"(2 * {h} + 1)"
        else:
            i1, i2 = h, f"({h} + {half})"
        x1 = self.value(x, i1, mask, n.type.rank)
        x2 = self.value(x, i2, mask, n.type.rank)
        p = self.operand(pos, "left")
        t = len(self.tables)
        self.tables.append(n)
        position = self.tmp(f"tl.load(in{p} + {self.row_offset(p, 2)}, mask=row_ok, other=0).to(tl.float32)")
        angle = self.tmp(f"{position} * tl.load(freq{t} + {h}, mask={mask}, other=0.0)")
        cos = self.tmp(f"tl.cos({angle}) * mscale{t}")
        sin = self.tmp(f"tl.sin({angle}) * mscale{t}")
        return self.round(f"tl.where(({col}) < {half}, {x1} * {cos} - {x2} * {sin}, {x2} * {cos} + {x1} * {sin})",
                          n.dtype.name)

    def paged_load(self, n: Node, col: str, mask: str, unpack: Node | None = None) -> str:
        # rows of [B, P * PS, D]: idx0 = b, idx1 = position in the row's pages
        page = n.srcs[0].shape[1]
        slot = self.tmp(f"tl.load(table + idx0 * stride_tb + idx1 // {page}, mask=row_ok, other=0).to(tl.int64) "
                        f"* {page} + idx1 % {page}")
        if unpack is None:
            return self.tmp(f"tl.load(cache + {slot} * {n.shape[-1]} + {col}, mask=row_ok & ({mask}), other=0.0)"
                            f".to(tl.float32)")
        # FP8 row (kv_pack_fp8's layout): rank e4m3 bytes, rank / group float32 scales, rope bf16
        rank, group = unpack.attrs["rank"], unpack.attrs["group"]
        row = self.tmp(f"cache + {slot} * {n.shape[-1]}")
        c_ok = f"row_ok & ({mask}) & ({col} < {rank})"
        q = self.tmp(f"decode_e4m3(tl.load({row} + {col}, mask={c_ok}, other=0))")
        sc = self.tmp(f"tl.load(({row} + {rank}).to(tl.pointer_type(tl.float32)) + {col} // {group}, mask={c_ok}, "
                      f"other=0.0)")
        r_ok = f"row_ok & ({mask}) & ({col} >= {rank})"
        rope = self.tmp(f"tl.load(({row} + {rank + 4 * (rank // group)}).to(tl.pointer_type(tl.bfloat16)) + "
                        f"({col} - {rank}), mask={r_ok}, other=0.0).to(tl.float32)")
        return self.tmp(f"tl.where({col} < {rank}, {q} * {sc}, {rope})")

    def pack_fp8(self, v: str, pack: Node) -> list[str]:
        """Store lines writing row value v as kv_pack_fp8's bytes at `dst` (a u8 row)."""
        rank, group = pack.attrs["rank"], pack.attrs["group"]
        width = pack.srcs[0].shape[-1]
        lines = ["    scale = tl.zeros_like(" + v + ")"]
        for g in range(rank // group):  # one float32 scale per group of c_kv
            lines += [f"    amax = tl.max(tl.where((c >= {g * group}) & (c < {(g + 1) * group}), tl.abs({v}), 0.0), "
                      f"axis=1)[:, None]",
                      "    s = tl.maximum(amax, 1e-12) / 448.0",
                      f"    scale = tl.where(c // {group} == {g}, s, scale)",
                      f"    tl.store((dst + {rank}).to(tl.pointer_type(tl.float32)) + {g} + 0 * c, s + 0.0 * {v}, "
                      f"mask=row_ok & (c == 0))"]
        lines += [f"    q = encode_e4m3(round_e4m3({v} / tl.where(c < {rank}, scale, 1.0)))",
                  f"    tl.store(dst + c, q, mask=row_ok & (c < {rank}))",
                  f"    tl.store((dst + {rank + 4 * (rank // group)}).to(tl.pointer_type(tl.bfloat16)) + (c - {rank}), "
                  f"to_out({v}, tl.bfloat16), mask=row_ok & (c >= {rank}) & (c < {width}))"]
        return lines

    EMIT = {"cast": _cast, "add": _binary("+"), "mul": _binary("*"), "scale": _scale, "silu": _silu,
            "rms_norm": _rms_norm, "rope": rope,
            "normalize_sum": _normalize_sum, "concat": _concat, "paged_gather": _paged_gather,
            "kv_unpack_fp8": _kv_unpack_fp8}
    del _binary


def generate(group: Group) -> tuple[KernelSpec, "RowKernel"]:
    root = group.root
    value_node = root.srcs[3] if root.op == "paged_append" else root
    pack = value_node if value_node.op == "kv_pack_fp8" and id(value_node) in {id(n) for n in group.nodes} else None
    if pack is not None:  # compute the latent row; the store packs it
        value_node = pack.srcs[0]
    k = value_node.type.rank - 1
    e = _Emitter(group)
    width = value_node.shape[-1]
    v = e.value(value_node, "c", f"c < {width}", value_node.type.rank)

    ptr = lambda n: "*" + TRITON_TYPES[n.dtype.name]  # noqa: E731
    if root.op == "paged_append":
        cache, table, lens = root.srcs[:3]
        params = {"cache": ptr(cache), "table": ptr(table), "stride_tb": "i32", "lens": ptr(lens)}
    else:
        params = {"out": ptr(root)}
    gather = root if root.op == "paged_gather" else root.srcs[0] if root.op == "kv_unpack_fp8" else None
    if gather is not None:
        params.update({"cache": ptr(gather.srcs[0]), "table": ptr(gather.srcs[1]), "stride_tb": "i32"})
    for i, (n, _) in enumerate(e.loads):
        params[f"in{i}"] = ptr(n)
        params.update({f"s{i}_{j}": "i32" for j in range(n.type.rank)})
    for t in range(len(e.tables)):
        params.update({f"freq{t}": "*fp32", f"mscale{t}": "fp32"})
    params.update({f"L{j}": "i32" for j in range(k)})
    params.update({"n_rows": "i32", "BLOCK_R": "constexpr", "BLOCK_W": "constexpr"})

    body = ["    rows = (tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)[:, None]).to(tl.int64)",
            "    c = tl.arange(0, BLOCK_W)[None, :]",
            "    row_ok = rows < n_rows",
            "    rest = rows"]
    for j in reversed(range(k)):
        body += [f"    idx{j} = rest % L{j}", f"    rest = rest // L{j}"]
    body += e.lines
    store_mask = f"row_ok & (c < {width})"
    if root.op == "paged_append":
        page, row_width = root.shape[1], root.shape[2]
        body += ["    position = tl.load(lens + idx0, mask=row_ok, other=0) + idx1",
                 f"    page = tl.load(table + idx0 * stride_tb + position // {page}, mask=row_ok, other=0)",
                 f"    dst = cache + (page.to(tl.int64) * {page} + position % {page}) * {row_width}"]
        if pack is not None:
            body += e.pack_fp8(v, pack)
        else:
            body += [f"    tl.store(dst + c, to_out({v}, cache.dtype.element_ty), mask={store_mask})"]
    else:
        body += [f"    tl.store(out + rows * {width} + c, to_out({v}, out.dtype.element_ty), mask={store_mask})"]
    arglist = ", ".join(p + (": tl.constexpr" if t == "constexpr" else "") for p, t in params.items())
    name = "row_" + "_".join(n.op for n in reversed(group.nodes))[:60]
    source = with_helpers("import triton\nimport triton.language as tl\n\n\n@triton.jit\n"
              f"def {name}({arglist}):\n" + "\n".join(body) + "\n")
    digest = hashlib.sha256(source.encode()).hexdigest()[:8]
    source = source.replace(f"def {name}(", f"def {name}_{digest}(")
    spec = KernelSpec(f"{name}_{digest}", source, "(cdiv(rows, BLOCK_R),)")
    return spec, RowKernel(spec, group, value_node, e.loads, e.tables, params)


class RowKernel:
    """Launches one generated row kernel on the tensors of its group's inputs."""

    def __init__(self, spec: KernelSpec, group: Group, value_node: Node, loads, tables, params: dict):
        self.spec, self.group, self.value_node, self.params = spec, group, value_node, params
        self.loads, self.tables = loads, tables
        self.rope = [rope_tables(n.shape[-1], n.attrs) for n in tables]
        self._rope_on: dict[torch.device, list] = {}  # the tables moved to each device once, not per call
        self.width = value_node.shape[-1]

    def signature(self, block_r: int = 4) -> tuple[dict, dict]:
        """Triton signature and constexprs, for compile checks and the manifest."""
        const = {"BLOCK_R": block_r, "BLOCK_W": next_pow2(self.width)}
        return dict(self.params), const

    def __call__(self, values: dict[int, torch.Tensor], env: dict, out: torch.Tensor | None = None) -> torch.Tensor:
        """values: tensors by node id; env: the call's symbol bindings."""
        root = self.group.root
        shape = [concrete(d, env) for d in root.shape]
        lead = [concrete(d, env) for d in self.value_node.shape[:-1]]
        n_rows = 1
        for d in lead:
            n_rows *= d
        first = values[id(self.group.inputs[0])]
        device = first.device
        args: list = []
        if root.op == "paged_append":
            cache, table, lens = (values[id(s)] for s in root.srcs[:3])
            check_pages_hold(table, lens, cache.shape[1], lead[1])
            out = cache
            args += [cache, table, table.stride(0), lens]
        else:
            if out is None:
                out = torch.empty(shape, dtype=to_torch(root.dtype), device=device)
            args.append(out)
            gather = root if root.op == "paged_gather" else root.srcs[0] if root.op == "kv_unpack_fp8" else None
            if gather is not None:
                cache, table = (values[id(s)] for s in gather.srcs)
                args += [cache, table, table.stride(0)]
        for n, _ in self.loads:
            t = values[id(n)]
            args.append(t)
            args += [0 if t.shape[j] == 1 else t.stride(j) for j in range(t.dim())]
        if device not in self._rope_on:
            self._rope_on[device] = [(inv_freq.to(device), float(mscale)) for inv_freq, mscale in self.rope]
        for inv_freq, mscale in self._rope_on[device]:
            args += [inv_freq, mscale]
        args += list(lead) + [n_rows]
        bw = next_pow2(self.width)
        br = max(1, min(64, 4096 // bw, next_pow2(n_rows)))
        if n_rows:
            load_kernel(self.spec, device)[(-(-n_rows // br),)](*args, BLOCK_R=br, BLOCK_W=bw)
        return out


@KERNELS.provides("rows")
def _rows(group: Group) -> "RowKernel":
    return generate(group)[1]


@KERNELS.lists(*ROW_KINDS)
def _jobs(group: Group) -> list[tuple]:
    spec, kernel = generate(group)
    return [(spec, *kernel.signature())]
