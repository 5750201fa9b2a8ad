"""`dsc tune`: search the tunable kernels' configs for a model on this machine.

Each backend says where it tunes (dsc.codegen.backend: tunes_on). The triton backend
is tuned on a CUDA card (tile sizes, warps, pipeline stages, split factors, pruned by
the card's shared memory and registers, timed with CUDA events); the tvm backend's llvm
schedules on the CPU. Results are written after every kernel
to one JSON file per device name, <device>.json in the user directory
($DSC_TUNED_DIR, else $XDG_CACHE_HOME/dsc/tuned, else ~/.cache/dsc/tuned) or --out,
readable by every user; the runtime reads it before the files shipped in
dsc/runtime/tuned/. A re-run skips what the file already holds (--retune redoes it),
so an interrupted run loses only the kernel it was on.
"""

from __future__ import annotations

import os
import sys

import torch

from dsc.cli import int_list, load_config, output_path, write_atomic
from dsc.cli.memory import check_working_memory, moe_working_bytes
from dsc.codegen.backend import default_backend, get_backend
from dsc.nn.graph_module import resolve_device, resolve_dtype
from dsc.runtime import tuned
from dsc.runtime.device import detect, library_versions, limits_for
from dsc.runtime.tuned import TuningError
from dsc.tune import search, vllm_configs, workloads
from dsc.runtime.timing import CudaTimer, WallTimer, last_level_cache_bytes

QUICK = workloads.Buckets(batches=(1, 8, 64), contexts=(4096,), prefill=(2048,))


def _ints(text: str | None, flag: str, default: tuple[int, ...]) -> tuple[int, ...]:
    return default if text is None else int_list(text, flag)


def _setup(args):
    here = "cuda" if torch.cuda.is_available() else "cpu"
    asked = resolve_device(args.device) if args.device else None
    name = args.backend or default_backend(asked.type if asked else here)
    chosen = get_backend(name)
    device = asked
    if device is None:  # where the backend tunes, if this machine has it (every machine has a CPU)
        device = resolve_device(chosen.tunes_on) if chosen.tunes_on in (here, "cpu") else None
    if device is None or chosen.tunes_on != device.type:
        raise TuningError(f"dsc tune --backend {name} {chosen.tune_elsewhere or 'has nothing to tune'}")
    chosen.prepare()
    dtype = resolve_dtype(args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    base = QUICK if args.quick else workloads.Buckets()
    buckets = workloads.Buckets(_ints(args.batches, "batches", base.batches),
                                _ints(args.contexts, "contexts", base.contexts),
                                _ints(args.prefill, "prefill", base.prefill))
    return name, device, dtype, buckets


def tune(args) -> int:
    cfg = load_config(args.model)
    if args.import_vllm:
        return _import_vllm(args, cfg)
    if args.export_vllm:
        return _export_vllm(args, cfg)
    backend, device, dtype, buckets = _setup(args)
    if args.max_trials is not None and args.max_trials < 1:
        raise TuningError(f"--max-trials must be at least 1, got {args.max_trials}")
    if args.layer in ("moe", "all"):  # MLA skips the buckets whose cache would not fit; MoE runs every one
        tokens = max(buckets.batches + buckets.prefill)
        flags = " ".join(f"--{n} {v}" for n, v in (("batches", args.batches), ("prefill", args.prefill)) if v)
        check_working_memory([(flags or "the default buckets", f"the MoE call on {tokens} tokens",
                               moe_working_bytes(cfg, tokens))], device)
    info = detect(device)
    limits = limits_for(device)
    path = output_path(args.out or tuned.file_for(info.name), "out")
    # a file that is not a tuned-config file is refused, not overwritten; bad entries are retuned
    table = tuned.TunedTable.load(path) if os.path.isfile(path) else tuned.TunedTable(info.name)
    if table.device != info.name:
        raise TuningError(f"{path} holds configs for {table.device!r}, this device is {info.name!r}")
    dropped = tuned.problems_line(table, "they are tuned again")
    table.versions = {**library_versions(), "backend": backend}
    seen = set() if args.retune else {(k, dt, key) for k, by in table.entries.items() for dt, keys in by.items()
                                      for key in keys}
    timer = CudaTimer(device=device) if device.type == "cuda" else WallTimer()
    cache_bytes = last_level_cache_bytes(device)
    free = (torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None)
    fits = (lambda nbytes: nbytes <= free // 4) if free else (lambda nbytes: nbytes <= (8 << 30))
    dt = str(dtype).removeprefix("torch.")
    print(f"dsc tune {cfg.name}: backend {backend}, {dt}, {info.name} ({limits.arch}, "
          f"{limits.smem_per_block // 1024} KiB shared memory per block, {limits.sms} SMs)"
          if device.type == "cuda" else f"dsc tune {cfg.name}: backend {backend}, {dt}, {info.name}")
    print(f"  decode batches {list(buckets.batches)} x contexts {list(buckets.contexts)}; prefill tokens "
          f"{list(buckets.prefill)}; writing {path}")
    if dropped:
        print(f"  {dropped}")

    def found():
        if args.layer in ("mla", "all"):
            yield from workloads.mla_workloads(cfg, backend, args.passes, dtype, device, buckets, seen, cache_bytes,
                                               fits)
        if args.layer in ("moe", "all"):
            yield from workloads.moe_workloads(cfg, backend, args.passes, dtype, device, buckets, seen, cache_bytes)

    outcomes: list[search.Outcome] = []
    interrupted = False
    with _Progress() as bar:
        try:
            search.tune(found(), table, lambda: table.save(path), timer, limits, args.max_trials, bar.update,
                        done=lambda o: (outcomes.append(o), bar.log(_line(o))))
        except KeyboardInterrupt:
            interrupted = True
    tuned.forget()
    kept = sum(len(keys) for by in table.entries.values() for keys in by.values())
    if interrupted:
        print(f"interrupted: {path} keeps the {kept} configs finished so far; run again to go on")
        return 130
    print(f"{len(outcomes)} kernel launches tuned, {kept} configs in {path}")
    return 0


def _import_vllm(args, cfg) -> int:
    """vLLM's files into the tuned file of the card each names (or --out)."""
    for file in args.import_vllm:
        meta = vllm_configs.parse_name(file)
        path = output_path(args.out or tuned.file_for(meta.device), "out")
        table = tuned.TunedTable.load(path) if os.path.isfile(path) else tuned.TunedTable(meta.device)
        for line in vllm_configs.import_file(file, cfg, table):
            print(line)
        table.versions = {**table.versions, "imported": "vllm"}
        table.save(path)
        print(f"  wrote {path}")
    tuned.forget()
    return 0


def _export_vllm(args, cfg) -> int:
    """The model's tuned grouped-GEMM tiles as vLLM files."""
    path = args.source or tuned.file_for(detect(resolve_device("cuda" if torch.cuda.is_available() else "cpu")).name)
    if not os.path.isfile(path):
        raise TuningError(f"no tuned file at {path} to export (--from names one)")
    files = vllm_configs.export_files(tuned.TunedTable.load(path), cfg)
    if not files:
        raise TuningError(f"{path} holds no grouped-GEMM configs for {cfg.name}'s MoE")
    for name, text in files.items():
        out = os.path.join(args.export_vllm, name)
        write_atomic(out, text)
        print(f"wrote {out}")
    return 0


def _line(o: search.Outcome) -> str:
    cfg = " ".join(f"{k}={v}" for k, v in o.config.items())
    return (f"  {o.kernel:24s} {o.where:22s} {o.key}: {o.ms:.4f} ms (heuristic {o.default_ms:.4f}, "
            f"x{o.speedup:.2f}) {cfg} [{o.trials} tried, {o.rejected} rejected]")


class _Progress:
    """A rich progress bar on a terminal (kernel, trial, best so far); plain lines otherwise."""

    def __enter__(self):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(file=sys.stdout)
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("best {task.fields[best]}"), TimeElapsedColumn(), console=self.console,
                            transient=True, disable=not self.console.is_terminal)
        self.bar.__enter__()
        self.task, self.label = None, None
        return self

    def update(self, label: str, trial: int, of: int, best: float) -> None:
        if label != self.label:
            if self.task is not None:
                self.bar.remove_task(self.task)
            self.task, self.label = self.bar.add_task(label[:70], total=of, best="-"), label
        self.bar.update(self.task, completed=trial, best=f"{best:.4f} ms" if best < float("inf") else "-")

    def log(self, line: str) -> None:
        self.console.print(line, highlight=False, soft_wrap=True) if self.console.is_terminal else print(line)

    def __exit__(self, *exc):
        self.bar.__exit__(*exc)
