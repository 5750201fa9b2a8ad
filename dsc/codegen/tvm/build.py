"""TensorIR -> a compiled library, through the kernel cache.

A scheduled PrimFunc is named in the cache by its TVMScript text, the target and the
library versions; the shared library is written into the entry (atomically, by the
cache) and loaded from there, so a second process or a second run compiles nothing.
Compiled functions take torch CPU tensors zero-copy (compact layouts only).
"""

from __future__ import annotations

import os
import tempfile

from dsc.errors import DscError
from dsc.runtime.cache import KernelCache, cache_key
from dsc.runtime.device import library_versions

_LOADED: dict[str, object] = {}


def require_tvm():
    try:
        import tvm
    except ImportError:
        raise DscError("backend 'tvm' needs Apache TVM: pip install 'dsc[tvm]' (apache-tvm 0.27)") from None
    return tvm


def store_as(x, dtype: str):
    """A float32 TIR expression x stored as `dtype` (a TVM dtype name). bf16 is rounded to
    nearest even on the bits first: TVM folds a float32 -> bf16 -> float32 cast pair away,
    so the cast alone does not say how it rounds."""
    if dtype == "bfloat16":
        tir = require_tvm().tirx
        u32 = lambda v: tir.const(v, "uint32")  # noqa: E731
        bits = tir.reinterpret("uint32", x)
        bits = (bits + u32(0x7FFF) + ((bits >> u32(16)) & u32(1))) & u32(0xFFFF0000)
        x = tir.reinterpret("float32", bits)
    return x.astype(dtype)


def llvm_target():
    """This CPU, named explicitly: TVM's "native" silently falls back to a generic CPU (NOTES.md)."""
    tvm = require_tvm()
    return tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()})


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
