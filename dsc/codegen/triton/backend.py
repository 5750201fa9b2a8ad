"""The triton backend's registration (dsc.codegen.backend): its lowering, and the
sources `dsc compile --backend triton` writes (each kernel once, with a manifest of every
launch's signature and GPU constexprs)."""

from __future__ import annotations

from dsc.codegen.backend import Backend, Sources
from dsc.codegen.schedule import schedule
from dsc.codegen.triton.lower import KERNELS, KINDS, compile_jobs, lower


def emit(layers, target: str) -> Sources:
    files: dict[str, str] = {}
    kernels = []
    for layer, graph in layers:
        for grp in schedule(graph):
            for spec, signature, constexprs in compile_jobs(grp):
                name = f"{spec.name}.py"
                files[name] = spec.source
                kernels.append({
                    "layer": layer, "group": grp.kind, "fuses": [n.op for n in reversed(grp.nodes)],
                    "kernel": spec.name, "file": name, "grid": spec.grid,
                    "signature": {k: v for k, v in signature.items() if v != "constexpr"},
                    "constexprs": constexprs})
    return Sources(files, {"kernels": kernels}, f"{len(kernels)} kernel launches, {len(files)} sources")


BACKEND = Backend("triton", KERNELS, KINDS, lower, emit)
