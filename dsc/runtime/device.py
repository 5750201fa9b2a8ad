"""Which machine kernels are built for: the CPU, or a CUDA device and its compute capability."""

from __future__ import annotations

import platform
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DeviceInfo:
    kind: str  # "cpu" or "cuda"
    name: str
    capability: tuple[int, int] | None = None

    @property
    def arch(self) -> str:
        """sm80, sm90, ... for CUDA; "cpu" otherwise."""
        return f"sm{self.capability[0]}{self.capability[1]}" if self.capability else "cpu"


def detect(device: torch.device | str = "cpu") -> DeviceInfo:
    dev = torch.device(device)
    if dev.type == "cuda":
        return DeviceInfo("cuda", torch.cuda.get_device_name(dev), tuple(torch.cuda.get_device_capability(dev)))
    return DeviceInfo("cpu", platform.processor() or platform.machine())


def library_versions() -> dict[str, str]:
    """Versions that change compiled code: part of every kernel cache key."""
    import dsc

    versions = {"dsc": dsc.__version__, "torch": torch.__version__, "python": platform.python_version()}
    try:
        import triton

        versions["triton"] = triton.__version__
    except ImportError:
        pass
    return versions
