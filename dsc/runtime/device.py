"""Which machine kernels are built for: the CPU, or a CUDA device and its compute
capability; its name (the key of tuned configs and benchmark results) and the limits
a kernel config must fit in."""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass

import torch

from dsc.version import __version__


@dataclass(frozen=True)
class DeviceInfo:
    kind: str  # "cpu" or "cuda"
    name: str
    capability: tuple[int, int] | None = None

    @property
    def arch(self) -> str:
        """sm80, sm90, ... for CUDA; "cpu" otherwise."""
        return f"sm{self.capability[0]}{self.capability[1]}" if self.capability else "cpu"

    @property
    def type(self) -> str:
        """"cuda" or "cpu", as torch.device.type: launchers ask either the same way."""
        return self.kind


# The card a launch's choices are made for when none is present (the sm_80/sm_90 compile
# check and resource report record launches "as on" these): each arch's usual datacenter part
REFERENCE_CARDS = {
    "sm90": DeviceInfo("cuda", "NVIDIA H100 80GB HBM3", (9, 0)),
    "sm80": DeviceInfo("cuda", "NVIDIA A100-SXM4-80GB", (8, 0)),
}


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def detect(device: torch.device | str = "cpu") -> DeviceInfo:
    dev = torch.device(device)
    if dev.type == "cuda":
        return DeviceInfo("cuda", torch.cuda.get_device_name(dev), tuple(torch.cuda.get_device_capability(dev)))
    return DeviceInfo("cpu", cpu_name())


def slug(text: str) -> str:
    """A device name as a file or folder name: "NVIDIA H100 80GB HBM3" -> nvidia-h100-80gb-hbm3."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


@dataclass(frozen=True)
class Limits:
    """What one thread block (one program) may use on a card: configs beyond these do
    not launch, so the tuner prunes them before timing anything."""

    arch: str
    smem_per_block: int  # bytes, the opt-in maximum of dynamic shared memory
    sms: int
    regs_per_thread: int = 255
    regs_per_sm: int = 65536
    threads_per_block: int = 1024


# Published per-architecture figures (CUDA programming guide, compute capabilities
# table); a live device's own properties replace them (limits_for).
ARCH_LIMITS = {
    "sm80": Limits("sm80", 166912, 108),  # A100
    "sm86": Limits("sm86", 101376, 84),  # RTX 30xx, A10 class
    "sm89": Limits("sm89", 101376, 128),  # L40, RTX 40xx
    "sm90": Limits("sm90", 232448, 132),  # H100, H800, H200
}


def limits_for(device: torch.device | str | DeviceInfo) -> Limits:
    """The limits of a CUDA device (read from it), of an arch name such as "sm90" or a
    described card (a DeviceInfo: its arch's published figures), or of this CPU (no
    shared memory: only CPU schedules are searched there)."""
    if isinstance(device, str) and device in ARCH_LIMITS:
        return ARCH_LIMITS[device]
    if isinstance(device, DeviceInfo) and device.kind == "cuda":
        return ARCH_LIMITS.get(device.arch, ARCH_LIMITS["sm80"])
    info = device if isinstance(device, DeviceInfo) else detect(device)
    if info.kind != "cuda":
        return Limits("cpu", 0, os.cpu_count() or 1)
    base = ARCH_LIMITS.get(info.arch, ARCH_LIMITS["sm80"])
    try:
        props = torch.cuda.get_device_properties(torch.device(device))
        return Limits(info.arch, int(getattr(props, "shared_memory_per_block_optin", base.smem_per_block)),
                      int(props.multi_processor_count), regs_per_sm=int(getattr(props, "regs_per_multiprocessor",
                                                                                  base.regs_per_sm)))
    except (RuntimeError, AssertionError):
        return base


_LIMITS: dict[str, Limits] = {}


def device_limits(device: torch.device | DeviceInfo) -> Limits:
    """limits_for, memoized: launchers ask on every launch (their tiles follow the arch)."""
    key = str(device)
    if key not in _LIMITS:
        _LIMITS[key] = limits_for(device)
    return _LIMITS[key]


def library_versions() -> dict[str, str]:
    """Versions that change compiled code: part of every kernel cache key."""
    versions = {"dsc": __version__, "torch": torch.__version__, "python": platform.python_version()}
    try:
        import triton

        versions["triton"] = triton.__version__
    except ImportError:
        pass
    return versions
