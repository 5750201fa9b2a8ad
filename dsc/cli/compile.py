"""`dsc compile --backend triton|tvm --out DIR`: the kernel sources of a layer and a
manifest.json.

triton: for each kernel, what it fuses, its signature, its launch grid rule and its
constexprs (at GPU tile sizes), so a kernel engineer can read, diff and launch them
without dsc. tvm: CUDA C for the target's architecture, one file per kernel
definition, and per definition its buffers, dims and launch extents: what
`dsc run --artifacts DIR` (dsc/runtime/nvrtc.py) launches on a GPU machine without TVM."""

from __future__ import annotations

import json
import os

from dsc.cli import load_config, output_path, write_atomic
from dsc.codegen.backend import get_backend
from dsc.compiler import LAYERS, compile_layer, emit_sources


def compile_layers(args) -> int:
    get_backend(args.backend).prepare()  # before the work: a missing library is said first
    cfg = load_config(args.model)
    target = "sm90" if args.target in (None, "cuda") else args.target
    out = output_path(args.out, "out", "dir")
    layers = LAYERS if args.layer == "all" else (args.layer,)
    compiled = [compile_layer(cfg, layer, passes=args.passes, target=target, backend=None, dtype=args.dtype)
                for layer in layers]
    sources = emit_sources(compiled, args.backend, target)
    manifest = {"model": cfg.name, "backend": args.backend, "target": target, "dtype": args.dtype,
                "passes": args.passes, **sources.manifest}
    _write_all(out, sources.files, manifest)
    print(f"dsc compile {cfg.name}: {sources.summary} -> {out}")
    return 0


def _write_all(out: str, files: dict[str, str], manifest: dict) -> None:
    for name, source in files.items():
        write_atomic(os.path.join(out, name), source)
    write_atomic(os.path.join(out, "manifest.json"), json.dumps(manifest, indent=2) + "\n")
