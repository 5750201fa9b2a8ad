"""The triton backend's registration (dsc.codegen.backend): its kernels, and the
sources `dsc compile --backend triton` writes (each kernel once, with a manifest of every
launch's signature and GPU constexprs)."""

from __future__ import annotations

from dsc.codegen.backend import Backend, Sources
from dsc.codegen.schedule import schedule
from dsc.codegen.triton.kernels import KERNELS


def compile_jobs(group) -> list[tuple]:
    """(spec, signature, constexprs) of every kernel a group launches, at GPU tile
    sizes: what the sm_80/sm_90 compile check and `dsc compile`'s manifest use."""
    return KERNELS.listing(group)


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


BACKEND = Backend("triton", KERNELS, emit, runs_on=("cuda", "cpu"), tunes_on="cuda", tune_elsewhere=(
    "times kernels on a CUDA device, and this run has none (Triton's CPU interpreter checks correctness, it "
    "cannot time); on a CPU, --backend tvm tunes the llvm schedules"))
