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
import operator
import os
import re
from typing import Callable, Mapping

import torch

from dsc.errors import ArtifactError, DscError, InputError

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "int32": torch.int32,
           "int64": torch.int64, "uint8": torch.uint8}
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv,
           ast.Mod: operator.mod}
_MAX_EXPR = 1000  # characters; far above what the writer emits, and low enough that parsing cannot recurse deeply
_MAX_MANIFEST = 64 << 20  # bytes read of manifest.json / of one source: an artifact is never near this
_MAX_EXTENT = (1 << 63) - 1
# CUDA's launch limits: grid x / y / z, block x / y / z, threads per block
_GRID_MAX = ((1 << 31) - 1, 65535, 65535)
_BLOCK_MAX = (1024, 1024, 64)
_THREADS_MAX = 1024


def _compile(expr: str) -> tuple[Callable[[Mapping[str, int]], int], frozenset[str]]:
    """A manifest expression (names, ints, + - * // %, min, max) as a function of the dims,
    and the names it reads. Parsed, never exec'd: a manifest is data."""
    if not isinstance(expr, str) or len(expr) > _MAX_EXPR:
        raise ArtifactError(f"manifest expression {_show(expr)}: must be a string of at most {_MAX_EXPR} characters")
    return _compiled(expr)


@functools.lru_cache(maxsize=None)  # launches evaluate the same few expressions on every call
def _compiled(expr: str):
    names = set()

    def build(node) -> Callable[[Mapping[str, int]], int]:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            value = node.value
            return lambda env: value
        if isinstance(node, ast.Name):
            names.add(node.id)
            return lambda env: int(env[node.id])
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            inner = build(node.operand)
            return lambda env: -inner(env)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            op, a, b = _BINOPS[type(node.op)], build(node.left), build(node.right)
            return lambda env: op(a(env), b(env))
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("min", "max")
                and node.args and not node.keywords):
            pick, args = (min if node.func.id == "min" else max), [build(a) for a in node.args]
            return lambda env: pick(f(env) for f in args)
        raise ArtifactError(f"manifest expression {expr!r}: unsupported syntax {ast.dump(node)[:60]}")
    try:
        tree = ast.parse(expr, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        raise ArtifactError(f"manifest expression {_show(expr)}: not an integer expression "
                            f"({type(e).__name__})") from None
    try:
        return build(tree.body), frozenset(names)
    except RecursionError:
        raise ArtifactError(f"manifest expression {_show(expr)}: nested too deeply") from None


def evaluate(expr: str, env: Mapping[str, int]) -> int:
    """An integer expression from a manifest under env."""
    fn, names = _compile(expr)
    for name in sorted(names - env.keys())[:1]:
        raise ArtifactError(f"manifest expression {expr!r}: {name} is not bound")
    try:
        return fn(env)
    except ZeroDivisionError:
        raise ArtifactError(f"manifest expression {expr!r}: division by zero at {dict(env)}") from None
    except RecursionError:
        raise ArtifactError(f"manifest expression {_show(expr)}: nested too deeply") from None


def _extent(expr: str, env: Mapping[str, int], what: str, lo: int = 0, hi: int = _MAX_EXTENT) -> int:
    value = evaluate(expr, env)
    if not lo <= value <= hi:
        raise ArtifactError(f"{what} = {expr} is {_show(value)} at {dict(env)}, outside [{lo}, {hi}]")
    return value


def _show(value) -> str:
    """A value for a message, cut short (a manifest may hold megabytes in one place)."""
    if isinstance(value, int) and value.bit_length() > 200:
        return f"an int of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# The manifest's schema: what dsc/cli/compile.py and dsc/codegen/tvm/cuda.py write. Checked
# whole (types, then the references between entries) before any source is read.

class _Invalid(Exception):
    def __init__(self, where: str, rule: str):
        super().__init__(f"{where}: {rule}")


def _kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


class Int:
    def __init__(self, lo: int, hi: int):
        self.lo, self.hi = lo, hi

    def check(self, value, where: str) -> None:
        if type(value) is not int:
            raise _Invalid(where, f"must be an integer, got {_kind(value)} {_show(value)}")
        if not self.lo <= value <= self.hi:
            raise _Invalid(where, f"must be in [{self.lo}, {self.hi}], got {_show(value)}")


class Bool:
    def check(self, value, where: str) -> None:
        if type(value) is not bool:
            raise _Invalid(where, f"must be true or false, got {_kind(value)} {_show(value)}")


class Str:
    def __init__(self, pattern: str = r".+", choices=None, max_len: int = 4096):
        self.pattern, self.choices, self.max_len = re.compile(pattern, re.S), choices, max_len

    def check(self, value, where: str) -> None:
        if not isinstance(value, str):
            raise _Invalid(where, f"must be a string, got {_kind(value)} {_show(value)}")
        if len(value) > self.max_len:
            raise _Invalid(where, f"must be at most {self.max_len} characters, got {len(value)}")
        if self.choices is not None and value not in self.choices:
            raise _Invalid(where, f"must be one of {', '.join(self.choices)}, got {_show(value)}")
        if not self.pattern.fullmatch(value):
            raise _Invalid(where, f"must match {self.pattern.pattern}, got {_show(value)}")


class Expr(Str):
    def check(self, value, where: str) -> None:
        super().check(value, where)
        try:
            _compile(value)
        except ArtifactError as e:
            raise _Invalid(where, str(e)) from None


class ListOf:
    def __init__(self, item, min_len: int = 0, max_len: int = 4096):
        self.item, self.min_len, self.max_len = item, min_len, max_len

    def check(self, value, where: str) -> None:
        if not isinstance(value, list):
            raise _Invalid(where, f"must be a list, got {_kind(value)} {_show(value)}")
        if not self.min_len <= len(value) <= self.max_len:
            raise _Invalid(where, f"must hold {self.min_len} to {self.max_len} items, got {len(value)}")
        for i, v in enumerate(value):
            self.item.check(v, f"{where}[{i}]")


class Tagged:
    """A two-item list [tag, value], the value's rule chosen by the tag."""

    def __init__(self, by_tag: dict):
        self.by_tag = by_tag

    def check(self, value, where: str) -> None:
        if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and value[0] in self.by_tag):
            raise _Invalid(where, f"must be [{' | '.join(map(repr, self.by_tag))}, value], got {_show(value)}")
        self.by_tag[value[0]].check(value[1], f"{where}[1]")


class MapOf:
    def __init__(self, key: Str, value, max_len: int = 4096):
        self.key, self.value, self.max_len = key, value, max_len

    def check(self, value, where: str) -> None:
        if not isinstance(value, dict):
            raise _Invalid(where, f"must be an object, got {_kind(value)} {_show(value)}")
        if len(value) > self.max_len:
            raise _Invalid(where, f"must hold at most {self.max_len} entries, got {len(value)}")
        for k, v in value.items():
            self.key.check(k, f"{where} key {_show(k)}")
            self.value.check(v, _at(where, k))


class Record:
    """An object with exactly these keys."""

    def __init__(self, fields: dict):
        self.fields = fields

    def check(self, value, where: str) -> None:
        if not isinstance(value, dict):
            raise _Invalid(where, f"must be an object, got {_kind(value)} {_show(value)}")
        for k in value.keys() - self.fields.keys():
            raise _Invalid(_at(where, k), f"is not a manifest field (expected {', '.join(self.fields)})")
        for k, rule in self.fields.items():
            if k not in value:
                raise _Invalid(_at(where, k), "is missing")
            rule.check(value[k], _at(where, k))


def _at(where: str, key: str) -> str:
    """Where a key lies, as the messages write it: `definitions["k"].buffers[0].shape[2]`."""
    if re.fullmatch(IDENT, key):
        return f"{where}.{key}" if where else key
    return f"{where}[{_show(key)}]"


IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_COUNT = 1 << 12  # buffers, kernels, params, definitions: far above any layer
DEFINITION = Record({
    "symbol": Str(IDENT, max_len=256),
    "buffers": ListOf(Record({"name": Str(IDENT, max_len=256), "dtype": Str(choices=tuple(_DTYPES)),
                              "shape": ListOf(Expr(), max_len=8), "scratch": Bool()}), min_len=1, max_len=_COUNT),
    "vars": MapOf(Str(IDENT, max_len=256), ListOf(Int(0, _COUNT), min_len=2, max_len=2)),
    "kernels": ListOf(Record({"name": Str(IDENT, max_len=256),
                              "params": ListOf(Tagged({"ptr": Int(0, _COUNT), "int": Str(IDENT, max_len=256)}),
                                               max_len=_COUNT),
                              "grid": ListOf(Expr(), min_len=3, max_len=3),
                              "block": ListOf(Expr(), min_len=3, max_len=3)}), min_len=1, max_len=_COUNT),
    "files": MapOf(Str(r"[0-9]{1,4}"), Str(max_len=1024), max_len=64),
})
MANIFEST_SCHEMA = Record({
    "model": Str(), "backend": Str(choices=("tvm",)), "target": Str(), "dtype": Str(), "passes": Str(),
    "archs": ListOf(Int(1, 9999), min_len=1, max_len=64),
    "definitions": MapOf(Str(), DEFINITION, max_len=_COUNT),
    "groups": ListOf(Record({"layer": Str(), "group": Str(), "fuses": ListOf(Str()),
                             "definitions": ListOf(Str())}), max_len=_COUNT),
})


def _check_links(manifest: dict, confine: Callable[[str, str], str]) -> None:
    """What the schema's types cannot say: every reference points at something that exists."""
    archs = {str(a) for a in manifest["archs"]}
    for key, d in manifest["definitions"].items():
        at = _at("definitions", key)
        buffers = d["buffers"]
        n_args = next((i for i, b in enumerate(buffers) if b["scratch"]), len(buffers))
        if n_args == 0 or any(not b["scratch"] for b in buffers[n_args:]):
            raise _Invalid(f"{at}.buffers", "must list the arguments (at least one) first, then the scratch buffers")
        for name, (i, j) in d["vars"].items():
            if i >= n_args or j >= len(buffers[i]["shape"]) or buffers[i]["shape"][j] != name:
                raise _Invalid(_at(f"{at}.vars", name), f"[{i}, {j}] must point at the dim {name} of an "
                                                         "argument's shape")
        exprs = [(f"{at}.buffers[{i}].shape[{j}]", e, 0, _MAX_EXTENT)
                 for i, b in enumerate(buffers) for j, e in enumerate(b["shape"])]
        names = set()
        for k, kernel in enumerate(d["kernels"]):
            kat = f"{at}.kernels[{k}]"
            if kernel["name"] in names:
                raise _Invalid(f"{kat}.name", f"{kernel['name']} is listed twice")
            names.add(kernel["name"])
            exprs += [(f"{kat}.{what}[{a}]", e, lo, hi[a]) for what, lo, hi in (("grid", 0, _GRID_MAX),
                                                                                  ("block", 1, _BLOCK_MAX))
                      for a, e in enumerate(kernel[what])]
            for p, (kind, ref) in enumerate(kernel["params"]):
                if (ref >= len(buffers)) if kind == "ptr" else (ref not in d["vars"]):
                    raise _Invalid(f"{kat}.params[{p}]",
                                   f"{kind} {ref} names no {'buffer' if kind == 'ptr' else 'dim'}")
        for where, e, lo, hi in exprs:
            reads = _compile(e)[1]
            for name in sorted(reads - d["vars"].keys())[:1]:
                raise _Invalid(where, f"{e!r} reads {name}, which is not among the vars")
            if not reads:  # a constant: check its range now, not at the first launch
                try:
                    value = evaluate(e, {})
                except ArtifactError as err:
                    raise _Invalid(where, str(err)) from None
                if not lo <= value <= hi:
                    raise _Invalid(where, f"{e!r} is {_show(value)}, outside [{lo}, {hi}]")
        if d["files"].keys() != archs:
            raise _Invalid(f"{at}.files", f"must hold a source for each of archs {sorted(archs)}, got "
                                          f"{sorted(d['files'])}")
        for arch, name in d["files"].items():
            confine(name, _at(f"{at}.files", arch))
    for g, group in enumerate(manifest["groups"]):
        for key in group["definitions"]:
            if key not in manifest["definitions"]:
                raise _Invalid(f"groups[{g}].definitions", f"{_show(key)} is not among the definitions")


def bind_dims(entry: dict, tensors: list[torch.Tensor]) -> dict[str, int]:
    """The definition's symbolic dims, read from its argument tensors' shapes."""
    args = [b for b in entry["buffers"] if not b["scratch"]]
    if len(tensors) != len(args):
        raise InputError(f"{entry['symbol']}: takes {len(args)} tensors, got {len(tensors)}")

    def wrong(t: torch.Tensor, buf: dict, want) -> InputError:
        return InputError(f"{entry['symbol']}: argument {buf['name']} must be {buf['dtype']} {want}, got "
                          f"{str(t.dtype).replace('torch.', '')} {list(t.shape)}")
    for t, buf in zip(tensors, args):
        if t.dim() != len(buf["shape"]):
            raise wrong(t, buf, buf["shape"])
    env = {name: int(tensors[i].shape[j]) for name, (i, j) in entry["vars"].items()}
    for t, buf in zip(tensors, args):
        want = [_extent(d, env, f"{entry['symbol']}: {buf['name']}.shape") for d in buf["shape"]]
        if list(t.shape) != want or t.dtype != _DTYPES[buf["dtype"]]:
            raise wrong(t, buf, want)
        if not t.is_contiguous():
            raise InputError(f"{entry['symbol']}: argument {buf['name']} must be compact")
    return env


def launches(entry: dict, tensors: list[torch.Tensor], env: dict[str, int]):
    """(kernel name, grid, block, [(value, 'ptr'|'int')]) of every kernel, in order;
    scratch buffers allocated on the arguments' device."""
    device = tensors[0].device
    buffers = list(tensors)
    for buf in entry["buffers"][len(tensors):]:
        shape = [_extent(d, env, f"{entry['symbol']}: scratch {buf['name']}.shape") for d in buf["shape"]]
        try:
            buffers.append(torch.empty(shape, dtype=_DTYPES[buf["dtype"]], device=device))
        except RuntimeError as e:  # out of memory, or more elements than torch can index
            raise ArtifactError(f"{entry['symbol']}: cannot allocate scratch {buf['name']} {shape}: "
                                f"{str(e).splitlines()[0][:200]}") from None
    out = []
    for k in entry["kernels"]:
        what = f"{entry['symbol']}: kernel {k['name']}"
        args = [(buffers[ref].data_ptr(), "ptr") if kind == "ptr" else (env[ref], "int")
                for kind, ref in k["params"]]
        grid = [_extent(e, env, f"{what} grid[{a}]", 0, _GRID_MAX[a]) for a, e in enumerate(k["grid"])]
        block = [_extent(e, env, f"{what} block[{a}]", 1, _BLOCK_MAX[a]) for a, e in enumerate(k["block"])]
        if block[0] * block[1] * block[2] > _THREADS_MAX:
            raise ArtifactError(f"{what}: block {block} has more than {_THREADS_MAX} threads")
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
    """A `dsc compile --backend tvm` directory: kernels by definition key. Its manifest is
    checked whole against MANIFEST_SCHEMA, and every file it names confined to the
    directory, before any source is read: the sources are compiled and run in this
    process, so a manifest must not point anywhere else."""

    def __init__(self, path: str, arch: int):
        self.path = path
        self.root = os.path.realpath(path)
        if not os.path.isfile(os.path.join(self.root, "manifest.json")):
            raise ArtifactError(f"--artifacts {path}: no manifest.json (write one with dsc compile --backend tvm)")
        data = self._read("manifest.json", "manifest.json")
        try:
            self.manifest = json.loads(data.decode("utf-8"))
        except (ValueError, RecursionError) as e:  # not JSON, not UTF-8, an int too long, nested too deep
            raise ArtifactError(f"--artifacts {path}: manifest.json is not valid JSON "
                                f"({type(e).__name__}: {str(e)[:100]})") from None
        if not isinstance(self.manifest, dict):
            raise ArtifactError(f"--artifacts {path}: manifest.json must hold an object, got {_kind(self.manifest)}")
        if self.manifest.get("backend") != "tvm":
            raise ArtifactError(f"--artifacts {path}: the manifest is for backend "
                                f"{_show(self.manifest.get('backend'))}, not tvm")
        try:
            MANIFEST_SCHEMA.check(self.manifest, "")
            _check_links(self.manifest, self._confine)
        except _Invalid as e:
            raise ArtifactError(f"--artifacts {path}: manifest.json {e}") from None
        archs = sorted(self.manifest["archs"])
        usable = [a for a in archs if a <= arch]
        if not usable:
            raise ArtifactError(f"--artifacts {path}: compiled for sm_{archs}, this device is sm_{arch}")
        self.arch = usable[-1]
        self._kernels: dict[str, CudaKernels] = {}

    def _confine(self, name: str, where: str) -> str:
        """The real path of a file the manifest names, refused unless it lies inside the
        directory (absolute, `..` and symlinks out are all refused) and is a plain file."""
        def refuse(rule: str):
            raise _Invalid(where, f"{_show(name)} {rule}")
        if not name or "\0" in name:
            refuse("is not a file name")
        if os.path.isabs(name) or os.path.splitdrive(name)[0]:
            refuse("is an absolute path; artifact files are named relative to the directory")
        full = os.path.realpath(os.path.join(self.root, name))
        if os.path.commonpath([full, self.root]) != self.root:
            refuse("resolves outside the artifacts directory")
        if not os.path.isfile(full):
            refuse("is not a file in the artifacts directory")
        return full

    def _read(self, name: str, where: str) -> bytes:
        try:
            with open(self._confine(name, where), "rb") as f:  # confined again: the directory may have changed
                data = f.read(_MAX_MANIFEST + 1)
        except _Invalid as e:
            raise ArtifactError(f"--artifacts {self.path}: {e}") from None
        except OSError as e:
            raise ArtifactError(f"--artifacts {self.path}: cannot read {where}: {e.strerror}") from None
        if len(data) > _MAX_MANIFEST:
            raise ArtifactError(f"--artifacts {self.path}: {where} is over {_MAX_MANIFEST >> 20} MiB")
        return data

    def kernel(self, key: str) -> CudaKernels:
        if key not in self._kernels:
            entry = self.manifest["definitions"].get(key)
            if entry is None:
                raise ArtifactError(f"--artifacts {self.path}: no kernel {key} (compiled for another graph or dtype?)")
            where = _at(f"{_at('definitions', key)}.files", str(self.arch))
            data = self._read(entry["files"][str(self.arch)], where)
            try:
                source = data.decode("utf-8")
            except UnicodeDecodeError:
                raise ArtifactError(f"--artifacts {self.path}: {where} is not UTF-8 text") from None
            self._kernels[key] = CudaKernels(entry, source, self.arch)
        return self._kernels[key]
