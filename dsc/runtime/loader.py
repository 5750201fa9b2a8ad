"""Load generated Python source (Triton kernels) as a module.

Triton's JIT reads a kernel's source through `inspect`, so generated kernels must live
in real files (plain `exec` fails for @triton.jit); the kernel
cache provides the file.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

_LOADED: dict[str, ModuleType] = {}


def load_module(path: str, name: str) -> ModuleType:
    """Import the file at path once per process under a unique module name."""
    if path in _LOADED:
        return _LOADED[path]
    mod_name = f"dsc_kernels.{name}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load generated kernel source {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    spec.loader.exec_module(module)
    _LOADED[path] = module
    return module
