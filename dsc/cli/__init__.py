"""The `dsc` command line: run, show, compile, tune and bench.

Bad input (unknown preset, malformed JSON, an invalid config, unsupported dtype or
device) prints one line on stderr and exits with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from dsc.bench.cards import CARDS
from dsc.errors import DscError

EXIT_BAD_INPUT = 2
# torch's generators take seeds below 2**64, and the runs derive a few more from it (seed + 1, ...)
MAX_SEED = 2 ** 63 - 1


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        sys.stderr.write(f"dsc: error: {message} (see dsc --help)\n")
        raise SystemExit(EXIT_BAD_INPUT)


def seed(text: str) -> int:
    """--seed: an integer torch's generators accept (argparse reports the refusal)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be between 0 and 2**63 - 1, got {text}")
    return value


def _add_model_args(p: argparse.ArgumentParser) -> None:
    from dsc.presets import DEFAULT_PRESET

    p.add_argument("model", nargs="?", default=DEFAULT_PRESET,
                   help=f"a preset name or a config.json path (default {DEFAULT_PRESET})")
    p.add_argument("--layer", choices=("mla", "moe", "all"), default="all")
    p.add_argument("--passes", default="default", help="default, none, or a comma-separated list of passes")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--target", default=None, choices=("sm90", "sm80", "cuda", "cpu"),
                   help="machine the passes (and dsc compile) target: absorb's crossover, fp8's mode, the CUDA "
                        "architecture (default: the CUDA device's, else sm90, i.e. H100/H800; cuda means sm90)")


def build_parser() -> argparse.ArgumentParser:
    from dsc import __version__
    from dsc.codegen.backend import CODEGEN_BACKENDS
    from dsc.executor import BACKENDS

    parser = _Parser(prog="dsc", description="Compile DeepSeek MLA and MoE layers.")
    parser.add_argument("--version", action="version", version=f"dsc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="compile, execute on random weights, compare with the eager reference")
    _add_model_args(run)
    run.add_argument("--backend", choices=BACKENDS, default="reference")
    run.add_argument("--device", default="cpu")
    run.add_argument("--batch", type=int, default=2, help="batch rows (default 2)")
    run.add_argument("--prompt-len", type=int, default=16, help="prefill tokens per row (default 16)")
    run.add_argument("--tokens", type=int, default=32, help="MoE tokens (default 32)")
    run.add_argument("--seed", type=seed, default=0)
    run.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    run.add_argument("--artifacts", metavar="DIR",
                     help="run the tvm backend from `dsc compile --backend tvm --out DIR` (CUDA through NVRTC)")

    show = sub.add_parser("show", help="print the IR before and after each pass, with its cost")
    _add_model_args(show)
    show.add_argument("--cost", action="store_true",
                      help="also print absorb's FLOP and byte formulas in T and S and the crossover it chose")

    comp = sub.add_parser("compile", help="write the generated kernel sources and a manifest.json")
    _add_model_args(comp)
    comp.add_argument("--backend", choices=CODEGEN_BACKENDS, default="triton")
    comp.add_argument("--out", required=True, metavar="DIR", help="directory for the sources and manifest.json")

    tune = sub.add_parser("tune", help="search kernel configs on this machine, write its tuned-config JSON")
    _add_model_args(tune)
    tune.set_defaults(dtype=None)
    tune.add_argument("--backend", choices=CODEGEN_BACKENDS, default=None,
                      help="triton on a CUDA card (the default there), tvm's llvm schedules on a CPU (the default "
                           "without CUDA)")
    tune.add_argument("--device", default=None, help="cuda or cpu (default: follows the backend)")
    tune.add_argument("--batches", metavar="N,N,..", help="decode batch buckets (default 1,2,4,...,256)")
    tune.add_argument("--contexts", metavar="S,S,..", help="decode context buckets (default 1024 ... 131072)")
    tune.add_argument("--prefill", metavar="T,T,..", help="prefill token buckets (default 512,2048,8192,16384)")
    tune.add_argument("--quick", action="store_true", help="a few buckets: batches 1,8,64, context 4096, prefill 2048")
    tune.add_argument("--max-trials", type=int, default=None,
                      help="configs timed per launch (the heuristic's plus a random sample; default all that fit)")
    tune.add_argument("--retune", action="store_true", help="redo launches the file already holds")
    tune.add_argument("--out", metavar="PATH", help="the JSON to write (default: this device's file in the user "
                                                     "directory: $DSC_TUNED_DIR, else $XDG_CACHE_HOME/dsc/tuned, "
                                                     "else ~/.cache/dsc/tuned)")
    tune.add_argument("--import-vllm", metavar="FILE", action="append", default=[],
                      help="take a vLLM fused-MoE config file (E=..,N=..,device_name=...json) into the tuned file of "
                           "its card (or --out) for the model's grouped GEMMs; no tuning runs (repeatable)")
    tune.add_argument("--export-vllm", metavar="DIR",
                      help="write the model's tuned grouped-GEMM tiles as vLLM fused-MoE config files into DIR")
    tune.add_argument("--from", dest="source", metavar="PATH",
                      help="the tuned file --export-vllm reads (default: this device's file in the user directory)")

    bench = sub.add_parser("bench", help="time layers and kernel groups against PyTorch and the measured roofline")
    _add_model_args(bench)
    bench.set_defaults(dtype=None)
    bench.add_argument("--backend", choices=BACKENDS, default=None,
                       help="default: triton on a CUDA device, tvm on a CPU")
    bench.add_argument("--device", default=None, help="cuda or cpu (default: cuda when there is one)")
    bench.add_argument("--batch", type=int, default=2, help="decode batch rows (default 2)")
    bench.add_argument("--contexts", default="256,1024,4096", metavar="S,S,..",
                       help="MLA decode context lengths (default 256,1024,4096)")
    bench.add_argument("--context", type=int, default=None,
                       help="the context of the per-group decode breakdown (default: the largest of --contexts)")
    bench.add_argument("--prefill", type=int, default=512, help="MLA prefill tokens (default 512)")
    bench.add_argument("--tokens", type=int, default=64, help="MoE tokens besides --batch (default 64)")
    bench.add_argument("--compare", default="eager,compile,hf",
                       help="baselines: eager (dsc.eager), compile (torch.compile of it), hf (transformers), none")
    bench.add_argument("--repeat", type=int, default=10, help="timed repetitions per measurement (median)")
    bench.add_argument("--seed", type=seed, default=0)
    bench.add_argument("--quick", action="store_true", help="a small roofline measurement (for tests)")
    bench.add_argument("--no-plots", action="store_true", help="JSON only (no matplotlib needed)")
    bench.add_argument("--traffic", choices=[*CARDS, "all"], default=None, metavar="CARD",
                       help="the traffic model only, no timing: each Triton kernel's HBM/L2/shared-memory bytes, "
                            f"FLOPs and bound on CARD ({', '.join(CARDS)} or all), at these shapes, bf16 and FP8; "
                            "runs without a GPU (on a GPU the model is printed beside the timings anyway)")
    bench.add_argument("--out", default=os.path.join("benchmarks", "results"), metavar="DIR",
                       help="results root: writes DIR/<device>/bench-*.json and PNGs (default benchmarks/results)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "target", None) == "cuda":
        args.target = "sm90"  # "cuda" names the default CUDA target
    try:
        if args.command == "run":
            from dsc.cli.run import run

            return run(args)
        if args.command == "compile":
            from dsc.cli.compile import compile_layers

            return compile_layers(args)
        if args.command == "tune":
            from dsc.cli.tune import tune

            return tune(args)
        if args.command == "bench":
            from dsc.cli.bench import bench

            return bench(args)
        from dsc.cli.show import show

        return show(args)
    except DscError as e:
        sys.stderr.write(f"dsc: error: {e}\n")
        return EXIT_BAD_INPUT


def int_list(text: str, flag: str) -> tuple[int, ...]:
    """A comma-separated list of positive ints (--batches 1,8,64), or InputError naming the flag."""
    from dsc.errors import InputError

    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InputError(f"--{flag}: expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise InputError(f"--{flag}: expected positive integers, got {text!r}")
    return values


def output_path(path: str, flag: str, kind: str = "file") -> str:
    """The absolute path of an output (`kind` "file" or "dir"), checked before any work runs
    so that no result is lost at the end: it must not be the wrong kind of thing, and
    its nearest existing folder must be a directory we can create files in. Returns it."""
    from dsc.errors import InputError

    def refuse(why: str):
        raise InputError(f"--{flag} {path}: {why}")

    full = os.path.abspath(path)
    if os.path.isdir(full):
        if kind == "file":
            refuse("is a directory, expected a file path")
        folder = full
    elif os.path.lexists(full):
        if kind == "dir":
            refuse("exists and is not a directory")
        folder = os.path.dirname(full)  # a file we replace
    else:
        folder = os.path.dirname(full)
        while not os.path.lexists(folder):
            folder = os.path.dirname(folder)
        if not os.path.isdir(folder):
            refuse(f"{folder} is not a directory")
    # os.access alone says yes to root on a read-only mount: also create (and drop) a file there
    try:
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied")
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".dsc-probe-"):
            pass
    except OSError as e:
        refuse(f"cannot write in {folder} ({e.strerror or e})")
    return full


def write_atomic(path: str, text: str) -> None:
    """Write a text file whole or not at all: a reader never sees half of it."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_config(model: str):
    """A preset name, or a path to a config.json (or a directory holding one)."""
    import os

    from dsc.config import Config
    from dsc.presets import PRESET_NAMES

    if model in PRESET_NAMES or model == "deepseek-r1" or not (os.path.exists(model) or model.endswith(".json")):
        return Config.preset(model)
    return Config.from_hf(model)
