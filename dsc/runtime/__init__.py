"""The services floor under codegen: the content-hashed kernel cache, the source loader,
device detection, tuned configs, timing and NVRTC artifacts. Imports no backend."""

from dsc.runtime.cache import Entry, KernelCache, cache_key
from dsc.runtime.device import DeviceInfo, detect, library_versions
from dsc.runtime.loader import load_module

__all__ = ["KernelCache", "Entry", "cache_key", "DeviceInfo", "detect", "library_versions", "load_module"]
