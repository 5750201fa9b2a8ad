"""vLLM's fused-MoE config files, into and out of dsc's tuned tables.

vLLM ships one JSON file per expert count, intermediate size, card and FP8 scheme:

    E=256,N=2048,device_name=NVIDIA_H100_80GB_HBM3,dtype=fp8_w8a8,block_shape=[128, 128].json
    {"1": {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 128, "GROUP_SIZE_M": 1,
           "num_warps": 4, "num_stages": 3}, "64": {...}, ...}

Each key is a batch size in tokens; its tiles serve both of the layer's GEMMs (gate+up
and down). dsc's grouped GEMM is the same design (sorted expert runs, BLOCK_M row tiles,
GROUP_M launch order), its tuned configs keyed by the launch's shape with M the tokens.
Importing writes each of the file's batch sizes for both GEMMs the model's MoE layer
launches (their shapes taken from the launches themselves, recorded on placeholder
tensors: nothing runs); exporting writes the gate+up GEMM's tuned tiles per batch size
in vLLM's format and naming. A batch size whose tiles dsc's kernel cannot take is left
out and named.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

from dsc.bench.cards import card_for
from dsc.config import Config
from dsc.runtime.device import ARCH_LIMITS
from dsc.runtime.tuned import TunedTable, TuningError, parse_key, shape_key

KERNEL = "triton.grouped_gemm"
# vLLM's names for the grouped GEMM's tunables -> dsc's (the same meaning)
NAMES = {"BLOCK_SIZE_M": "BLOCK_M", "BLOCK_SIZE_N": "BLOCK_N", "BLOCK_SIZE_K": "BLOCK_K", "GROUP_SIZE_M": "GROUP_M",
         "num_warps": "num_warps", "num_stages": "num_stages"}
FP8_BLOCK = 128  # dsc's FP8 pipeline: 128 x 128 block scales, activations quantized per 128 channels
_NAME = re.compile(r"E=(?P<E>\d+),N=(?P<N>\d+),device_name=(?P<device>[^,]+)"
                   r"(?:,dtype=(?P<dtype>[^,]+?))?(?:,block_shape=\[(?P<bn>\d+), ?(?P<bk>\d+)\])?\.json")


@dataclass(frozen=True)
class VllmFile:
    experts: int
    inter: int  # vLLM's N: the intermediate size (the down GEMM's K)
    device: str  # dsc's spelling: "NVIDIA H100 80GB HBM3"
    fp8: bool  # dtype=fp8_w8a8 with 128 x 128 block scales

    @property
    def name(self) -> str:
        fp8 = f",dtype=fp8_w8a8,block_shape=[{FP8_BLOCK}, {FP8_BLOCK}]" if self.fp8 else ""
        return f"E={self.experts},N={self.inter},device_name={self.device.replace(' ', '_')}{fp8}.json"


def parse_name(path: str) -> VllmFile:
    """What a vLLM config file's name says, or TuningError naming what dsc cannot take."""
    base = os.path.basename(path)
    m = _NAME.fullmatch(base)
    if not m:
        raise TuningError(f"{base}: not a vLLM fused-MoE config name (E=<experts>,N=<intermediate>,"
                          "device_name=<card>[,dtype=...][,block_shape=[n, k]].json)")
    dtype, bn, bk = m["dtype"], m["bn"], m["bk"]
    if dtype not in (None, "fp8_w8a8"):
        raise TuningError(f"{base}: dtype={dtype} has no dsc pipeline (dsc takes bf16/fp16 files and "
                          f"fp8_w8a8 with block_shape=[{FP8_BLOCK}, {FP8_BLOCK}])")
    if dtype == "fp8_w8a8" and (bn, bk) != (str(FP8_BLOCK), str(FP8_BLOCK)):
        shape = f"block_shape=[{bn}, {bk}]" if bn else "no block_shape (per-tensor or per-channel scales)"
        raise TuningError(f"{base}: fp8_w8a8 with {shape}: dsc's FP8 pipeline is block-scaled "
                          f"[{FP8_BLOCK}, {FP8_BLOCK}]")
    if dtype is None and bn:
        raise TuningError(f"{base}: block_shape without an FP8 dtype")
    return VllmFile(int(m["E"]), int(m["N"]), m["device"].replace("_", " "), dtype == "fp8_w8a8")


def read(path: str) -> tuple[VllmFile, dict[int, dict]]:
    """(its name's facts, batch size -> vLLM's config); TuningError for a file that is not one."""
    meta = parse_name(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TuningError(f"{os.path.basename(path)}: cannot read it as JSON ({e})") from None
    if not isinstance(data, dict):
        raise TuningError(f"{os.path.basename(path)}: expected {{batch size: {{BLOCK_SIZE_M: ..., ...}}}}")
    out = {}
    for key, cfg in data.items():
        if not key.isdigit():  # vLLM files may carry "triton_version" and the like
            continue
        if not isinstance(cfg, dict) or set(cfg) != set(NAMES) or not all(type(v) is int for v in cfg.values()):
            raise TuningError(f"{os.path.basename(path)}: batch size {key} must hold integer "
                              f"{', '.join(NAMES)}, got {json.dumps(cfg)[:80]}")
        out[int(key)] = cfg
    return meta, out


def grouped_shapes(cfg: Config, fp8: bool, arch: str = "sm90") -> list[dict]:
    """The shapes (without M) of the grouped GEMMs cfg's MoE layer launches: gate+up and
    down, from the launches made on placeholder tensors (shared experts appended where
    the passes fuse them)."""
    from dsc.bench.resources import FP8
    from dsc.compiler import compile_layer
    from dsc.executor.launches import launch_jobs
    from dsc.runtime.search_space import recording

    graph = compile_layer(cfg, "moe", passes=FP8 if fp8 else "default", target=arch, backend=None,
                          dtype="bf16").graph
    with recording() as calls:
        launch_jobs(graph, {"N": 64}, arch)
    shapes = {shape_key({k: v for k, v in c.shape.items() if k != "M"}): c.shape
              for c in calls if c.space.kernel == KERNEL}
    return [{k: v for k, v in s.items() if k != "M"} for s in shapes.values()]


def _matches(meta: VllmFile, cfg: Config, shape: dict) -> bool:
    """The file's E and N are this launch's experts (routed, or with the shared ones
    appended) and intermediate size."""
    inter = shape["N"] if shape["swiglu"] else shape["K"]
    return meta.inter == inter and meta.experts in (shape["experts"], shape["experts"] - cfg.n_shared_experts)


def import_file(path: str, cfg: Config, table: TunedTable, dtype: str = "bfloat16") -> list[str]:
    """Put a vLLM file's tiles into table for both of cfg's grouped GEMMs; lines saying
    what was taken and what was left out, and why."""
    from dsc.codegen.triton import fused_moe

    meta, configs = read(path)
    if meta.device != table.device:
        raise TuningError(f"{os.path.basename(path)} is for {meta.device!r}, the table for {table.device!r}")
    shapes = [s for s in grouped_shapes(cfg, meta.fp8) if _matches(meta, cfg, s)]
    if not shapes:
        raise TuningError(f"{os.path.basename(path)} is for E={meta.experts}, N={meta.inter}; {cfg.name}'s MoE runs "
                          f"{cfg.n_routed_experts} routed experts (+{cfg.n_shared_experts} shared) of intermediate "
                          f"size {cfg.moe_intermediate_size}")
    space = fused_moe.TUNING
    card = card_for(meta.device)
    limits = ARCH_LIMITS[card.arch] if card else None  # an unknown card: its limits are checked at launch
    lines, taken = [], 0
    for m, vllm in sorted(configs.items()):
        config = {NAMES[k]: v for k, v in vllm.items()}
        for shape in shapes:
            full = {**shape, "M": m}
            why = _refusal(space, config, full, limits)
            if why:
                lines.append(f"  M={m} {'gate+up' if shape['swiglu'] else 'down'}: left out ({why})")
                continue
            table.put(KERNEL, dtype, shape_key(full), {"config": config, "source": f"vllm {os.path.basename(path)}"})
            taken += 1
    return [f"{os.path.basename(path)}: {taken} configs for {len(configs)} batch sizes x {len(shapes)} GEMMs", *lines]


def _refusal(space, config: dict, shape: dict, limits) -> str | None:
    """Why dsc's grouped GEMM cannot take config at shape (on a card of these limits), or None."""
    for name, value in config.items():
        if value not in space.params[name]:
            return f"{name}={value} is not one of dsc's {list(space.params[name])}"
    for name, value in space.fixed(shape).items():
        if config[name] != value:
            return f"{name} must be {value} here (one weight scale per K step)"
    if config["BLOCK_M"] % shape["block"]:
        return f"BLOCK_M={config['BLOCK_M']} is not a multiple of the {shape['block']}-row expert runs"
    if limits is not None and not space.fits(config, shape, limits):
        return (f"does not fit: its tiles exceed the shape (N={shape['N']}, K={shape['K']}) or the card's "
                f"{limits.smem_per_block // 1024} KiB of shared memory / registers")
    return None


def export_files(table: TunedTable, cfg: Config) -> dict[str, str]:
    """The table's gate+up grouped-GEMM tiles for cfg's MoE as vLLM files, one per
    pipeline found: {file name: its JSON text}, batch sizes as keys."""
    files = {}
    for fp8 in (False, True):
        for shape in grouped_shapes(cfg, fp8):
            if not shape["swiglu"]:
                continue  # vLLM keeps one config per batch size: the gate+up GEMM's, the larger
            per_m = {}
            for by_key in table.entries.get(KERNEL, {}).values():
                for key, rec in by_key.items():
                    tuned = parse_key(key)
                    if {k: v for k, v in tuned.items() if k != "M"} == shape and isinstance(tuned.get("M"), int):
                        per_m[tuned["M"]] = {v: rec["config"][d] for v, d in NAMES.items()}
            if per_m:
                name = VllmFile(cfg.n_routed_experts, shape["N"], table.device, fp8).name
                files[name] = json.dumps({str(m): per_m[m] for m in sorted(per_m)}, indent=4) + "\n"
    return files
