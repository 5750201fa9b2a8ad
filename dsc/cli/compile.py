"""`dsc compile --backend triton --out DIR`: the kernel sources of a layer and a
manifest.json saying, for each kernel, what it fuses, its signature, its launch grid
rule and its constexprs (at GPU tile sizes), so a kernel engineer can read, diff and
launch them without dsc."""

from __future__ import annotations

import json
import os

from dsc.builders import build_mla, build_moe
from dsc.cli import load_config
from dsc.codegen.schedule import schedule
from dsc.errors import DscError
from dsc.ir.types import dtype as ir_dtype
from dsc.passes import PassContext, PassManager, resolve_pipeline


def compile_layers(args) -> int:
    if args.backend != "triton":
        raise DscError(f"dsc compile: backend {args.backend!r} has no code generator yet (triton has)")
    import dsc.codegen.triton  # noqa: F401  (before triton: enables its interpreter without CUDA)
    from dsc.codegen.triton.lower import compile_jobs

    cfg = load_config(args.model)
    target = args.target or "sm90"
    out = os.path.abspath(args.out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise DscError(f"dsc compile: --out {args.out} exists and is not a directory")
    layers = ("mla", "moe") if args.layer == "all" else (args.layer,)
    manifest = {"model": cfg.name, "backend": "triton", "target": target, "dtype": args.dtype,
                "passes": args.passes, "kernels": []}
    files: dict[str, str] = {}
    for layer in layers:
        build = build_mla if layer == "mla" else build_moe
        graph = PassManager(resolve_pipeline(args.passes), PassContext(target=target)).run(
            build(cfg, ir_dtype(args.dtype)))
        for grp in schedule(graph):
            for spec, signature, constexprs in compile_jobs(grp):
                name = f"{spec.name}.py"
                files[name] = spec.source
                manifest["kernels"].append({
                    "layer": layer, "group": grp.kind, "fuses": [n.op for n in reversed(grp.nodes)],
                    "kernel": spec.name, "file": name, "grid": spec.grid,
                    "signature": {k: v for k, v in signature.items() if v != "constexpr"},
                    "constexprs": constexprs})
    os.makedirs(out, exist_ok=True)
    for name, source in files.items():
        _write(os.path.join(out, name), source)
    _write(os.path.join(out, "manifest.json"), json.dumps(manifest, indent=2) + "\n")
    print(f"dsc compile {cfg.name}: {len(manifest['kernels'])} kernel launches, {len(files)} sources -> {out}")
    return 0


def _write(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)  # atomic: a reader never sees half a file
