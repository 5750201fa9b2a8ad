"""What a kernel compiled for a GPU uses, read without one, and the gate that holds the
kernels to their design (the report's records: dsc/bench/resources.py).

`compile_all(..., resources=True)` adds to each result what ptxas reports for its PTX
(registers, stack, spilled bytes), the shared memory and launch options Triton compiled
with, and the tensor-core instruction the PTX uses. `problems` says where a kernel
misses what its KernelSpec declares: no spills anywhere; where the spec names its dot's
row tile (`dot_rows`), 16-bit or FP8 dots run on tensor cores, as wgmma on sm_90 where a
warpgroup gets a 64-row tile (Triton's MMAv3 rule) and as mma.sync otherwise, and FP8 x
FP8 dots (ACT_QUANT) that are wgmma take e4m3 operands (no upcast).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor

_USAGE = {
    "registers": re.compile(r"Used (\d+) registers"),
    "stack_bytes": re.compile(r"(\d+) bytes stack frame"),
    "spill_store_bytes": re.compile(r"(\d+) bytes spill stores"),
    "spill_load_bytes": re.compile(r"(\d+) bytes spill loads"),
}


USAGE_FIELDS = tuple(_USAGE)


def ptxas_usage(text: str) -> dict:
    """Registers, stack and spills from `ptxas -v` output (one kernel); None where absent."""
    out = {}
    for key, pattern in _USAGE.items():
        found = pattern.search(text)
        out[key] = int(found.group(1)) if found else None
    return out


def tensor_core(ptx: str) -> str:
    """The tensor-core instruction a kernel's PTX issues: wgmma, mma.sync or none."""
    if "wgmma.mma_async" in ptx:
        return "wgmma"
    if re.search(r"\bmma\.sync\b", ptx):
        return "mma.sync"
    return "none"


_MMA = re.compile(r"\b(?:wgmma\.mma_async|mma\.sync)\S*?\.f32\.(\w+)\.(\w+)\b")


def mma_operands(ptx: str) -> list[str]:
    """The operand types of the PTX's tensor-core instructions (bf16, f16, e4m3, tf32...)."""
    return sorted({t for pair in _MMA.findall(ptx) for t in pair})


def ptxas_path(arch: int) -> str:
    """The ptxas Triton itself compiles this arch with (newer Tritons pick one per arch)."""
    from triton.backends.nvidia.compiler import get_ptxas

    return get_ptxas(arch).path


def ptx_usage(ptx: str, arch: int) -> dict:
    """ptxas_usage of PTX assembled for arch (sm_90a: Triton's target for Hopper)."""
    sm = f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        done = subprocess.run([ptxas_path(arch), f"-arch={sm}", "-v", path, "-o", os.devnull], capture_output=True,
                              text=True)
    if done.returncode != 0:
        return {key: None for key in _USAGE}
    return ptxas_usage(done.stderr + done.stdout)


def usages(ptxs: list[str], arch: int) -> list[dict]:
    """ptx_usage of each, ptxas runs in parallel."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return list(pool.map(lambda ptx: ptx_usage(ptx, arch), ptxs))


def expected_tensor_core(dot_rows: str | None, constants: dict, num_warps: int, arch: int) -> str | None:
    """The instruction a kernel's dots should compile to, or None where there is no rule:
    no declared dot, or float32 dots (DOT_F32: the interpreter's and float32 models' path)."""
    if dot_rows is None or constants.get("DOT_F32", False):
        return None
    if arch >= 90 and constants[dot_rows] >= 64 and num_warps % 4 == 0:
        return "wgmma"
    return "mma.sync"


_RANK = {"none": 0, "mma.sync": 1, "wgmma": 2}


def problems(record: dict) -> list[str]:
    """What a report record (dsc.bench.resources.records) misses of its design, each a line naming it."""
    where = f"{record['name']} (sm_{record['arch']}, {record['variant']})"
    out = []
    if record["registers"] is None:
        out.append(f"{where}: ptxas reported no register count")
    spilled = (record["spill_store_bytes"] or 0) + (record["spill_load_bytes"] or 0)
    if spilled:
        out.append(f"{where}: spills {record['spill_store_bytes']} B stored / {record['spill_load_bytes']} B "
                   f"loaded per thread ({record['registers']} registers)")
    want = record["expected_tensor_core"]
    if want is not None and _RANK[record["tensor_core"]] < _RANK[want]:
        out.append(f"{where}: its dots should compile to {want}, the PTX has {record['tensor_core']}")
    if want == "wgmma" and record["constants"].get("ACT_QUANT") and "e4m3" not in record["mma_operands"]:
        out.append(f"{where}: FP8 x FP8 dots should be e4m3 wgmma, the PTX's are {record['mma_operands']}")
    return out
