"""TVM-emitted CUDA, compiled with NVRTC and launched on torch tensors, without TVM.

`dsc compile --backend tvm --target sm90|sm80 --out DIR` writes, for every kernel
definition a graph uses, its CUDA source per architecture and a manifest entry (see
dsc/codegen/tvm/cuda.py): the definition's buffers (the arguments its llvm twin takes,
in the same order, then scratch buffers for intermediate stages), where each symbolic
dim is read from, and each kernel's parameters and launch extents as integer
expressions of those dims. A CudaKernels object is a drop-in for the compiled TVM
function: call it with the same tensors (on a CUDA device) and it binds the dims from
their shapes, allocates the scratch, and launches the kernels in order on torch's
current stream. cuda-python (cuda.bindings) is needed only here.
"""

from __future__ import annotations

import ast
import functools
import json
import os
from typing import Mapping

import torch

from dsc.errors import DscError

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "int32": torch.int32,
           "int64": torch.int64, "uint8": torch.uint8}


def evaluate(expr: str, env: Mapping[str, int]) -> int:
    """An integer expression from a manifest (names, ints, + - * // %, min, max) under env.
    Parsed, never exec'd: a manifest is data."""
    def ev(node) -> int:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in env:
                raise DscError(f"manifest expression {expr!r}: {node.id} is not bound")
            return int(env[node.id])
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.BinOp):
            a, b = ev(node.left), ev(node.right)
            ops = {ast.Add: lambda: a + b, ast.Sub: lambda: a - b, ast.Mult: lambda: a * b,
                   ast.FloorDiv: lambda: a // b, ast.Mod: lambda: a % b}
            if type(node.op) in ops:
                return ops[type(node.op)]()
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("min", "max"):
            vals = [ev(a) for a in node.args]
            return min(vals) if node.func.id == "min" else max(vals)
        raise DscError(f"manifest expression {expr!r}: unsupported syntax {ast.dump(node)[:60]}")
    return ev(_parse(expr))


@functools.lru_cache(maxsize=None)
def _parse(expr: str) -> ast.Expression:
    """A manifest expression's tree, parsed once: launches evaluate the same few on every call."""
    return ast.parse(expr, mode="eval")


def bind_dims(entry: dict, tensors: list[torch.Tensor]) -> dict[str, int]:
    """The definition's symbolic dims, read from its argument tensors' shapes."""
    env = {}
    for name, (i, j) in entry["vars"].items():
        env[name] = int(tensors[i].shape[j])
    for i, buf in enumerate(entry["buffers"][:len(tensors)]):
        want = [evaluate(d, env) for d in buf["shape"]]
        if list(tensors[i].shape) != want or tensors[i].dtype != _DTYPES[buf["dtype"]]:
            raise DscError(f"{entry['symbol']}: argument {buf['name']} must be {buf['dtype']} {want}, got "
                           f"{str(tensors[i].dtype).replace('torch.', '')} {list(tensors[i].shape)}")
        if not tensors[i].is_contiguous():
            raise DscError(f"{entry['symbol']}: argument {buf['name']} must be compact")
    return env


def launches(entry: dict, tensors: list[torch.Tensor], env: dict[str, int]):
    """(kernel name, grid, block, [(value, 'ptr'|'int')]) of every kernel, in order;
    scratch buffers allocated on the arguments' device."""
    device = tensors[0].device
    buffers = list(tensors)
    for buf in entry["buffers"][len(tensors):]:
        buffers.append(torch.empty([evaluate(d, env) for d in buf["shape"]], dtype=_DTYPES[buf["dtype"]],
                                   device=device))
    out = []
    for k in entry["kernels"]:
        args = [(buffers[ref].data_ptr(), "ptr") if kind == "ptr" else (env[ref], "int")
                for kind, ref in k["params"]]
        grid = [evaluate(e, env) for e in k["grid"]]
        block = [evaluate(e, env) for e in k["block"]]
        out.append((k["name"], grid, block, args))
    return out, buffers


def cuda_include_dirs() -> list[str]:
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    inc = os.path.join(home, "include")
    return [inc, os.path.join(inc, "cccl")]


def _check(result, what: str):
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise DscError(f"{what} failed: {err}")
    return rest[0] if len(rest) == 1 else rest


class CudaKernels:
    """One kernel definition's CUDA module: compiled with NVRTC for this device on first
    use, then called like the TVM function it replaces."""

    def __init__(self, entry: dict, source: str, arch: int):
        self.entry, self.source, self.arch = entry, source, arch
        self._functions = None

    def _load(self):
        from cuda.bindings import driver, nvrtc

        name = self.entry["symbol"].encode()
        prog = _check(nvrtc.nvrtcCreateProgram(self.source.encode(), name + b".cu", 0, [], []), "nvrtcCreateProgram")
        opts = [f"--gpu-architecture=sm_{self.arch}".encode(), b"-default-device", b"--std=c++17"] + [
            f"-I{d}".encode() for d in cuda_include_dirs()]
        result = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        if int(result[0]) != 0:
            size = _check(nvrtc.nvrtcGetProgramLogSize(prog), "nvrtcGetProgramLogSize")
            log = b" " * size
            nvrtc.nvrtcGetProgramLog(prog, log)
            raise DscError(f"NVRTC could not compile {self.entry['symbol']}: {log.decode(errors='replace')[:2000]}")
        size = _check(nvrtc.nvrtcGetCUBINSize(prog), "nvrtcGetCUBINSize")
        cubin = b" " * size
        _check(nvrtc.nvrtcGetCUBIN(prog, cubin), "nvrtcGetCUBIN")
        torch.cuda.init()
        _check(driver.cuInit(0), "cuInit")
        module = _check(driver.cuModuleLoadData(cubin), "cuModuleLoadData")
        self._functions = {k["name"]: _check(driver.cuModuleGetFunction(module, k["name"].encode()),
                                             "cuModuleGetFunction") for k in self.entry["kernels"]}
        self._module = module

    def __call__(self, *tensors: torch.Tensor) -> None:
        import ctypes

        from cuda.bindings import driver

        if self._functions is None:
            self._load()
        env = bind_dims(self.entry, list(tensors))
        plan, buffers = launches(self.entry, list(tensors), env)
        stream = driver.CUstream(torch.cuda.current_stream(tensors[0].device).cuda_stream)
        for name, grid, block, args in plan:
            if min(grid) <= 0:
                continue  # an empty launch (no rows)
            values = tuple(v for v, _ in args)
            types = tuple(ctypes.c_void_p if kind == "ptr" else ctypes.c_int64 for _, kind in args)
            _check(driver.cuLaunchKernel(self._functions[name], *grid, *block, 0, stream, (values, types), 0),
                   f"cuLaunchKernel({name})")
        del buffers  # scratch lives until the stream is done with it: torch's caching allocator orders reuse


class Artifacts:
    """A `dsc compile --backend tvm` directory: kernels by definition key."""

    def __init__(self, path: str, arch: int):
        manifest_path = os.path.join(path, "manifest.json")
        if not os.path.isfile(manifest_path):
            raise DscError(f"--artifacts {path}: no manifest.json (write one with dsc compile --backend tvm)")
        with open(manifest_path) as f:
            self.manifest = json.load(f)
        if self.manifest.get("backend") != "tvm":
            raise DscError(f"--artifacts {path}: the manifest is for backend {self.manifest.get('backend')!r}, not tvm")
        archs = sorted(int(a) for a in self.manifest["archs"])
        usable = [a for a in archs if a <= arch]
        if not usable:
            raise DscError(f"--artifacts {path}: compiled for sm_{archs}, this device is sm_{arch}")
        self.path, self.arch = path, usable[-1]
        self._kernels: dict[str, CudaKernels] = {}

    def rows(self, key: str) -> dict:
        """A row kernel group's entry (its loads' order and kernel key)."""
        if key not in self.manifest["row_groups"]:
            raise DscError(f"--artifacts {self.path}: no row kernel for this group (compiled for another graph?)")
        return self.manifest["row_groups"][key]

    def kernel(self, key: str) -> CudaKernels:
        if key not in self._kernels:
            entry = self.manifest["definitions"].get(key)
            if entry is None:
                raise DscError(f"--artifacts {self.path}: no kernel {key} (compiled for another graph or dtype?)")
            with open(os.path.join(self.path, entry["files"][str(self.arch)])) as f:
                source = f.read()
            self._kernels[key] = CudaKernels(entry, source, self.arch)
        return self._kernels[key]
