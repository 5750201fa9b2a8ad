"""The kernel cache: atomic entries, corruption and foreign entries rebuilt, two
processes racing for one key, a read-only cache directory."""

import json
import multiprocessing
import os
import tempfile

import pytest

from dsc.runtime.cache import MANIFEST, KernelCache, cache_key, default_root
from dsc.runtime.loader import load_module


def test_key_is_stable_and_sensitive():
    a = cache_key(ir="graph g", backend="triton", device="sm90", versions={"torch": "2.13"})
    assert a == cache_key(versions={"torch": "2.13"}, device="sm90", backend="triton", ir="graph g")
    assert a != cache_key(ir="graph g", backend="triton", device="sm80", versions={"torch": "2.13"})
    assert len(a) == 64


def test_put_then_get(tmp_path):
    cache = KernelCache(str(tmp_path))
    key = cache_key(kernel="k")
    assert cache.get(key) is None
    entry = cache.put(key, {"k.py": "x = 1\n", "k.bin": b"\x00\x01"}, {"grid": "B"})
    again = cache.get(key)
    assert again is not None and again.path == entry.path and again.meta == {"grid": "B"}
    assert again.read("k.bin") == b"\x00\x01" and entry.cached
    assert not [p for p in os.listdir(os.path.dirname(entry.path)) if p.startswith(".")]  # no temp left


@pytest.mark.parametrize("damage", ["truncate", "delete_file", "manifest_garbage", "foreign_key", "no_manifest"])
def test_damaged_entries_are_rebuilt(tmp_path, damage):
    cache = KernelCache(str(tmp_path))
    key = cache_key(kernel=damage)
    entry = cache.put(key, {"k.py": "value = 42\n" * 100}, {})
    path = entry.file("k.py")
    if damage == "truncate":
        with open(path, "r+b") as f:
            f.truncate(10)
    elif damage == "delete_file":
        os.remove(path)
    elif damage == "manifest_garbage":
        with open(entry.file(MANIFEST), "w") as f:
            f.write("{not json")
    elif damage == "foreign_key":
        m = json.load(open(entry.file(MANIFEST)))
        m["key"] = cache_key(kernel="someone else")
        json.dump(m, open(entry.file(MANIFEST), "w"))
    else:
        os.remove(entry.file(MANIFEST))
    assert cache.get(key) is None
    built = []
    rebuilt = cache.get_or_build(key, lambda: (built.append(1) or {"k.py": "value = 42\n" * 100}, {}))
    assert built == [1] and rebuilt.cached and cache.get(key) is not None
    assert rebuilt.read("k.py") == b"value = 42\n" * 100


def _race(root, key, payload, barrier, results):
    barrier.wait()
    entry = KernelCache(root).get_or_build(key, lambda: ({"k.py": payload}, {"by": payload}))
    results.put((entry.path, entry.read("k.py").decode()))


def test_two_processes_building_one_key_leave_one_good_entry(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    key = cache_key(kernel="race")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(tmp_path), key, f"x = {i}\n", barrier, results)) for i in range(2)]
    for p in procs:
        p.start()
    got = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    entry = KernelCache(str(tmp_path)).get(key)
    assert entry is not None
    # both processes ended with a valid entry; the one on disk is one of theirs, whole
    assert entry.read("k.py").decode() in {"x = 0\n", "x = 1\n"}
    assert all(text in {"x = 0\n", "x = 1\n"} for _, text in got)
    assert len([d for d in os.listdir(os.path.dirname(entry.path)) if not d.startswith(".")]) == 1


def test_read_only_cache_dir_serves_what_it_has_and_still_builds(tmp_path, monkeypatch):
    cache = KernelCache(str(tmp_path))
    old = cache.put(cache_key(kernel="old"), {"k.py": "w = 1\n"}, {})
    real_mkdtemp = tempfile.mkdtemp

    def read_only(*args, dir=None, **kwargs):  # what a read-only mount (or another user's dir) does
        if dir is not None and str(dir).startswith(str(tmp_path)):
            raise PermissionError(13, "Read-only file system", dir)
        return real_mkdtemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr("dsc.runtime.cache.tempfile.mkdtemp", read_only)
    assert cache.get(old.key).cached
    entry = cache.get_or_build(cache_key(kernel="ro"), lambda: ({"k.py": "y = 2\n"}, {}))
    assert not entry.cached and entry.read("k.py") == b"y = 2\n"
    assert not entry.path.startswith(str(tmp_path)) and cache.get(entry.key) is None


def test_unwritable_root_falls_back_to_a_private_entry(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory should be")
    entry = KernelCache(str(blocker)).get_or_build(cache_key(kernel="blocked"), lambda: ({"k.py": "z = 3\n"}, {}))
    assert not entry.cached and entry.read("k.py") == b"z = 3\n"


def test_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DSC_CACHE_DIR", str(tmp_path / "mine"))
    assert default_root() == str(tmp_path / "mine")
    monkeypatch.delenv("DSC_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_root() == str(tmp_path / "xdg" / "dsc")


def test_generated_source_loads_from_the_cache(tmp_path):
    entry = KernelCache(str(tmp_path)).put(cache_key(kernel="mod"), {"kernel.py": "def f(x):\n    return x + 1\n"}, {})
    module = load_module(entry.file("kernel.py"), "mod_" + entry.key[:8])
    assert module.f(1) == 2 and load_module(entry.file("kernel.py"), "again") is module


def test_device_detection_and_versions():
    from dsc.runtime import detect, library_versions

    cpu = detect("cpu")
    assert cpu.kind == "cpu" and cpu.arch == "cpu" and cpu.capability is None
    versions = library_versions()
    assert {"dsc", "torch", "python"} <= set(versions)
