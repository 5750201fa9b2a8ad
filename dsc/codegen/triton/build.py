"""Generated Triton source -> a launchable kernel, through the kernel cache.

The source is written into a cache entry named by its content hash (with the backend,
device and library versions) and imported from there. On a machine without CUDA the
kernel runs under Triton's interpreter (TRITON_INTERPRET=1, set before the source is
loaded); `compile_for` builds the same kernel for a GPU architecture without a GPU, so
CI catches GPU-only compile errors; `compile_all` does so for the arguments of a recorded
launch (`recorded_launches`) as Triton's JIT specializes them, the variant a GPU runs.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass

import torch

from dsc.codegen.triton import resources as usage
from dsc.codegen.triton.interpreter import use_interpreter
from dsc.errors import DscError
from dsc.runtime.cache import KernelCache, cache_key
from dsc.runtime.device import DeviceInfo, detect, device_limits, library_versions
from dsc.runtime.loader import load_module


@dataclass(frozen=True)
class KernelSpec:
    name: str  # the @triton.jit function in the source
    source: str
    grid: str = ""  # the launch grid rule, for the manifest
    # the constexpr holding the row count of its tl.dot tiles, for the resource gate
    # (dsc/codegen/triton/resources.py): None for a kernel without tensor-core dots
    dot_rows: str | None = None


# IR dtype -> Triton's signature type
TRITON_TYPES = {"f32": "fp32", "bf16": "bf16", "f16": "fp16", "i32": "i32", "i64": "i64", "u8": "u8",
                "f8e4m3": "fp8e4nv", "f8e5m2": "fp8e5"}


# Prepended to kernel sources that store float results. A float32 -> bf16 conversion
# rounds to nearest even on a GPU but truncates under Triton's interpreter;
# rounding on the bits gives the same answer on both.
HELPERS = '''
@triton.jit
def to_out(x, ty: tl.constexpr):
    if ty == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        x = bits.to(tl.float32, bitcast=True)
    return x.to(ty)


@triton.jit
def round_e4m3(x):
    """x saturated to +-448 and rounded to nearest even on e4m3's grid, as float32: exact
    in e4m3, so the cast that follows does not round (it rounds wrongly under the
    interpreter)."""
    x = tl.minimum(tl.maximum(x, -448.0), 448.0)
    a = tl.abs(x)
    bits = a.to(tl.uint32, bitcast=True)
    normal = ((bits + 0x7FFFF + ((bits >> 20) & 1)) & 0xFFF00000).to(tl.float32, bitcast=True)
    subnormal = (a + 24576.0) - 24576.0  # multiples of 2^-9 below 2^-6
    r = tl.where(a < 0.015625, subnormal, normal)
    return tl.where((x.to(tl.uint32, bitcast=True) >> 31) != 0, -r, r)  # -0.0 stays -0.0


@triton.jit
def softmax_step(s, m_i, l_i, acc):
    """One key block of an online softmax (flash attention): s [M, N] scaled scores in
    log2 units, -inf where masked. Returns (p, m, l, acc rescaled); the caller adds p @ V.
    A row that has seen nothing yet keeps m = -inf without producing NaNs."""
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp2(m_i - m_safe)
    p = tl.exp2(s - m_safe[:, None])
    return p, m_new, l_i * alpha + tl.sum(p, axis=1), acc * alpha[:, None]


@triton.jit
def softmax_finish(m_i, l_i, acc):
    """(acc / l, natural-log LSE) of an online softmax; rows that saw no key give 0 and -inf."""
    seen = l_i > 0
    out = acc / tl.where(seen, l_i, 1.0)[:, None]
    lse = tl.where(seen, (m_i + tl.log2(tl.where(seen, l_i, 1.0))) * 0.6931471805599453, float("-inf"))
    return out, lse


@triton.jit
def decode_e4m3(b):
    """e4m3 bytes (uint8) -> float32 without the fp8 type, which sm_80 lacks: the byte's
    bits placed in a float16 (exponent bias 15 against 7) and scaled by 2^8, exact for
    normal and subnormal values alike."""
    b = b.to(tl.uint16)
    h = ((b & 0x80) << 8) | ((b & 0x7F) << 7)
    return h.to(tl.float16, bitcast=True).to(tl.float32) * 256.0


@triton.jit
def fp8_step(x, w, s, ACT_QUANT: tl.constexpr, DOT_F32: tl.constexpr):
    """One BLOCK_K step of a block-scaled FP8 product (fp8_gemm.py, fused_moe.py), in float32: x
    [M, BLOCK_K] activations; w [BLOCK_K, N] e4m3 (uint8 bytes without ACT_QUANT); s [N]
    the weight scales of this K block."""
    xf = x.to(tl.float32)
    if ACT_QUANT:
        sa = tl.maximum(tl.max(tl.abs(xf), axis=1), 1e-12) / 448.0
        q = round_e4m3(xf / sa[:, None])
        if DOT_F32:
            part = tl.dot(q, w.to(tl.float32)) * sa[:, None]
        else:
            part = tl.dot(q.to(tl.float8e4nv), w) * sa[:, None]
    else:
        wf = decode_e4m3(w)  # weight-only: the e4m3 bytes come as uint8 (sm_80 has no fp8 type)
        if DOT_F32:
            part = tl.dot(xf, wf)
        else:
            part = tl.dot(x, wf.to(x.dtype))
    return part * s[None, :]


@triton.jit
def encode_e4m3(r):
    """float32 values exactly on e4m3's grid (round_e4m3's output) -> their bytes (uint8)."""
    a = tl.abs(r)
    bits = a.to(tl.uint32, bitcast=True)
    normal = (((bits >> 23) - 120) << 3) | ((bits >> 20) & 7)
    subnormal = (a * 512.0).to(tl.uint32)
    byte = tl.where(a < 0.015625, subnormal, normal)
    sign = (r.to(tl.uint32, bitcast=True) >> 31) << 7  # -0.0 keeps its sign, as torch's cast does
    return (byte | sign).to(tl.uint8)
'''


def with_helpers(source: str) -> str:
    """source (starting with its imports) with HELPERS after the imports."""
    head, sep, body = source.partition("import triton.language as tl\n")
    return head + sep + HELPERS + body


def next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def _entry(spec: KernelSpec, arch: str, interpret: bool):
    key = cache_key(source=spec.source, name=spec.name, backend="triton", device=arch, interpret=interpret,
                    versions=library_versions())
    return KernelCache().get_or_build(key, lambda: ({"kernel.py": spec.source}, {"kernel": spec.name}))


def load_kernel(spec: KernelSpec, device: torch.device | str = "cpu"):
    if _recording is not None:  # inside recorded_launches(): note the launch, run nothing
        return _Recorder(spec, _recording)
    info = detect(device)
    if info.kind == "cpu":
        use_interpreter()
    entry = _entry(spec, info.arch, info.kind == "cpu")
    module = load_module(entry.file("kernel.py"), f"{spec.name}_{entry.key[:12]}")
    return getattr(module, spec.name)


_recording: list | None = None
_recording_for: DeviceInfo | None = None


@dataclass
class _Recorder:
    spec: KernelSpec
    launches: list

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.launches.append((self.spec, args, kwargs, tuple(grid)))


@contextlib.contextmanager
def recorded_launches(gpu: DeviceInfo | None = None):
    """Inside the block, kernel launches are recorded as (spec, args, kwargs, grid) into the
    list it yields instead of running (outputs stay unwritten): the real arguments of a
    call, from which compile_all specializes a kernel as Triton's JIT does at launch.
    With gpu (a described card, e.g. REFERENCE_CARDS["sm90"]) every launcher makes its
    choices (tiles, splits, warps, stages, tensor-core dots) for that card, though the
    tensors are on the CPU: what a launch there would pass."""
    global _recording, _recording_for
    outer = _recording, _recording_for
    _recording, _recording_for = [], gpu
    try:
        yield _recording
    finally:
        _recording, _recording_for = outer


def choosing_for(t: torch.Tensor) -> torch.device | DeviceInfo:
    """The device a launch on t makes its choices for: t's own, or the card launches are
    being recorded for. Its .type ("cuda"/"cpu") is what launchers branch on; tensors are
    still allocated on t.device."""
    return _recording_for if _recording is not None and _recording_for is not None else t.device


_COMPILE = """
import importlib.util, json, sys
import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, make_backend
from triton.runtime.jit import create_function_from_signature

jobs, arch = json.load(sys.stdin)
target = GPUTarget("cuda", arch, 32)
backend = make_backend(target)


def value(a):
    # a tensor comes back as one element of its dtype, on a 16-byte boundary or off it as
    # the recorded one was: all the JIT reads of a tensor
    if isinstance(a, dict):
        t = torch.empty(32, dtype=getattr(torch, a["tensor"]))
        return t[:1] if a["aligned"] else t[1:2]
    return a


def specialize(fn, args, kwargs, constexprs, options):
    # JITFunction.run's own steps from a launch's arguments to what it compiles, in the
    # installed version's formats: ints equal to 1 become constexprs, ints and pointers
    # that are multiples of 16 get tt.divisibility
    kwargs = {**dict(zip(fn.arg_names, map(value, args))), **{k: value(v) for k, v in kwargs.items()},
              **constexprs, **options}
    bound, specialization, opts = create_function_from_signature(fn.signature, fn.params, backend)(**kwargs)
    given = {p.name: kwargs.get(p.name, p.default) for p in fn.params if p.is_constexpr}
    opts, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization, opts)
    return ASTSource(fn, signature, constexprs, attrs), opts.__dict__, given


done = {}
for i, (path, name, signature, constexprs, options) in enumerate(jobs):
    spec = importlib.util.spec_from_file_location(f"kernel_under_check_{i}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fn = getattr(module, name)
    args, kwargs, divisible = options.pop("args", None), options.pop("kwargs", {}), options.pop("divisible", [])
    try:
        if args is not None:
            src, options, given = specialize(fn, args, kwargs, constexprs, options)
        else:  # a signature as given, with the arguments named as multiples of 16
            attrs = {(fn.arg_names.index(a),): backend.parse_attr("D") for a in divisible}
            src, given = ASTSource(fn, signature, constexprs=constexprs, attrs=attrs), dict(constexprs)
        key = repr((path, name, src.signature, src.constants, src.attrs, sorted(options.items())))
        if key not in done:  # launches the JIT would serve from one compiled kernel
            compiled = triton.compile(src, target=target, options=options)
            named = {fn.arg_names[p[0]]: a for p, a in src.attrs.items() if len(p) == 1}
            done[key] = {"ptx": compiled.asm["ptx"], "cubin_bytes": len(compiled.asm["cubin"]),
                         "shared": compiled.metadata.shared, "num_warps": compiled.metadata.num_warps,
                         "num_stages": compiled.metadata.num_stages,
                         "constants": {k: v for k, v in given.items() if isinstance(v, (bool, int, float, str))},
                         "specialized": {
                             "constexpr": [p.name for p in fn.params
                                           if not p.is_constexpr and src.signature[p.name] == "constexpr"],
                             "divisible": [a for a, v in named.items()
                                           if any(x[0] == "tt.divisibility" for x in v)]}}
    except Exception as e:
        lines = [line for line in str(e).strip().splitlines() if line.strip(" ^")]
        print(json.dumps({"error": f"{name}: {type(e).__name__}: {' | '.join(lines[-3:])}"}))
        continue
    print(json.dumps(done[key]))
"""


def on_hopper(device) -> bool:
    """Whether a launch choosing for device (a choosing_for) targets sm_90 or later:
    wgmma and FP8 tensor cores, Hopper's tiles."""
    return device.type == "cuda" and int(device_limits(device).arch.removeprefix("sm")) >= 90


def launch_options(config: dict, device) -> dict:
    """num_warps and num_stages of a tuned config, for a launch on a GPU (the interpreter
    takes neither). device: a launch's choosing_for."""
    return {"num_warps": config["num_warps"], "num_stages": config["num_stages"]} if device.type == "cuda" else {}


def compile_all(jobs: list[tuple], arch: int, resources: bool = False) -> list[dict]:
    """Compile each (spec, signature, constexprs[, options]) for CUDA compute capability
    `arch` (80, 90) without a GPU, in one fresh process with the interpreter off (Triton
    fixes the mode at import). options: num_warps, num_stages, and either "args" (with
    "kwargs"), the arguments of a recorded launch (recorded_launches), which Triton's JIT
    specializes as it would at that launch, or "divisible", the arguments of the given
    signature to take as multiples of 16. constexprs win over recorded values. Returns
    {"ptx", "cubin_bytes", "shared", "num_warps", "num_stages", "constants" (the constexpr
    arguments), "specialized": {"constexpr": arguments specialized to constants,
    "divisible": multiples of 16}} per job, and with resources what ptxas reports
    ("registers", "stack_bytes", "spill_store_bytes", "spill_load_bytes") and the
    "tensor_core" instruction the PTX uses (dsc.codegen.triton.resources); a compile
    error raises DscError with Triton's message."""
    import json
    import subprocess

    payload = []
    for job in jobs:
        options = {k: v for k, v in (job[3] if len(job) > 3 else {}).items() if k not in ("grid", "group")}
        if "args" in options:
            options["args"] = [_argument(a) for a in options["args"]]
            options["kwargs"] = {k: _argument(v) for k, v in options.get("kwargs", {}).items()}
        payload.append([_entry(job[0], f"sm{arch}", False).file("kernel.py"), job[0].name, job[1], job[2], options])
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", _COMPILE], input=json.dumps([payload, arch]), capture_output=True,
                       text=True, env=env)
    if r.returncode != 0:
        raise DscError(f"Triton could not compile for sm_{arch}: {r.stderr.strip().splitlines()[-1:]}")
    results = [json.loads(line) for line in r.stdout.strip().splitlines() if line.startswith("{")]
    for res in results:
        if "error" in res:
            raise DscError(f"Triton could not compile for sm_{arch}: {res['error']}")
    if resources:
        for res, used in zip(results, usage.usages([res["ptx"] for res in results], arch)):
            res.update(used, tensor_core=usage.tensor_core(res["ptx"]), mma_operands=usage.mma_operands(res["ptx"]))
    return results


def _argument(a):
    """A launch argument as JSON: what Triton's JIT specializes on (a tensor's dtype and
    whether its address is a multiple of 16; ints, floats and flags by value)."""
    if isinstance(a, torch.Tensor):
        return {"tensor": str(a.dtype).removeprefix("torch."), "aligned": a.data_ptr() % 16 == 0}
    if a is None or isinstance(a, (bool, int, float)):
        return a
    raise DscError(f"compile check: cannot pass a launch argument of type {type(a).__name__}")


def compile_for(spec: KernelSpec, signature: dict, constexprs: dict, arch: int) -> dict:
    """compile_all for one kernel."""
    return compile_all([(spec, signature, constexprs)], arch)[0]
