"""The on-disk kernel cache: one directory per content hash, written atomically.

A key is the SHA-256 of everything that decides a compiled kernel (its IR text, config,
backend, device, library versions). An entry is a directory named by the key holding
the kernel's files and `entry.json`, which records the key and the SHA-256 of every
file. An entry is written in a private temporary directory and renamed into place, so
a reader never sees half of one; an entry whose manifest is missing or unreadable,
names another key, or whose files are missing or differ from their hashes (a crash
mid-copy, a truncated disk, a foreign directory) is treated as absent and rebuilt.
When two processes build the same key, the first rename wins and the other adopts
its entry. A writer's temporary directory is named after its host and pid, so one left
by a writer killed mid-write is removed by the next write to that shard once the pid is
gone (or, from another host, once it is an hour old). A cache directory that cannot be
written still works: entries are then built in one private temporary directory per
process, removed at exit, and not shared.

The cache holds code that runs in this process: whoever can write to it can run code as
you (see README, Security).

The root is $DSC_CACHE_DIR, else $XDG_CACHE_HOME/dsc, else ~/.cache/dsc.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Mapping

from dsc.errors import ArtifactError

MANIFEST = "entry.json"
FORMAT = 1
# A temp dir whose writer is gone is removed once this old (seconds): a writer on this host
# is gone when its pid is; a pid namespace of its own (a container on a shared cache) is
# why a dead-looking pid must still wait a minute. From another host only age can tell.
STALE_DEAD_PID_S = 60
STALE_ANY_S = 3600
_HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())[:64] or "host"
_OWNED = re.compile(r"(?:\.tmp|\.trash|dsc-kernels)-(\d+)@([A-Za-z0-9._]+)-[^-]*")


def default_root() -> str:
    if os.environ.get("DSC_CACHE_DIR"):
        return os.environ["DSC_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "dsc")


def cache_key(**parts) -> str:
    """SHA-256 of the parts as canonical JSON (sorted keys; non-JSON values by str)."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Entry:
    key: str
    path: str
    meta: dict
    cached: bool  # False when built in a private directory because the cache was not writable
    files: frozenset[str] = frozenset()  # the names whose hashes were checked

    def file(self, name: str) -> str:
        if name not in self.files and name != MANIFEST:  # a forged or foreign entry.json that verifies but lacks it
            raise ArtifactError(f"kernel cache entry {self.path} has no file {name!r} (it holds "
                                f"{sorted(self.files)}): remove the entry to rebuild it")
        return os.path.join(self.path, name)

    def read(self, name: str) -> bytes:
        with open(self.file(name), "rb") as f:
            return f.read()


class KernelCache:
    def __init__(self, root: str | None = None):
        self.root = os.path.abspath(root or default_root())

    def _dir(self, key: str) -> str:
        return os.path.join(self.root, key[:2], key)

    def get(self, key: str) -> Entry | None:
        """The valid entry for key, or None (absent, partial or foreign)."""
        return _load(self._dir(key), key, cached=True)

    def put(self, key: str, files: Mapping[str, bytes | str], meta: dict | None = None) -> Entry:
        if not files:
            raise ValueError(f"kernel cache entry {key}: an entry holds at least one file")
        final = self._dir(key)
        try:
            os.makedirs(os.path.dirname(final), exist_ok=True)
            sweep_stale(os.path.dirname(final))
            tmp = tempfile.mkdtemp(prefix=_owned(".tmp"), dir=os.path.dirname(final))
        except OSError:
            return self._private(key, files, meta)
        try:
            _write(tmp, key, files, meta or {})
            try:
                os.rename(tmp, final)
            except OSError:
                # Another process put this key first, or a bad entry sits there.
                existing = _load(final, key, cached=True)
                if existing is not None:
                    return existing
                trash = tempfile.mkdtemp(prefix=_owned(".trash"), dir=os.path.dirname(final))
                os.rename(final, os.path.join(trash, "old"))
                os.rename(tmp, final)
                shutil.rmtree(trash, ignore_errors=True)
            entry = _load(final, key, cached=True)
            if entry is None:  # pragma: no cover - replaced by a racing writer with a bad entry
                raise OSError(f"kernel cache entry {final} did not verify after writing")
            return entry
        except OSError:
            return self._private(key, files, meta)
        finally:
            if os.path.isdir(tmp):
                shutil.rmtree(tmp, ignore_errors=True)

    def get_or_build(self, key: str, build: Callable[[], tuple[Mapping[str, bytes | str], dict]]) -> Entry:
        entry = self.get(key)
        if entry is not None:
            return entry
        files, meta = build()
        return self.put(key, files, meta)

    def _private(self, key: str, files, meta) -> Entry:
        path = os.path.join(_private_root(), key)
        entry = _load(path, key, cached=False)
        if entry is None:  # not built yet by this process (or left half-written by an error)
            shutil.rmtree(path, ignore_errors=True)
            os.mkdir(path)
            _write(path, key, files, meta or {})
            entry = _load(path, key, cached=False)
        if entry is None:  # pragma: no cover - our own private directory changed under us
            raise OSError(f"private kernel entry {path} did not verify after writing")
        return entry


def _owned(kind: str) -> str:
    """A temp dir's name prefix that says who is writing in it."""
    return f"{kind}-{os.getpid()}@{_HOST}-"


def _writer_gone(name: str, age: float, by_age: bool) -> bool:
    m = _OWNED.fullmatch(name)
    if m and m.group(2) == _HOST and age > STALE_DEAD_PID_S:
        try:
            os.kill(int(m.group(1)), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, OverflowError):  # alive under another user / not a pid
            pass
    return by_age and age > STALE_ANY_S


def sweep_stale(parent: str, prefix: str = ".", by_age: bool = True) -> None:
    """Remove the temp dirs under parent (names starting with prefix) whose writers are gone.
    A writer never loses its dir while alive: its pid is checked, and age alone (by_age)
    counts only after an hour, far beyond any write. Racing sweepers both ignore what
    vanished."""
    now = time.time()
    try:
        names = [n for n in os.listdir(parent) if n.startswith(prefix)]
    except OSError:
        return
    for name in names:
        path = os.path.join(parent, name)
        try:
            stale = os.path.isdir(path) and not os.path.islink(path) and _writer_gone(
                name, now - os.lstat(path).st_mtime, by_age)
        except OSError:
            continue
        if stale:
            shutil.rmtree(path, ignore_errors=True)


_PRIVATE: dict[int, str] = {}  # pid -> this process's private entry directory


def _private_root() -> str:
    """One private directory per process for entries a read-only cache cannot take,
    removed at exit. Keyed by pid: a forked child makes its own, never removes its parent's."""
    pid = os.getpid()
    if pid not in _PRIVATE:
        # those of processes killed before their exit; by pid only: /tmp is everyone's
        sweep_stale(tempfile.gettempdir(), "dsc-kernels-", by_age=False)
        _PRIVATE[pid] = tempfile.mkdtemp(prefix=_owned("dsc-kernels"))
        atexit.register(_remove_private, pid)
    return _PRIVATE[pid]


def _remove_private(pid: int) -> None:
    if os.getpid() == pid and pid in _PRIVATE:
        shutil.rmtree(_PRIVATE.pop(pid), ignore_errors=True)


def _write(path: str, key: str, files: Mapping[str, bytes | str], meta: dict) -> None:
    hashes = {}
    for name, data in files.items():
        if not _plain_name(name):
            raise ValueError(f"bad kernel file name {name!r}")
        blob = data.encode() if isinstance(data, str) else bytes(data)
        with open(os.path.join(path, name), "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        hashes[name] = _sha256(blob)
    manifest = {"format": FORMAT, "key": key, "files": hashes, "meta": meta}
    with open(os.path.join(path, MANIFEST), "w", encoding="utf-8") as f:
        json.dump(manifest, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())


def _load(path: str, key: str, cached: bool) -> Entry | None:
    try:
        with open(os.path.join(path, MANIFEST), encoding="utf-8") as f:
            manifest = json.load(f)
        if manifest.get("format") != FORMAT or manifest.get("key") != key:
            return None
        files = manifest["files"]
        if not files or not all(_plain_name(name) for name in files):
            return None  # an entry holds files, each a plain name inside it
        for name, digest in files.items():
            with open(os.path.join(path, name), "rb") as f:
                if _sha256(f.read()) != digest:
                    return None
        return Entry(key, path, manifest.get("meta", {}), cached, frozenset(files))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None


def _plain_name(name) -> bool:
    return (isinstance(name, str) and name not in ("", ".", "..", MANIFEST) and os.path.basename(name) == name
            and "\0" not in name)
