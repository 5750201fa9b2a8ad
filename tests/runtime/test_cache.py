"""The kernel cache: atomic entries, corruption and foreign or forged entries rebuilt, two
processes racing for one key, a writer killed mid-write, a read-only cache directory."""

import hashlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from dsc.errors import ArtifactError
from dsc.runtime.cache import _HOST, MANIFEST, STALE_ANY_S, STALE_DEAD_PID_S, KernelCache, cache_key, default_root
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


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid  # reaped: no process has it (until the kernel reuses it, far off)


def _age(path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


KILLED_WRITER = """
import sys, time
from dsc.runtime import cache

def stuck(path, key, files, meta):  # the first file written, then killed before the rest
    with open(path + "/k.py", "w") as f:
        f.write("x =")
    print(path, flush=True)
    time.sleep(600)

cache._write = stuck
cache.KernelCache(sys.argv[1]).put(sys.argv[2], {"k.py": "x = 1\\n"})
"""


def test_a_writer_killed_mid_write_leaves_no_entry_and_its_temp_dir_is_removed(tmp_path):
    key = cache_key(kernel="killed")
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(tmp_path), key], stdout=subprocess.PIPE,
                              text=True)
    try:
        tmp = writer.stdout.readline().strip()
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    assert os.path.dirname(tmp) == os.path.join(str(tmp_path), key[:2]) and os.path.isdir(tmp)
    cache = KernelCache(str(tmp_path))
    assert cache.get(key) is None  # no half entry
    cache.put(cache_key(kernel="another"), {"k.py": "y = 1\n"})  # (another shard: this one is not swept)
    _age(tmp, STALE_DEAD_PID_S + 5)
    entry = cache.get_or_build(key, lambda: ({"k.py": "x = 1\n"}, {}))
    assert entry.read("k.py") == b"x = 1\n" and not os.path.exists(tmp)
    assert [n for n in os.listdir(os.path.dirname(entry.path))] == [key]


def test_temp_dirs_are_swept_only_once_their_writers_are_gone(tmp_path):
    key = cache_key(kernel="sweep")
    shard = tmp_path / key[:2]
    shard.mkdir()
    dead, alive = _dead_pid(), os.getpid()
    dirs = {  # name, age in seconds -> kept?
        (f".tmp-{dead}@{_HOST}-a", STALE_DEAD_PID_S + 5): False,  # killed writer on this host
        (f".trash-{dead}@{_HOST}-b", STALE_DEAD_PID_S + 5): False,
        (f".tmp-{dead}@{_HOST}-c", 5): True,  # too fresh to trust a pid (another pid namespace?)
        (f".tmp-{alive}@{_HOST}-d", STALE_ANY_S - 60): True,  # a live writer, however slow
        (f".tmp-{alive}@{_HOST}-e", STALE_ANY_S + 60): False,  # beyond any write: the pid was reused
        (f".tmp-{dead}@another.host-f", STALE_ANY_S - 60): True,  # another host's pids mean nothing here
        (f".tmp-{dead}@another.host-g", STALE_ANY_S + 60): False,
        (".0123abcd-legacy", STALE_ANY_S + 60): False,  # named by an older dsc
        (cache_key(kernel="an entry"), STALE_ANY_S + 60): True,  # entries are never swept
    }
    for name, age in dirs:
        (shard / name).mkdir()
        (shard / name / "k.py").write_text("x")
        _age(shard / name, age)
    KernelCache(str(tmp_path)).put(key, {"k.py": "z = 1\n"})
    kept = {name for name, _ in dirs if (shard / name).exists()}
    assert kept == {name for (name, _), keep in dirs.items() if keep}


READ_ONLY = """
import json, os, sys
from dsc.runtime.cache import KernelCache, cache_key

cache = KernelCache(sys.argv[1])
paths = [cache.get_or_build(cache_key(kernel=i), lambda: ({"k.py": "x = 1\\n"}, {})).path for i in range(7)]
again = cache.put(cache_key(kernel=0), {"k.py": "x = 1\\n"}).path
print(json.dumps({"reused": paths[0] == again, "dirs": sorted({os.path.dirname(p) for p in paths}),
                  "tmp": sorted(os.listdir(os.environ["TMPDIR"]))}))
"""


def test_a_read_only_cache_uses_one_private_dir_per_process_removed_at_exit(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory should be")
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    dead = f"dsc-kernels-{_dead_pid()}@{_HOST}-zz"  # a process killed before its exit
    live = f"dsc-kernels-{os.getpid()}@{_HOST}-yy"
    for name in (dead, live, "dsc-kernels-someone-else"):
        (tmpdir / name).mkdir()
        _age(tmpdir / name, STALE_ANY_S + 60)  # /tmp is everyone's: age alone removes nothing there
    out = subprocess.run([sys.executable, "-c", READ_ONLY, str(blocker)], env={**os.environ, "TMPDIR": str(tmpdir)},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.splitlines()[-1])
    private = [n for n in got["tmp"] if n not in (live, "dsc-kernels-someone-else")]
    assert len(private) == 1 and got["dirs"] == [str(tmpdir / private[0])]  # one for seven entries
    assert got["reused"]  # a key built twice is written once
    assert sorted(os.listdir(tmpdir)) == sorted([live, "dsc-kernels-someone-else"])  # removed at exit


@pytest.mark.parametrize("forgery", ["no files", "files a list", "a path out", "nested deep"])
def test_a_forged_entry_is_rebuilt(tmp_path, forgery):
    cache = KernelCache(str(tmp_path))
    key = cache_key(kernel=forgery)
    entry = cache.put(key, {"k.py": "x = 1\n"})
    forged = {"format": 1, "key": key, "meta": {}}
    (tmp_path / "secret").write_text("s")
    forged["files"] = {"no files": {}, "files a list": ["k.py"],
                       "a path out": {"../../secret": hashlib.sha256(b"s").hexdigest()}}.get(forgery)
    text = json.dumps(forged) if forgery != "nested deep" else "[" * 100000 + "]" * 100000
    with open(os.path.join(entry.path, MANIFEST), "w") as f:
        f.write(text)
    assert cache.get(key) is None
    rebuilt = cache.get_or_build(key, lambda: ({"k.py": "x = 2\n"}, {}))
    assert rebuilt.read("k.py") == b"x = 2\n" and cache.get(key) is not None


def test_an_entry_without_the_file_asked_for_is_a_clear_error(tmp_path):
    entry = KernelCache(str(tmp_path)).put(cache_key(kernel="other"), {"other.py": "x = 1\n"})
    with pytest.raises(ArtifactError, match=r"has no file 'kernel.py' \(it holds \['other.py'\]\)"):
        entry.file("kernel.py")
    with pytest.raises(ValueError, match="at least one file"):
        KernelCache(str(tmp_path)).put(cache_key(kernel="empty"), {})
