"""Executes graphs: the reference interpreter today; compiled kernels through the
content-hashed on-disk cache, the source loader and device detection as the codegen
backends land."""

from dsc.runtime.backends import BACKENDS, make_runner
from dsc.runtime.cache import Entry, KernelCache, cache_key
from dsc.runtime.device import DeviceInfo, detect, library_versions
from dsc.runtime.loader import load_module

__all__ = ["BACKENDS", "make_runner", "KernelCache", "Entry", "cache_key", "DeviceInfo", "detect",
           "library_versions", "load_module"]
