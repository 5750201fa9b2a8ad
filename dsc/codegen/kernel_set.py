"""One backend's kernels, registered by the files that define them.

A kernel file registers each kernel under the name a group kind calls it by
(dsc/codegen/groups/: `calls`) and, per kind, the listing of what a group of that kind
compiles ahead of time (Triton: (spec, signature, constexprs) jobs; TVM: (key,
definition) pairs). The backend covers the kinds whose calls and listing are all
registered. Discovery imports every module of the backend's package once, on first use,
so a new kernel file registers itself without an import elsewhere.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Callable

from dsc.codegen.kinds import GROUP_KINDS
from dsc.errors import DscError


class KernelSet:
    def __init__(self, name: str, package: str):
        self.name = name
        self._package = package
        self._calls: dict[str, Callable] = {}
        self._listings: dict[str, Callable] = {}
        self._loaded = False

    def provides(self, name: str | Callable | None = None):
        """Decorator: register a kernel under `name` (default: the function's name)."""
        def register(fn, as_name=None):
            key = as_name or fn.__name__
            if key in self._calls:
                raise DscError(f"the {self.name} backend registers kernel {key!r} twice")
            self._calls[key] = fn
            return fn
        if callable(name):
            return register(name)
        return lambda fn: register(fn, name)

    def lists(self, *kinds: str):
        """Decorator: register fn(group, *args) -> [what a group of these kinds compiles]."""
        def register(fn):
            for kind in kinds:
                if kind not in GROUP_KINDS:
                    raise DscError(f"{fn.__module__}: group kind {kind!r} is not declared in dsc/codegen/groups/")
                if kind in self._listings:
                    raise DscError(f"the {self.name} backend lists group kind {kind!r} twice")
                self._listings[kind] = fn
            return fn
        return register

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            package = importlib.import_module(self._package)
            for info in pkgutil.iter_modules(package.__path__):
                importlib.import_module(f"{self._package}.{info.name}")

    def __getattr__(self, call: str) -> Callable:
        if call.startswith("_"):
            raise AttributeError(call)
        self._load()
        try:
            return self._calls[call]
        except KeyError:
            raise AttributeError(f"the {self.name} backend registers no kernel {call!r}") from None

    @property
    def calls(self) -> frozenset[str]:
        self._load()
        return frozenset(self._calls)

    @property
    def kinds(self) -> frozenset[str]:
        """The group kinds this backend can run: the host kinds and every kernel kind whose
        calls and compile listing it registers."""
        self._load()
        return frozenset(name for name, k in GROUP_KINDS.items()
                         if k.host or (name in self._listings and set(k.calls) <= set(self._calls)))

    def listing(self, group, *args) -> list:
        """What a group compiles ahead of time ([] for a host kind)."""
        if GROUP_KINDS[group.kind].host:
            return []
        self._load()
        listing = self._listings.get(group.kind)
        if listing is None:
            raise DscError(f"the {self.name} backend has no kernel for group {group.kind!r} ({group.root.op})")
        return listing(group, *args)
