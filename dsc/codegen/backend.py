"""The codegen backends, registered in one table: each backend's own package defines a
`Backend` (its kernels, registered by its kernel files, and its ahead-of-time sources); the executor,
`dsc.nn` and every CLI command find it here by name. Backends load lazily (importing
triton or TVM costs seconds), so the names are known before any is imported.

A new backend is its own package with a `backend.py` defining `BACKEND`, plus one line
in `_PACKAGES`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Iterable

from dsc.codegen.kernel_set import KernelSet
from dsc.codegen.lowering import lower
from dsc.codegen.schedule import Group
from dsc.errors import ConfigError
from dsc.ir.graph import Graph

# name -> the module that defines its BACKEND: the one registration of each backend.
_PACKAGES = {"triton": "dsc.codegen.triton.backend", "tvm": "dsc.codegen.tvm.backend"}
CODEGEN_BACKENDS = tuple(_PACKAGES)


@dataclass(frozen=True)
class Sources:
    """What `dsc compile` writes: source files by name and the manifest's backend fields."""

    files: dict[str, str]
    manifest: dict
    summary: str  # one line for the command's report


@dataclass(frozen=True)
class Backend:
    name: str
    kernels: KernelSet  # its kernels, registered by its kernel files (dsc.codegen.kernel_set)
    # (layer, graph) pairs and a target -> the sources `dsc compile` writes
    emit: Callable[[Iterable[tuple[str, Graph]], str], Sources]
    # raises a dsc error naming the missing library; runs before the first launcher is built
    prepare: Callable[[], None] = lambda: None
    # the device types its kernels run on when built from source here (`dsc bench`), and what
    # to say to a run on any other device
    runs_on: tuple[str, ...] = ("cpu",)
    run_elsewhere: str = ""
    # `dsc tune`: the device type whose timings tune its kernels (None: nothing to tune), and
    # what to say to a run on any other device; also the backend `dsc bench` and `dsc tune`
    # pick for that device when none is named
    tunes_on: str | None = None
    tune_elsewhere: str = ""

    @property
    def kinds(self) -> frozenset[str]:
        """The group kinds it has kernels for (dsc.codegen.schedule)."""
        return self.kernels.kinds

    def lower(self, group: Group) -> Callable:
        """group -> launcher (dsc.codegen.lowering's convention)."""
        return lower(group, self.kernels)


def get_backend(name: str) -> Backend:
    if name not in _PACKAGES:
        raise ConfigError(f"backend: unknown backend {name!r}; choose one of {', '.join(CODEGEN_BACKENDS)}")
    return importlib.import_module(_PACKAGES[name]).BACKEND


def default_backend(device_type: str) -> str:
    """The first registered backend that tunes on this device type."""
    for name in CODEGEN_BACKENDS:
        if get_backend(name).tunes_on == device_type:
            return name
    raise ConfigError(f"backend: no registered backend tunes on a {device_type} device")
