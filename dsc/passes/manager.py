"""The pass manager: runs a named pipeline, verifies the graph after each pass, times
it, keeps a log of what each pass did (or why it did not apply), and can print the
graph before and after each (TVM's Sequential + PassContext, in small).

A pass is a function (Graph, PassContext) -> Graph registered with `@register_pass`;
passes own only their rewrite. A pass may declare passes it must run after; the
manager refuses a pipeline that breaks such an order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from dsc.errors import ConfigError
from dsc.ir.graph import Graph
from dsc.ir.verifier import verify


@dataclass
class PassContext:
    """Options passes read, and the log they write."""

    target: str = "sm90"  # sm90 (H100/H800): FP8 tensor cores; sm80 (A100): weight-only FP8
    log: list[str] = field(default_factory=list)
    current: str = ""

    def note(self, message: str) -> None:
        self.log.append(f"{self.current}: {message}" if self.current else message)


PassFn = Callable[[Graph, PassContext], Graph]


@dataclass(frozen=True)
class Pass:
    name: str
    fn: PassFn
    after: tuple[str, ...] = ()  # passes that, when in the pipeline, must come earlier
    doc: str = ""
    exact: bool = True  # keeps float32 results (up to rounding); False where it changes numerics (FP8)


PASSES: dict[str, Pass] = {}
# The pipeline a user gets without thinking: absorption and expert fusion, then the
# clean-ups. fp8 changes numerics, so it is asked for by name.
DEFAULT_PIPELINE: tuple[str, ...] = ("absorb", "fuse_experts", "fold", "cse", "dce")


def register_pass(name: str, after: Sequence[str] = (), exact: bool = True) -> Callable[[PassFn], PassFn]:
    def deco(fn: PassFn) -> PassFn:
        PASSES[name] = Pass(name, fn, tuple(after), (fn.__doc__ or "").strip().split("\n")[0], exact)
        return fn

    return deco


_PASSES_LOADED = False


def _load_passes() -> None:
    """Import every module of dsc/passes: a pass registers itself where it is defined, so a
    new pass is one new file."""
    global _PASSES_LOADED
    if _PASSES_LOADED:  # resolve_pipeline runs at every module construction: scan the package once
        return
    import importlib
    import pkgutil

    import dsc.passes

    for module in pkgutil.iter_modules(dsc.passes.__path__):
        importlib.import_module(f"dsc.passes.{module.name}")
    _PASSES_LOADED = True


def all_passes() -> dict[str, Pass]:
    """Every registered pass by name (what `dsc show` lists and the tests read)."""
    _load_passes()
    return PASSES


def resolve_pipeline(passes: str | Sequence[str] | None) -> tuple[str, ...]:
    """"default", "none"/None, a comma-separated string, or a list of pass names."""
    _load_passes()
    if passes is None or passes == "none" or passes == []:
        return ()
    if passes == "default":
        return tuple(p for p in DEFAULT_PIPELINE if p in PASSES)
    names = [p.strip() for p in passes.split(",")] if isinstance(passes, str) else list(passes)
    for n in names:
        if n not in PASSES:
            known = ", ".join(["default", "none", *sorted(PASSES)])
            raise ConfigError(f"passes: unknown pass {n!r}; known: {known}")
    for i, n in enumerate(names):
        for must_precede in PASSES[n].after:
            if must_precede in names[i + 1:]:
                raise ConfigError(f"passes: {n} must run after {must_precede}; got the order {', '.join(names)}")
    return tuple(names)


@dataclass
class PassRecord:
    name: str
    before: Graph
    after: Graph
    seconds: float

    @property
    def changed(self) -> bool:
        return self.after != self.before


@dataclass
class PassManager:
    pipeline: tuple[str, ...]
    ctx: PassContext = field(default_factory=PassContext)
    records: list[PassRecord] = field(default_factory=list)

    def run(self, g: Graph) -> Graph:
        verify(g)
        for name in self.pipeline:
            self.ctx.current = name
            logged = len(self.ctx.log)
            start = time.perf_counter()
            out = verify(PASSES[name].fn(g, self.ctx))
            self.records.append(PassRecord(name, g, out, time.perf_counter() - start))
            if out == g and len(self.ctx.log) == logged:
                self.ctx.note("nothing to do; graph unchanged")
            g = out
        self.ctx.current = ""
        return g
