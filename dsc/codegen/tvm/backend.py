"""The tvm backend's registration (dsc.codegen.backend): its kernels (llvm kernels built
on this CPU, or CUDA kernels from a `dsc compile` directory), and the CUDA sources
`dsc compile --backend tvm` writes for NVRTC."""

from __future__ import annotations

from dsc.codegen.backend import Backend, Sources
from dsc.codegen.schedule import schedule
from dsc.codegen.tvm.build import artifacts_active, require_tvm
from dsc.codegen.tvm.kernels import KERNELS, kernel_defs
from dsc.errors import DscError


def prepare() -> None:
    if not artifacts_active():  # kernels from a compiled directory need no TVM
        require_tvm()


def emit(layers, target: str) -> Sources:
    from dsc.codegen.tvm.cuda import emit as cuda_source

    require_tvm()
    if target == "cpu":
        raise DscError("dsc compile --backend tvm: --target cpu has nothing to write (backend='tvm' builds for "
                       "this CPU when it runs); choose sm90, sm80 or cuda")
    arch = int(target[2:])
    definitions, groups, files = {}, [], {}
    for layer, graph in layers:
        for grp in schedule(graph):
            keys = []
            for key, defn in kernel_defs(grp, "cuda"):
                keys.append(key)
                if key in definitions:
                    continue
                source, entry = cuda_source(defn, arch)
                name = f"{entry['symbol']}.sm{arch}.cu"
                files[name] = source
                definitions[key] = {**entry, "files": {str(arch): name}}
            if keys:
                groups.append({"layer": layer, "group": grp.kind, "fuses": [n.op for n in reversed(grp.nodes)],
                               "definitions": keys})
    n_kernels = sum(len(d["kernels"]) for d in definitions.values())
    return Sources(files, {"archs": [arch], "definitions": definitions, "groups": groups},
                   f"{len(files)} CUDA sources (sm_{arch}), {n_kernels} kernels")


BACKEND = Backend("tvm", KERNELS, emit, prepare, runs_on=("cpu",), run_elsewhere=(
    "its CUDA kernels run from `dsc compile` artifacts: `dsc run --artifacts`"), tunes_on="cpu", tune_elsewhere=(
    "tunes the llvm schedules on the CPU (--device cpu); the tvm backend's CUDA kernels run from `dsc compile` "
    "artifacts with their default schedules"))
