"""Tuned kernel configs: the search space each tunable kernel declares, and the
per-device JSON files the runtime reads them from.

A tunable kernel declares a `Space` next to its source (like a `triton.autotune`
config list): its parameters and their candidate values, which shape dims are
*bucketed* (batch rows, tokens, context: the nearest tuned bucket is used) and which
must match exactly (widths, expert counts, flags), a `fits(config, shape, limits)`
rule that prunes what the card cannot run, and its heuristic default. At every launch
the kernel asks `space.choose(shape, dtype, device)`: the tuned config nearest the
shape in this device's file, else the heuristic.

One file per device name, as vLLM ships its fused-MoE configs:
dsc/runtime/tuned/<slug(device name)>.json for the cards dsc ships, and the same name
under $DSC_TUNED_DIR, searched first, for your own (`dsc tune --out`):

    {"format": 1, "device": "NVIDIA H100 80GB HBM3", "versions": {...},
     "entries": {"triton.gemm": {"bfloat16": {"K=7168,M=64,N=2048,batch=1":
         {"config": {"BLOCK_M": 64, ...}, "ms": 0.021, "default_ms": 0.034, "trials": 41}}}}}

Which file a device uses (or that it runs on heuristics) is said once per device, on
the "dsc" logger; `source(device)` gives the same sentence to reports.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping

import torch

from dsc.errors import DscError
from dsc.runtime.device import DeviceInfo, Limits, detect, limits_for, slug

FORMAT = 1
SHIPPED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tuned")
log = logging.getLogger("dsc")


class TuningError(DscError, ValueError):
    """A tuned-config file is malformed, or a tuning request is impossible here."""


Shape = Mapping[str, object]  # dim name -> int (or a bool / str flag)


def shape_key(shape: Shape) -> str:
    """A shape as a JSON object key: "K=7168,M=64,N=2048" (names sorted)."""
    return ",".join(f"{k}={_text(v)}" for k, v in sorted(shape.items()))


def parse_key(key: str) -> dict[str, object]:
    out: dict[str, object] = {}
    for part in key.split(","):
        name, _, value = part.partition("=")
        out[name] = int(value) if value.lstrip("-").isdigit() else {"true": True, "false": False}.get(value, value)
    return out


def _text(v) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def bucket_distance(a: int, b: int) -> float:
    """How far two bucketed sizes are apart: in octaves, so 48 sits between 32 and 64."""
    return abs(math.log2(max(a, 1)) - math.log2(max(b, 1)))


# -- a kernel's search space ---------------------------------------------------------------

_TRIAL: contextvars.ContextVar = contextvars.ContextVar("dsc_tuning_trial", default=None)
_RECORDING: contextvars.ContextVar = contextvars.ContextVar("dsc_tuning_recording", default=None)


@dataclass(frozen=True)
class Call:
    """One launch of a tunable kernel, as the tuner sees it."""

    space: "Space"
    shape: dict
    dtype: str
    device: torch.device

    @property
    def key(self) -> str:
        return shape_key(self.shape)


@dataclass(frozen=True, eq=False)
class Space:
    kernel: str  # backend-qualified: "triton.gemm", "tvm.grouped_gemm"
    params: dict[str, tuple]  # name -> candidate values
    bucketed: tuple[str, ...]  # shape dims matched by nearest bucket; the others exactly
    default: Callable[[Shape, torch.device], dict]  # the heuristic
    fits: Callable[[dict, Shape, Limits], bool] = lambda config, shape, limits: True
    fixed: Callable[[Shape], dict] = field(default=lambda shape: {})  # params the shape decides (not searched)

    def candidates(self, shape: Shape, limits: Limits) -> list[dict]:
        """Every config of the product that fits the card, the shape's fixed params applied."""
        fixed = self.fixed(shape)
        names = [n for n in self.params if n not in fixed]
        configs = ({**dict(zip(names, values)), **fixed}
                   for values in itertools.product(*(self.params[n] for n in names)))
        return [c for c in configs if self.fits(c, shape, limits)]

    def valid(self, config, shape: Shape, limits: Limits) -> bool:
        """A stored config this code can still launch: the same params, allowed values, fitting."""
        if not isinstance(config, dict) or set(config) != set(self.params):
            return False
        fixed = self.fixed(shape)
        return all(fixed.get(k, v) == v and (k in fixed or v in self.params[k]) for k, v in config.items()) \
            and self.fits(config, shape, limits)

    def choose(self, shape: Shape, dtype, device: torch.device) -> dict:
        """The config to launch with: a trial's (while tuning), else the tuned one nearest
        this shape on this device, else the heuristic default. dtype: a torch dtype or
        its name ("bfloat16")."""
        shape = dict(shape)
        dtype = str(dtype).removeprefix("torch.")
        recording = _RECORDING.get()
        if recording is not None:
            recording.append(Call(self, shape, dtype, device))
        trial = _TRIAL.get()
        if trial is not None and trial[0] is self and trial[1] == shape_key(shape):
            return dict(trial[2])
        table = table_for(device)
        if table is not None:
            found = table.lookup(self, dtype, shape, _limits(device))
            if found is not None:
                return found
        return self.default(shape, device)


@contextlib.contextmanager
def recording() -> Iterator[list[Call]]:
    """Collect the tunable launches made inside the block."""
    calls: list[Call] = []
    token = _RECORDING.set(calls)
    try:
        yield calls
    finally:
        _RECORDING.reset(token)


@contextlib.contextmanager
def trial(call: Call, config: dict):
    """Launches of call's kernel at call's shape use config inside the block."""
    token = _TRIAL.set((call.space, call.key, config))
    try:
        yield
    finally:
        _TRIAL.reset(token)


# -- the per-device files --------------------------------------------------------------

@dataclass
class TunedTable:
    device: str
    entries: dict = field(default_factory=dict)  # kernel -> dtype -> shape key -> record
    versions: dict = field(default_factory=dict)
    # a launch asks on every call: each (kernel, dtype, shape, card) is resolved once
    _found: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def record(self, kernel: str, dtype: str, key: str) -> dict | None:
        return self.entries.get(kernel, {}).get(dtype, {}).get(key)

    def put(self, kernel: str, dtype: str, key: str, record: dict) -> None:
        self.entries.setdefault(kernel, {}).setdefault(dtype, {})[key] = record
        self._found.clear()

    def lookup(self, space: Space, dtype: str, shape: Shape, limits: Limits) -> dict | None:
        """The config tuned for the nearest bucket with the same exact dims, if it is
        still valid for this code and card."""
        memo = (space.kernel, dtype, shape_key(shape), limits)
        if memo not in self._found:
            self._found[memo] = self._nearest(space, dtype, shape, limits)
        found = self._found[memo]
        return dict(found) if found is not None else None

    def _nearest(self, space: Space, dtype: str, shape: Shape, limits: Limits) -> dict | None:
        best, best_d = None, math.inf
        for key, rec in self.entries.get(space.kernel, {}).get(dtype, {}).items():
            tuned = parse_key(key)
            if set(tuned) != set(shape) or any(tuned[k] != shape[k] for k in shape if k not in space.bucketed):
                continue
            d = sum(bucket_distance(int(tuned[k]), int(shape[k])) for k in space.bucketed if k in shape)
            if d < best_d and space.valid(rec.get("config"), shape, limits):
                best, best_d = rec["config"], d
        return dict(best) if best is not None else None

    def to_json(self) -> dict:
        return {"format": FORMAT, "device": self.device, "versions": self.versions, "entries": self.entries}

    @staticmethod
    def load(path: str) -> "TunedTable":
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except json.JSONDecodeError as e:
            raise TuningError(f"tuned configs {path}: malformed JSON ({e})") from None
        except OSError as e:
            raise TuningError(f"tuned configs {path}: cannot read it ({e.strerror})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("device"), str):
            raise TuningError(f"tuned configs {path}: expected {{\"format\": {FORMAT}, \"device\": ..., "
                              f"\"entries\": ...}}")
        entries = data.get("entries", {})
        ok = isinstance(entries, dict) and all(
            isinstance(by_dtype, dict) and all(isinstance(by_key, dict) and all(
                isinstance(rec, dict) and isinstance(rec.get("config"), dict) for rec in by_key.values())
                for by_key in by_dtype.values()) for by_dtype in entries.values())
        if not ok:
            raise TuningError(f"tuned configs {path}: entries must map kernel -> dtype -> shape -> "
                              f"{{\"config\": {{...}}, ...}}")
        return TunedTable(data["device"], entries, data.get("versions", {}))

    def save(self, path: str) -> None:
        """Write atomically: a reader (or a crash mid-write) never sees half a file."""
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tuned-", suffix=".json", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.to_json(), f, indent=1, sort_keys=True)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


_LIMITS: dict[str, Limits] = {}


def _limits(device) -> Limits:
    key = str(device)
    if key not in _LIMITS:
        _LIMITS[key] = limits_for(device)
    return _LIMITS[key]


def search_dirs() -> list[str]:
    user = os.environ.get("DSC_TUNED_DIR")
    return ([user] if user else []) + [SHIPPED_DIR]


def file_for(device_name: str, folder: str | None = None) -> str:
    return os.path.join(folder or SHIPPED_DIR, slug(device_name) + ".json")


_TABLES: dict[str, tuple[TunedTable | None, str]] = {}


_NAMES: dict[str, str] = {}


def _device_name(device) -> str:
    """Memoized: choose() asks on every launch."""
    if isinstance(device, DeviceInfo):
        return device.name
    key = str(device)
    if key not in _NAMES:
        _NAMES[key] = detect(device).name
    return _NAMES[key]


def table_for(device) -> TunedTable | None:
    """This device's tuned table (loaded once per process), or None: heuristics."""
    name = _device_name(device)
    if name not in _TABLES:
        path = next((p for p in (file_for(name, d) for d in search_dirs()) if os.path.exists(p)), None)
        table = TunedTable.load(path) if path else None
        if table is not None:
            said = f"tuned kernel configs for {name}: {path}"
        else:
            said = (f"no tuned kernel configs for {name} (looked for {slug(name)}.json in "
                    f"{', '.join(search_dirs())}): heuristic defaults; `dsc tune` makes them")
        _TABLES[name] = (table, said)
        cuda = torch.device(device).type == "cuda" if not isinstance(device, DeviceInfo) else device.kind == "cuda"
        log.log(logging.WARNING if cuda and table is None else logging.INFO, "dsc: %s", said)
    return _TABLES[name][0]


def source(device) -> str:
    """The sentence saying which configs this device runs with."""
    table_for(device)
    return _TABLES[_device_name(device)][1]


def forget() -> None:
    """Drop the loaded tables (after `dsc tune` writes one, and in tests)."""
    _TABLES.clear()
