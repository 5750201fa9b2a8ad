"""TVM kernel definitions -> CUDA C source, on any machine (no GPU needed).

TE-stage definitions get a generic GPU schedule (every stage's spatial loops bound to
blocks of THREADS threads, reductions serial per thread: dlight's Fallback rule, which
refuses some of our stages); TVMScript definitions are
made for the GPU directly (build.loop_kinds: one thread block per parallel iteration).
Both are correctness-first schedules: tuned GPU schedules are not written yet. The
source of each definition holds `extern "C"` kernels named <symbol>_kernel,
<symbol>_kernel_1, ... in launch order; it compiles with nvcc and with NVRTC.

emit() also describes how to launch the source without TVM (dsc/runtime/nvrtc.py):
the definition's buffers (its arguments, then scratch buffers for the intermediate
stages that TVM's host code would have allocated), where each symbolic dim is read
from, and each kernel's parameters and grid/block extents as integer expressions.
"""

from __future__ import annotations

import re

from dsc.codegen.tvm.build import KernelDef, require_tvm
from dsc.errors import DscError

THREADS = 128


def gpu_module(defn: KernelDef, arch: int):
    """The definition scheduled for sm_<arch>, its function named defn.symbol."""
    tvm = require_tvm()
    mod = tvm.IRModule({"main": defn.gpu().with_attr("global_symbol", defn.symbol)})
    if defn.schedule is None:  # TVMScript made for the GPU (loop_kinds)
        return mod
    sch = tvm.s_tir.Schedule(mod)
    for blk in sch.get_child_blocks(sch.get_sblock("root")):
        # each stage: its leading data-parallel loops fused and spread over blocks of
        # THREADS threads; a reduction stays a serial loop in its thread
        spatial = 0
        for iv in sch.get(blk).iter_vars:
            if iv.iter_type != 0:  # not data-parallel
                break
            spatial += 1
        loops = sch.get_loops(blk)[:spatial]
        fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
        bx, tx = sch.split(fused, [None, THREADS])
        sch.bind(bx, "blockIdx.x")
        sch.bind(tx, "threadIdx.x")
    return sch.mod


def target(arch: int):
    return require_tvm().target.Target({"kind": "cuda", "arch": f"sm_{arch}"})


def kernel_names(source: str) -> list[str]:
    """The `extern "C" __global__` kernels a source defines, in launch order."""
    names = re.findall(r'extern "C" __global__ void (?:__launch_bounds__\(\d+\) )?(\w+)\(', source)
    return list(dict.fromkeys(names))


def expr_text(e, names: dict[str, str] | None = None) -> str:
    """A TIR integer expression as the manifest's Python-syntax text (nvrtc.evaluate)."""
    tirx = require_tvm().tirx
    names = names or {}

    def t(x) -> str:
        if isinstance(x, int):
            return str(x)
        if isinstance(x, tirx.IntImm):
            return str(int(x.value))
        if isinstance(x, tirx.Var):
            return names.get(x.name, x.name)
        if isinstance(x, tirx.Cast):
            return t(x.value)
        ops = {tirx.Add: "+", tirx.Sub: "-", tirx.Mul: "*", tirx.FloorDiv: "//", tirx.FloorMod: "%"}
        for cls, op in ops.items():
            if isinstance(x, cls):
                return f"({t(x.a)} {op} {t(x.b)})"
        if isinstance(x, (tirx.Min, tirx.Max)):
            return f"{'min' if isinstance(x, tirx.Min) else 'max'}({t(x.a)}, {t(x.b)})"
        raise DscError(f"cannot write the launch expression {x} ({type(x).__name__}) into a manifest")
    return t(e)


def _thread_extents(stmt) -> dict[str, object]:
    """tag -> extent of the launch_thread attributes at the top of a device function."""
    tirx = require_tvm().tirx
    found = {}
    for _ in range(64):
        if isinstance(stmt, tirx.AttrStmt) and stmt.attr_key == "thread_extent":
            found[stmt.node.thread_tag] = stmt.value
        elif isinstance(stmt, tirx.SeqStmt):
            for s in stmt.seq:  # the launch attributes open the body; keep looking in the first statements
                inner = _thread_extents(s)
                for k, v in inner.items():
                    found.setdefault(k, v)
            return found
        body = getattr(stmt, "body", None)
        if body is None:
            break
        stmt = body
    return found


def emit(defn: KernelDef, arch: int) -> tuple[str, dict]:
    """(CUDA source, manifest entry) of a definition for sm_<arch>."""
    tvm = require_tvm()
    from tvm.tirx.build import split_host_device_mods

    mod = gpu_module(defn, arch)
    tgt = target(arch)
    with tvm.transform.PassContext(config={"tirx.disable_cse_tir": True}):  # kernel params: only shape dims
        source = tvm.compile(mod, target=tgt).mod.imports[0].inspect_source()
        pipeline, _, _ = tvm.tirx.get_default_tir_pipeline(tgt)
        lowered = pipeline(tvm.tirx.transform.BindTarget(tgt.with_host("llvm"))(mod))
    func = mod["main"]
    buffers, where, by_name = [], {}, {}
    n_args = len(defn.func.params)
    for i, p in enumerate(func.params):
        buffers.append({"name": p.name, "dtype": str(p.dtype), "shape": [expr_text(d) for d in p.shape],
                        "scratch": i >= n_args})
        by_name[p.name] = i
        for j, d in enumerate(p.shape):
            if isinstance(d, tvm.tirx.Var) and d.name not in where:
                where[d.name] = [i, j]
    _, device = split_host_device_mods(lowered)
    kernels = []
    for dev_mod in device.values():
        for gv, fn in dev_mod.functions.items():
            params = []
            for p in fn.params:
                if str(p.ty).startswith("T.handle"):
                    buf = p.name[:-4] if p.name.endswith("_ptr") else p.name
                    if buf not in by_name:
                        raise DscError(f"{defn.symbol}: kernel {gv.name_hint} takes {p.name}, no buffer of that name")
                    params.append(["ptr", by_name[buf]])
                elif p.name in where:
                    params.append(["int", p.name])
                else:
                    raise DscError(f"{defn.symbol}: kernel {gv.name_hint} takes {p.name}, not a shape dim")
            ext = _thread_extents(fn.body)
            kernels.append({"name": gv.name_hint, "params": params,
                            "grid": [expr_text(ext.get(f"blockIdx.{a}", 1)) for a in "xyz"],
                            "block": [expr_text(ext.get(f"threadIdx.{a}", 1)) for a in "xyz"]})
    order = {name: i for i, name in enumerate(kernel_names(source))}
    kernels.sort(key=lambda k: order.get(k["name"], len(order)))
    return source, {"symbol": defn.symbol, "buffers": buffers, "vars": where, "kernels": kernels}
