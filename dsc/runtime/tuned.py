"""Tuned kernel configs: the per-device JSON files the runtime reads them from, and the
lookup a kernel's search space (dsc/runtime/search_space.py) makes at every launch.

One file per device name, as vLLM ships its fused-MoE configs:
dsc/runtime/tuned/<slug(device name)>.json for the cards dsc ships, and the same name
in the user directory for your own (what `dsc tune` writes): $DSC_TUNED_DIR, else
$XDG_CACHE_HOME/dsc/tuned, else ~/.cache/dsc/tuned. A launch reads both; the user's
file is asked first, the shipped one where it has nothing for the launch:

    {"format": 1, "device": "NVIDIA H100 80GB HBM3", "versions": {...},
     "entries": {"triton.gemm": {"bfloat16": {"K=7168,M=64,N=2048,batch=1":
         {"config": {"BLOCK_M": 64, ...}, "ms": 0.021, "default_ms": 0.034, "trials": 41}}}}}

Which file a device uses (or that it runs on heuristics) is said once per device, on
the "dsc" logger; `source(device)` gives the same sentence to reports. A file that
cannot be read, or an entry of one that is malformed (a config value of the wrong
type, a shape key that does not parse), is a warning, once, naming the file and the
entry; those launches run on the heuristic.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

import torch

from dsc.errors import DscError
from dsc.runtime.device import DeviceInfo, Limits, detect, device_limits, slug

if TYPE_CHECKING:  # the search space asks this module for its tuned configs; only its type is named here
    from dsc.runtime.search_space import Space

FORMAT = 1
SHIPPED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tuned")
log = logging.getLogger("dsc")


class TuningError(DscError, ValueError):
    """A tuned-config file is malformed, or a tuning request is impossible here."""


Shape = Mapping[str, object]  # dim name -> int (or a bool / str flag)


def shape_key(shape: Shape) -> str:
    """A shape as a JSON object key: "K=7168,M=64,N=2048" (names sorted)."""
    return ",".join(f"{k}={_text(v)}" for k, v in sorted(shape.items()))


_INT = re.compile(r"-?[0-9]{1,18}")  # ASCII digits only, and within int64 (str.isdigit takes "²")


def parse_key(key: str) -> dict[str, object]:
    out: dict[str, object] = {}
    for part in key.split(","):
        name, _, value = part.partition("=")
        out[name] = int(value) if _INT.fullmatch(value) else {"true": True, "false": False}.get(value, value)
    return out


def _key_problem(key: str) -> str | None:
    """Why a file's shape key is not one shape_key could have written, or None."""
    parts = [p.partition("=") for p in key.split(",")]
    if any(not name or not eq for name, eq, _ in parts):
        return "shape key must be name=value pairs joined by commas"
    if len({name for name, _, _ in parts}) != len(parts):
        return "shape key names a dim twice"
    return None


def _text(v) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def bucket_distance(a: int, b: int) -> float:
    """How far two bucketed sizes are apart: in octaves, so 48 sits between 32 and 64."""
    return abs(math.log2(max(a, 1)) - math.log2(max(b, 1)))


# -- the per-device files --------------------------------------------------------------

_SCALARS = (bool, int, float, str)


@dataclass
class TunedTable:
    device: str
    entries: dict = field(default_factory=dict)  # kernel -> dtype -> shape key -> record
    versions: dict = field(default_factory=dict)
    path: str | None = field(default=None, compare=False)  # the file it was read from
    # entries load() dropped: "kernel / dtype / key: why"
    problems: list = field(default_factory=list, compare=False)
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
            loose = [k for k in space.bucketed if k in shape and type(tuned[k]) is not int]
            why = (f"shape key {loose[0]} must be an integer, got {tuned[loose[0]]!r}" if loose
                   else space.type_problem(rec["config"]))
            if why:
                _warn_once(self.path, f"{space.kernel} / {dtype} / {key}: {why}")
                continue
            d = sum(bucket_distance(tuned[k], int(shape[k])) for k in space.bucketed if k in shape)
            if d < best_d and space.valid(rec["config"], shape, limits):
                best, best_d = rec["config"], d
        return dict(best) if best is not None else None

    def to_json(self) -> dict:
        return {"format": FORMAT, "device": self.device, "versions": self.versions, "entries": self.entries}

    @staticmethod
    def load(path: str) -> "TunedTable":
        """Read a file; TuningError if it is not a tuned-config file at all. Malformed
        entries are dropped, each named in the table's `problems`."""
        def refuse(why: str):
            raise TuningError(f"tuned configs {path}: {why}")

        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError as e:
            refuse(f"cannot read it ({e.strerror or e})")
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            refuse(f"not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start})")
        except json.JSONDecodeError as e:
            refuse(f"malformed JSON ({e})")
        except RecursionError:
            refuse("malformed JSON (it nests too deeply)")
        except ValueError as e:  # an integer of more digits than Python converts
            refuse(f"malformed JSON ({e})")
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("device"), str):
            refuse(f"expected {{\"format\": {FORMAT}, \"device\": ..., \"entries\": ...}}")
        entries = data.get("entries", {})
        if not isinstance(entries, dict):
            refuse("entries must map kernel -> dtype -> shape -> {\"config\": {...}, ...}")
        versions = data.get("versions", {})
        table = TunedTable(data["device"], versions=versions if isinstance(versions, dict) else {}, path=path)
        for kernel, by_dtype in entries.items():
            if not isinstance(by_dtype, dict):
                table.problems.append(f"{kernel}: must map dtype -> shape -> record, got {type(by_dtype).__name__}")
                continue
            for dtype, by_key in by_dtype.items():
                if not isinstance(by_key, dict):
                    table.problems.append(f"{kernel} / {dtype}: must map shape -> record, got "
                                          f"{type(by_key).__name__}")
                    continue
                for key, rec in by_key.items():
                    why = _record_problem(key, rec)
                    if why:
                        table.problems.append(f"{kernel} / {dtype} / {key}: {why}")
                    else:
                        table.entries.setdefault(kernel, {}).setdefault(dtype, {})[key] = rec
        return table

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
            # mkstemp makes it 0600: give it the mode open() would, so the other users of
            # the machine (and of a shared DSC_TUNED_DIR) can read it
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _record_problem(key: str, rec) -> str | None:
    """Why one entry of a file cannot be used whatever the kernel, or None."""
    if not isinstance(rec, dict) or not isinstance(rec.get("config"), dict):
        return 'must be {"config": {...}, ...}'
    bad = [k for k, v in rec["config"].items() if not isinstance(v, _SCALARS)]
    if bad:
        return f"config {bad[0]} must be a number, string or boolean, got {json.dumps(rec['config'][bad[0]])[:40]}"
    return _key_problem(key)


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it
    os.umask(mask)
    return mask


_WARNED: set = set()


def _warn_once(path: str | None, problem: str) -> None:
    if (path, problem) not in _WARNED:
        _WARNED.add((path, problem))
        log.warning("dsc: ignoring an entry of %s (heuristic defaults there): %s", path, problem)


def problems_line(table: TunedTable, then: str, shown: int = 3) -> str | None:
    """One line naming the file and the entries load() dropped (and `then`, what
    becomes of them), or None."""
    if not table.problems:
        return None
    more = len(table.problems) - shown
    return (f"ignoring {len(table.problems)} malformed entr{'y' if len(table.problems) == 1 else 'ies'} of "
            f"{table.path} ({then}): " + "; ".join(table.problems[:shown])
            + (f"; and {more} more" if more > 0 else ""))


def lookup(space, dtype: str, shape: Shape, device):
    """The tuned config nearest shape for space's kernel on device, or None (no file, no
    entry for it, or one this code cannot launch)."""
    table = table_for(device)
    return table.lookup(space, dtype, shape, device_limits(device)) if table is not None else None


def user_dir() -> str:
    """Where `dsc tune` writes and a launch looks first: $DSC_TUNED_DIR, else
    $XDG_CACHE_HOME/dsc/tuned, else ~/.cache/dsc/tuned (never inside the installed
    package, which other users, or a read-only install, cannot write)."""
    if os.environ.get("DSC_TUNED_DIR"):
        return os.environ["DSC_TUNED_DIR"]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "dsc", "tuned")


def search_dirs() -> list[str]:
    """The folders a launch reads, the user's first (it takes precedence)."""
    user = user_dir()
    return [user] + ([SHIPPED_DIR] if os.path.abspath(user) != SHIPPED_DIR else [])


def file_for(device_name: str, folder: str | None = None) -> str:
    """This device's file in folder (default: the user directory)."""
    return os.path.join(folder or user_dir(), slug(device_name) + ".json")


@dataclass
class DeviceTables:
    """A device's tables, the user's first: a launch takes the first one's config."""

    tables: list[TunedTable]

    def lookup(self, space: Space, dtype: str, shape: Shape, limits: Limits) -> dict | None:
        for table in self.tables:
            found = table.lookup(space, dtype, shape, limits)
            if found is not None:
                return found
        return None


_TABLES: dict[str, tuple[DeviceTables | None, str]] = {}


def _read(path: str) -> TunedTable | None:
    """A file for a launch: its problems are warnings (once: tables load once), never errors."""
    try:
        table = TunedTable.load(path)
    except TuningError as e:
        log.warning("dsc: ignoring %s (heuristic defaults instead)", e)
        return None
    line = problems_line(table, "heuristic defaults there")
    if line:
        log.warning("dsc: %s", line)
    return table


_NAMES: dict[str, str] = {}


def _device_name(device) -> str:
    """Memoized: choose() asks on every launch."""
    if isinstance(device, DeviceInfo):
        return device.name
    key = str(device)
    if key not in _NAMES:
        _NAMES[key] = detect(device).name
    return _NAMES[key]


def table_for(device) -> DeviceTables | None:
    """This device's tuned tables (loaded once per process), or None: heuristics."""
    name = _device_name(device)
    if name not in _TABLES:
        paths = [p for p in (file_for(name, d) for d in search_dirs()) if os.path.exists(p)]
        tables = [t for t in map(_read, paths) if t is not None]
        if tables:
            said = f"tuned kernel configs for {name}: " + ", then ".join(t.path for t in tables)
        else:
            said = (f"no tuned kernel configs for {name} (looked for {slug(name)}.json in "
                    f"{', '.join(search_dirs())}): heuristic defaults; `dsc tune` makes them")
        _TABLES[name] = (DeviceTables(tables) if tables else None, said)
        cuda = torch.device(device).type == "cuda" if not isinstance(device, DeviceInfo) else device.kind == "cuda"
        log.log(logging.WARNING if cuda and not tables else logging.INFO, "dsc: %s", said)
    return _TABLES[name][0]


def source(device) -> str:
    """The sentence saying which configs this device runs with."""
    table_for(device)
    return _TABLES[_device_name(device)][1]


def forget() -> None:
    """Drop the loaded tables (after `dsc tune` writes one, and in tests)."""
    _TABLES.clear()
    _WARNED.clear()
