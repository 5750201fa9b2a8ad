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

from dsc.builders import build_mla, build_moe
from dsc.cli import load_config, output_path, write_atomic
from dsc.codegen.schedule import schedule
from dsc.errors import DscError
from dsc.ir.types import dtype as ir_dtype
from dsc.passes import PassContext, PassManager, resolve_pipeline


def _graphs(args, cfg, target: str):
    layers = ("mla", "moe") if args.layer == "all" else (args.layer,)
    for layer in layers:
        build = build_mla if layer == "mla" else build_moe
        yield layer, PassManager(resolve_pipeline(args.passes), PassContext(target=target)).run(
            build(cfg, ir_dtype(args.dtype)))


def compile_layers(args) -> int:
    if args.backend == "tvm":
        return compile_tvm(args)
    import dsc.codegen.triton  # noqa: F401  (before triton: enables its interpreter without CUDA)
    from dsc.codegen.triton.lower import compile_jobs

    cfg = load_config(args.model)
    target = "sm90" if args.target in (None, "cuda") else args.target
    out = output_path(args.out, "out", "dir")
    manifest = {"model": cfg.name, "backend": "triton", "target": target, "dtype": args.dtype,
                "passes": args.passes, "kernels": []}
    files: dict[str, str] = {}
    for layer, graph in _graphs(args, cfg, target):
        for grp in schedule(graph):
            for spec, signature, constexprs in compile_jobs(grp):
                name = f"{spec.name}.py"
                files[name] = spec.source
                manifest["kernels"].append({
                    "layer": layer, "group": grp.kind, "fuses": [n.op for n in reversed(grp.nodes)],
                    "kernel": spec.name, "file": name, "grid": spec.grid,
                    "signature": {k: v for k, v in signature.items() if v != "constexpr"},
                    "constexprs": constexprs})
    _write_all(out, files, manifest)
    print(f"dsc compile {cfg.name}: {len(manifest['kernels'])} kernel launches, {len(files)} sources -> {out}")
    return 0


def compile_tvm(args) -> int:
    from dsc.codegen.tvm.build import require_tvm
    from dsc.codegen.tvm.cuda import emit
    from dsc.codegen.tvm.lower import kernel_defs

    require_tvm()
    cfg = load_config(args.model)
    if args.target == "cpu":
        raise DscError("dsc compile --backend tvm: --target cpu has nothing to write (backend='tvm' builds for "
                       "this CPU when it runs); choose sm90, sm80 or cuda")
    target = "sm90" if args.target in (None, "cuda") else args.target
    arch = int(target[2:])
    out = output_path(args.out, "out", "dir")
    manifest = {"model": cfg.name, "backend": "tvm", "target": target, "archs": [arch], "dtype": args.dtype,
                "passes": args.passes, "definitions": {}, "groups": []}
    files: dict[str, str] = {}
    for layer, graph in _graphs(args, cfg, target):
        for grp in schedule(graph):
            keys = []
            for key, defn in kernel_defs(grp, "cuda"):
                keys.append(key)
                if key in manifest["definitions"]:
                    continue
                source, entry = emit(defn, arch)
                name = f"{entry['symbol']}.sm{arch}.cu"
                files[name] = source
                manifest["definitions"][key] = {**entry, "files": {str(arch): name}}
            if keys:
                manifest["groups"].append({"layer": layer, "group": grp.kind,
                                           "fuses": [n.op for n in reversed(grp.nodes)], "definitions": keys})
    _write_all(out, files, manifest)
    n_kernels = sum(len(d["kernels"]) for d in manifest["definitions"].values())
    print(f"dsc compile {cfg.name}: {len(files)} CUDA sources (sm_{arch}), {n_kernels} kernels -> {out}")
    return 0


def _write_all(out: str, files: dict[str, str], manifest: dict) -> None:
    for name, source in files.items():
        write_atomic(os.path.join(out, name), source)
    write_atomic(os.path.join(out, "manifest.json"), json.dumps(manifest, indent=2) + "\n")
