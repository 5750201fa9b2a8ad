"""The on-disk kernel cache: one directory per content hash, written atomically.

A key is the SHA-256 of everything that decides a compiled kernel (its IR text, config,
backend, device, library versions). An entry is a directory named by the key holding
the kernel's files and `entry.json`, which records the key and the SHA-256 of every
file. An entry is written in a private temporary directory and renamed into place, so
a reader never sees half of one; an entry whose manifest is missing or unreadable,
names another key, or whose files are missing or differ from their hashes (a crash
mid-copy, a truncated disk, a foreign directory) is treated as absent and rebuilt.
When two processes build the same key, the first rename wins and the other adopts
its entry. A cache directory that cannot be written still works: entries are then
built in a private temporary directory and not shared.

The root is $DSC_CACHE_DIR, else $XDG_CACHE_HOME/dsc, else ~/.cache/dsc.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Callable, Mapping

MANIFEST = "entry.json"
FORMAT = 1


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

    def file(self, name: str) -> str:
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
        final = self._dir(key)
        try:
            os.makedirs(os.path.dirname(final), exist_ok=True)
            tmp = tempfile.mkdtemp(prefix=f".{key[:8]}-", dir=os.path.dirname(final))
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
                trash = tempfile.mkdtemp(prefix=f".trash-{key[:8]}-", dir=os.path.dirname(final))
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
        path = tempfile.mkdtemp(prefix=f"dsc-kernel-{key[:8]}-")
        _write(path, key, files, meta or {})
        return Entry(key, path, meta or {}, cached=False)


def _write(path: str, key: str, files: Mapping[str, bytes | str], meta: dict) -> None:
    hashes = {}
    for name, data in files.items():
        if name == MANIFEST or os.path.basename(name) != name:
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
        for name, digest in manifest["files"].items():
            with open(os.path.join(path, name), "rb") as f:
                if _sha256(f.read()) != digest:
                    return None
        return Entry(key, path, manifest.get("meta", {}), cached)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
