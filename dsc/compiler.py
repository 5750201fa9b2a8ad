"""The one compile entry point: (config, layer, passes, target, backend) -> a compiled
layer. build -> passes -> schedule -> runner, in that order and in this one place;
`dsc.nn`, `dsc compile`, `dsc show`, `dsc bench` and `dsc tune` all come through here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from dsc.builders import PAGE_SIZE, build_mla, build_moe
from dsc.codegen.backend import Sources, get_backend
from dsc.codegen.schedule import Group, schedule
from dsc.config import Config
from dsc.errors import ConfigError
from dsc.executor import Runner, make_runner
from dsc.ir.graph import Graph
from dsc.ir.types import DType, dtype as ir_dtype
from dsc.passes import PassContext, PassManager, resolve_pipeline

LAYERS = ("mla", "moe")


@dataclass
class Compiled:
    """One layer after its passes: the graph, the pass manager that made it (its records
    hold the graph before and after every pass, its log what each did) and, where a
    backend was named, the runner that executes the graph on it."""

    layer: str
    naive: Graph
    graph: Graph
    passes: PassManager
    backend: str | None
    runner: Runner | None

    def groups(self) -> list[Group]:
        """The kernel groups the graph is scheduled into."""
        return schedule(self.graph)


def build(cfg: Config, layer: str, dtype: DType | str = "f32", page_size: int = PAGE_SIZE) -> Graph:
    """The naive IR graph of one layer (the input of every pass)."""
    if not isinstance(cfg, Config):
        raise ConfigError(f"cfg: expected a dsc.Config, got {type(cfg).__name__}")
    if layer == "mla":
        return build_mla(cfg, ir_dtype(dtype), page_size)
    if layer == "moe":
        return build_moe(cfg, ir_dtype(dtype))
    raise ConfigError(f"layer: expected one of {', '.join(LAYERS)}, got {layer!r}")


def compile_layer(cfg: Config, layer: str, *, passes: str | Sequence[str] | None = "default", target: str = "sm90",
                  backend: str | None = "reference", dtype: DType | str = "f32", page_size: int = PAGE_SIZE) -> Compiled:
    """Build the layer, run the passes for target, and (unless backend is None) make its
    runner on that backend ("reference", or a registered codegen backend)."""
    naive = build(cfg, layer, dtype, page_size)
    manager = PassManager(resolve_pipeline(passes), PassContext(target=target))
    graph = manager.run(naive)
    runner = make_runner(graph, backend) if backend is not None else None
    return Compiled(layer, naive, graph, manager, backend, runner)


def emit_sources(compiled: Sequence[Compiled], backend: str, target: str) -> Sources:
    """The kernel sources `dsc compile` writes for the compiled layers on one backend."""
    return get_backend(backend).emit([(c.layer, c.graph) for c in compiled], target)
