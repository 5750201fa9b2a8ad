"""The pass manager: runs a named pipeline, verifies the graph after each pass, and
can print it before and after each (TVM's Sequential + PassContext, in small).

A pass is a function Graph -> Graph registered under a name with `@register_pass`;
passes own only their rewrite.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from dsc.errors import ConfigError
from dsc.ir.graph import Graph
from dsc.ir.verifier import verify

PassFn = Callable[[Graph], Graph]
PASSES: dict[str, PassFn] = {}
# The pipeline a user gets without thinking. Empty until the optimisation passes land
# (issue 3): today "default" and "none" both run the naive graph.
DEFAULT_PIPELINE: tuple[str, ...] = ()


def register_pass(name: str) -> Callable[[PassFn], PassFn]:
    def deco(fn: PassFn) -> PassFn:
        PASSES[name] = fn
        return fn

    return deco


def resolve_pipeline(passes: str | Sequence[str] | None) -> tuple[str, ...]:
    """"default", "none"/None, a comma-separated string, or a list of pass names."""
    if passes is None or passes == "none":
        return ()
    if passes == "default":
        return DEFAULT_PIPELINE
    names = [p.strip() for p in passes.split(",")] if isinstance(passes, str) else list(passes)
    for n in names:
        if n not in PASSES:
            known = ", ".join(["default", "none", *sorted(PASSES)])
            raise ConfigError(f"passes: unknown pass {n!r}; known: {known}")
    return tuple(names)


@dataclass
class PassRecord:
    name: str
    before: Graph
    after: Graph
    seconds: float


@dataclass
class PassManager:
    pipeline: tuple[str, ...]
    records: list[PassRecord] = field(default_factory=list)

    def run(self, g: Graph) -> Graph:
        verify(g)
        for name in self.pipeline:
            start = time.perf_counter()
            out = verify(PASSES[name](g))
            self.records.append(PassRecord(name, g, out, time.perf_counter() - start))
            g = out
        return g
