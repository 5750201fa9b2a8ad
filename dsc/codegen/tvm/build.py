"""Kernel definitions, and TensorIR -> a compiled library through the kernel cache.

A KernelDef is a target-independent PrimFunc (TE stages, or TVMScript loops whose
T.parallel loop is the parallel one) with the llvm schedule that goes with it; the CUDA
path (cuda.py) schedules the same function for a GPU. Definitions are made by the
`define_*` functions of each kernel module from static parameters only (dtypes, widths,
attributes), so `dsc compile` can list a graph's kernels without running it.

A scheduled PrimFunc is named in the cache by its TVMScript text, the target and the
library versions; the shared library is written into the entry (atomically, by the
cache) and loaded from there, so a second process or a second run compiles nothing.
Compiled functions take torch CPU tensors zero-copy (compact layouts only), at any
offset: buffer arguments are declared aligned to their element (element_aligned).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable

import torch

from dsc.errors import DscError, install_hint
from dsc.runtime.cache import KernelCache, cache_key
from dsc.runtime.device import library_versions

# IR dtype -> TVM's
TVM_DTYPES = {"f32": "float32", "bf16": "bfloat16", "f16": "float16", "i32": "int32", "i64": "int64",
              "u8": "uint8"}


def tvm_dtype(node) -> str:
    return TVM_DTYPES[node.dtype.name]


def static_dim(d, what: str) -> int:
    if not isinstance(d, int):
        raise DscError(f"the tvm kernels need a static {what}, got {d}")
    return d

_LOADED: dict[str, object] = {}


def require_tvm():
    try:
        import tvm
    except ImportError:
        raise DscError(f"backend 'tvm' needs Apache TVM: {install_hint('tvm')} (apache-tvm 0.27)") from None
    return tvm


def bf16_bits(x):
    """float32 x rounded to nearest even bf16, in the high half of a uint32."""
    tir = require_tvm().tirx
    u32 = lambda v: tir.const(v, "uint32")  # noqa: E731
    bits = tir.reinterpret("uint32", x)
    return (bits + u32(0x7FFF) + ((bits >> u32(16)) & u32(1))) & u32(0xFFFF0000)


def store_as(x, dtype: str):
    """A float32 TIR expression x stored as `dtype` (a TVM dtype name). bf16 is rounded to
    nearest even on the bits first: TVM folds a float32 -> bf16 -> float32 cast pair away,
    so the cast alone does not say how it rounds."""
    if dtype == "bfloat16":
        x = require_tvm().tirx.reinterpret("float32", bf16_bits(x))
    return x.astype(dtype)


def output_buffer(out: torch.Tensor | None, shape, dtype: torch.dtype, device) -> torch.Tensor:
    """Where a kernel writes: the planned buffer when it is compact (the compiled
    functions take compact tensors only), else a fresh one (see deliver)."""
    return out if out is not None and out.is_contiguous() else torch.empty(shape, dtype=dtype, device=device)


def deliver(result: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    """The kernel's result in the planned buffer, copied there if it was written elsewhere."""
    if out is not None and result is not out:
        out.copy_(result)
        return out
    return result


def llvm_target():
    """This CPU, named explicitly: TVM's "native" silently falls back to a generic CPU."""
    tvm = require_tvm()
    return tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()})


def element_aligned(func):
    """func with every buffer argument declared aligned to its element only. TVM's default
    (64 bytes) is a promise LLVM turns into aligned vector loads, which fault on what users
    hand in: from_pretrained's and safetensors' weights lie back to back in one file
    mapping, and any view at an offset starts mid-block. LLVM then emits unaligned vector
    loads, as fast on aligned data (measured: MLA decode and MoE no slower), so
    no tensor is ever copied, and in-place writes (the latent cache) land where they
    should. TVM checks no alignment at the call: the promise alone was the fault."""
    tvm = require_tvm()
    import tvm_ffi  # TVM's own FFI: there whenever TVM is

    tirx = tvm.tirx
    redeclared = []
    for p in func.params:
        if not tirx.is_buffer_var(p):
            continue
        t = p.ty
        dt = tvm.runtime.DataType(str(t.dtype))
        align = max(1, dt.bits * dt.lanes // 8)
        if t.data_alignment != align:
            redeclared.append((p, tirx.decl_buffer(t.shape, t.dtype, p.name, strides=t.strides,
                                                   elem_offset=t.elem_offset, scope=t.storage_scope,
                                                   data_alignment=align, offset_factor=t.offset_factor,
                                                   layout=t.layout)))
    if not redeclared:
        return func

    def swap(v):
        return next((new for old, new in redeclared if v.same_as(old)), v)
    return tvm_ffi.structural_map(func, [(tvm.ir.Var, swap)])


@dataclass(frozen=True, eq=False)
class KernelDef:
    name: str  # readable; `symbol` adds a digest of the function, unique per definition
    func: object  # tvm.tirx.PrimFunc, unscheduled; its buffer arguments element-aligned
    schedule: Callable | None = None  # schedule(sch: tvm.s_tir.Schedule) for llvm (TE stages)
    te_args: tuple = ()  # the TE tensors func was made of (TE definitions)

    def __post_init__(self):
        # every definition, TE or TVMScript, takes any tensor torch can hand it
        object.__setattr__(self, "func", element_aligned(self.func))

    @staticmethod
    def from_te(name: str, args: list, schedule: Callable) -> "KernelDef":
        return KernelDef(name, require_tvm().te.create_prim_func(list(args)), schedule, tuple(args))

    def gpu(self):
        """The function for a GPU: a TE definition's intermediate stages become trailing
        scratch arguments (on a CPU, TVM's host code allocates them; a launcher without
        TVM must, see dsc/runtime/nvrtc.py). TVMScript definitions are made per target."""
        if not self.te_args:
            return self.func
        te = require_tvm().te
        known = {t.op for t in self.te_args}
        scratch, seen = [], set()

        def visit(t):
            if t.op in seen:
                return
            seen.add(t.op)
            for s in t.op.input_tensors:
                visit(s)
            if t.op not in known and isinstance(t.op, te.ComputeOp):
                scratch.append(t)
        for t in self.te_args:
            visit(t)
        return element_aligned(te.create_prim_func(list(self.te_args) + scratch))

    @property
    def symbol(self) -> str:
        digest = hashlib.sha256(self.func.script().encode()).hexdigest()[:8]
        return f"{self.name}_{digest}"

    def module(self):
        """An IRModule holding the function as `main`."""
        return require_tvm().IRModule({"main": self.func})

    def cpu_module(self):
        """The function scheduled for llvm."""
        if self.schedule is None:
            return self.module()
        sch = require_tvm().s_tir.Schedule(self.module())
        self.schedule(sch)
        return sch.mod


def loop_kinds(target: str) -> SimpleNamespace:
    """Loop constructors of TVMScript kernels for a target: par(n), the kernel's parallel
    loop (llvm: over the cores; cuda: one thread block per iteration); one(), a launch of
    a single serial worker (llvm: a plain loop of one); vec(n), a loop of vector lanes
    (llvm: vectorized; cuda: serial, per thread). Correct on both; the GPU versions leave
    threads within a block to a tuned schedule, not written yet."""
    from tvm.script import tirx as T

    if target == "cuda":
        return SimpleNamespace(par=lambda n: T.thread_binding(n, thread="blockIdx.x"),
                               one=lambda: T.thread_binding(1, thread="blockIdx.x"), vec=T.serial)
    return SimpleNamespace(par=T.parallel, one=lambda: T.serial(1), vec=T.vectorized)


_COMPILED: dict[str, object] = {}  # llvm builds by kernel_key
_ARTIFACTS: list = []  # the active dsc.runtime.nvrtc.Artifacts, if any


def kernel_key(define: Callable[..., KernelDef], args: tuple) -> str:
    """A definition's name across processes: the define function and its static
    arguments (the target aside). `dsc compile` writes kernels under it; a launcher
    without TVM finds them by it."""
    return f"{define.__name__}{args!r}"


def artifacts_active() -> bool:
    return bool(_ARTIFACTS)


def artifact(key: str):
    """The artifact kernel of a key while artifacts are in use, else None."""
    return _ARTIFACTS[-1].kernel(key) if _ARTIFACTS else None


class use_artifacts:
    """`with use_artifacts(Artifacts(...)):` kernels come from a compiled directory
    (CUDA through NVRTC) instead of being built by TVM."""

    def __init__(self, artifacts):
        self.artifacts = artifacts

    def __enter__(self):
        _ARTIFACTS.append(self.artifacts)
        return self.artifacts

    def __exit__(self, *exc):
        _ARTIFACTS.remove(self.artifacts)


def compiled(define: Callable[..., KernelDef], *args, **knobs):
    """define(*args, **knobs) ready to call: from the active artifacts, else the llvm
    build, made once per process (and once per machine: the cache). knobs are llvm
    schedule choices (tuned); artifacts hold the default schedule's kernels."""
    key = kernel_key(define, args)
    found = artifact(key)
    if found is not None:
        return found
    if knobs:
        key += repr(sorted(knobs.items()))
    if key not in _COMPILED:
        defn = define(*args, **knobs)
        _COMPILED[key] = build(defn.cpu_module(), defn.name)
    return _COMPILED[key]


def knobs(space, shape, dtype: str, device) -> dict:
    """A tunable TVM kernel's llvm schedule knobs for this launch (dsc.runtime.tuned);
    none while artifacts are in use: those were compiled with the defaults."""
    return {} if artifacts_active() else space.choose(shape, dtype, device)


def build(mod, name: str):
    """The compiled function `main` of an IRModule (scheduled), from the cache if built before."""
    tvm = require_tvm()
    target = llvm_target()
    key = cache_key(source=mod.script(), name=name, backend="tvm", device=str(target),
                    versions={**library_versions(), "tvm": tvm.__version__})
    if key in _LOADED:
        return _LOADED[key]

    def compile_library():
        ex = tvm.compile(mod, target=target)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "kernel.so")
            ex.export_library(path)
            with open(path, "rb") as f:
                return {"kernel.so": f.read()}, {"kernel": name, "target": str(target)}

    entry = KernelCache().get_or_build(key, compile_library)
    fn = tvm.runtime.load_module(entry.file("kernel.so"))["main"]
    _LOADED[key] = fn
    return fn
