"""Tuning logic on a CPU: search-space pruning by the card's limits, the per-device JSON
(round trip, atomic writes, malformed files), selection by device name with nearest
buckets and the heuristic fallback, and the search itself under a fake timer."""

from __future__ import annotations

import itertools
import json
import logging
import math

import pytest
import torch
from hypothesis import given, strategies as st

from dsc.codegen.triton import fp8_gemm, fused_moe, gemm, paged_attention
from dsc.runtime import tuned
from dsc.runtime.device import ARCH_LIMITS, REFERENCE_CARDS, DeviceInfo, Limits
from dsc.runtime.search_space import Call, Space, trial
from dsc.runtime.tuned import TunedTable, TuningError, parse_key, shape_key
from dsc.tune import search
from dsc.tune.workloads import Workload
from util import assert_close

TRITON_SPACES = [gemm.TUNING, paged_attention.TUNING, fused_moe.TUNING, fp8_gemm.TUNING]


def _shape_for(space: Space, m: int, itemsize: int) -> dict:
    return {
        "triton.gemm": {"batch": 1, "M": m, "N": 2048, "K": 7168, "itemsize": itemsize},
        "triton.paged_attention": {"batch": m, "rows": 128, "context": 4096, "page": 64, "dk": 576, "dv": 512,
                                   "fp8": False, "itemsize": itemsize},
        "triton.grouped_gemm": {"M": m, "N": 4096, "K": 7168, "experts": 256, "topk": 8, "block": 16,
                                "swiglu": True, "fp8": 0, "itemsize": itemsize},
        "triton.fp8_gemm": {"M": m, "N": 2048, "K": 7168, "block": 128, "act_quant": True, "itemsize": itemsize},
    }[space.kernel]


def _smem(space: Space, c: dict, s: dict) -> int:
    """Each kernel's shared-memory use, restated from its tiles (independently of fits)."""
    if space.kernel == "triton.gemm":
        return c["num_stages"] * (c["BLOCK_M"] * c["BLOCK_K"] + c["BLOCK_K"] * c["BLOCK_N"]) * s["itemsize"]
    if space.kernel == "triton.paged_attention":
        return (max(2, c["num_stages"]) * c["BLOCK_N"] * s["dk"] * s["itemsize"]
                + c["BLOCK_M"] * s["dk"] * s["itemsize"])
    if space.kernel == "triton.grouped_gemm":
        return c["num_stages"] * (c["BLOCK_M"] * c["BLOCK_K"] * s["itemsize"]
                                  + 2 * c["BLOCK_K"] * c["BLOCK_N"] * s["itemsize"])
    return c["num_stages"] * (c["BLOCK_M"] * 128 * s["itemsize"] + 128 * c["BLOCK_N"])


@pytest.mark.parametrize("space", TRITON_SPACES, ids=lambda s: s.kernel)
@given(m=st.sampled_from([1, 7, 16, 64, 300, 4096]), itemsize=st.sampled_from([2, 4]),
       smem_kib=st.sampled_from([48, 99, 163, 227]))
def test_candidates_are_exactly_the_configs_that_fit(space, m, itemsize, smem_kib):
    shape = _shape_for(space, m, itemsize)
    limits = Limits("test", smem_kib * 1024, 100)
    cands = space.candidates(shape, limits)
    fixed = space.fixed(shape)
    product = [dict(zip(space.params, v), **fixed) for v in itertools.product(*space.params.values())]
    want = {tuple(sorted(c.items())) for c in product if space.fits(c, shape, limits)}
    assert {tuple(sorted(c.items())) for c in cands} == want
    assert len(cands) == len(want)  # no duplicates
    for c in cands:
        assert _smem(space, c, shape) <= limits.smem_per_block, c
    bigger = space.candidates(shape, Limits("big", 1 << 30, 100))
    assert len(cands) <= len(bigger)


def test_pruning_follows_the_card():
    shape = _shape_for(gemm.TUNING, 4096, 2)
    a100, h100 = (gemm.TUNING.candidates(shape, ARCH_LIMITS[a]) for a in ("sm80", "sm90"))
    assert set(map(str, a100)) < set(map(str, h100))  # the H100's 227 KiB admits deeper pipelines
    dropped = [c for c in h100 if c not in a100]
    assert all(_smem(gemm.TUNING, c, shape) > ARCH_LIMITS["sm80"].smem_per_block for c in dropped)
    # tiles beyond the problem are not searched: a decode GEMV (M=1) keeps BLOCK_M 16
    assert {c["BLOCK_M"] for c in gemm.TUNING.candidates(_shape_for(gemm.TUNING, 1, 2), ARCH_LIMITS["sm90"])} == {16}


def test_fp8_grouped_gemm_fixes_its_k_step_to_the_scale_block():
    shape = {**_shape_for(fused_moe.TUNING, 64, 2), "fp8": 128}
    cands = fused_moe.TUNING.candidates(shape, ARCH_LIMITS["sm90"])
    assert cands and {c["BLOCK_K"] for c in cands} == {128}


@given(st.dictionaries(st.sampled_from(["M", "N", "K", "batch", "swiglu", "act"]),
                       st.one_of(st.integers(0, 1 << 20), st.booleans(), st.sampled_from(["bf16", "e4m3"])),
                       min_size=1))
def test_shape_keys_round_trip(shape):
    assert parse_key(shape_key(shape)) == shape


def _space(default_block=32):
    return Space("test.kernel", {"BLOCK": (16, 32, 64), "warps": (4, 8)}, bucketed=("M",),
                 default=lambda shape, device: {"BLOCK": default_block, "warps": 4},
                 fits=lambda c, shape, limits: c["BLOCK"] <= shape["N"])


def test_table_round_trip_and_atomic_save(tmp_path, monkeypatch):
    t = TunedTable("Fake GPU 9000", versions={"dsc": "0"})
    t.put("test.kernel", "bfloat16", "M=64,N=128", {"config": {"BLOCK": 64, "warps": 8}, "ms": 0.5})
    path = tmp_path / "fake-gpu-9000.json"
    t.save(str(path))
    back = TunedTable.load(str(path))
    assert back.to_json() == t.to_json()
    before = path.read_text()

    def crash(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(json, "dump", crash)
    t.put("test.kernel", "bfloat16", "M=1,N=128", {"config": {"BLOCK": 16, "warps": 4}})
    with pytest.raises(OSError):
        t.save(str(path))
    assert path.read_text() == before  # the old file whole, no temporary left beside it
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


@pytest.mark.parametrize("content, why", [
    (b"{not json", "malformed JSON"), (b'{"format": 7, "device": "x"}', "expected"),
    (b'{"format": 1, "device": "x", "entries": [3]}', "entries must map"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\xff", r"not UTF-8 text \(byte 0x89 at offset 0\)"),
    (b'{"format": 1, "device": "x", "entries": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nests too deeply"),
    (b'{"format": 1, "device": "x", "entries": {}, "n": ' + b"9" * 5000 + b"}", "malformed JSON"),
])
def test_malformed_files_name_the_file_and_the_problem(tmp_path, content, why):
    path = tmp_path / "x.json"
    path.write_bytes(content)
    with pytest.raises(TuningError, match=why) as e:
        TunedTable.load(str(path))
    assert str(path) in str(e.value)


@pytest.fixture
def fake_device(tmp_path, monkeypatch):
    """A CUDA-looking device name with a tuned file under $DSC_TUNED_DIR."""
    monkeypatch.setenv("DSC_TUNED_DIR", str(tmp_path))
    tuned.forget()
    dev = DeviceInfo("cuda", "Fake GPU 9000", (9, 0))
    yield dev, tmp_path / "fake-gpu-9000.json"
    tuned.forget()


def test_selection_by_device_name_nearest_bucket_and_fallback(fake_device, monkeypatch, caplog):
    dev, path = fake_device
    space = _space()
    monkeypatch.setattr(tuned, "device_limits", lambda device: Limits("sm90", 1 << 20, 132))
    t = TunedTable(dev.name)
    t.put(space.kernel, "bfloat16", "M=1,N=128", {"config": {"BLOCK": 16, "warps": 8}})
    t.put(space.kernel, "bfloat16", "M=256,N=128", {"config": {"BLOCK": 64, "warps": 4}})
    t.put(space.kernel, "bfloat16", "M=4096,N=128", {"config": {"BLOCK": 128, "warps": 4}})  # stale: 128 not a choice
    t.put(space.kernel, "bfloat16", "M=64,N=32", {"config": {"BLOCK": 64, "warps": 4}})  # does not fit N=32
    t.save(str(path))
    with caplog.at_level(logging.INFO, logger="dsc"):
        assert space.choose({"M": 2, "N": 128}, "bfloat16", dev) == {"BLOCK": 16, "warps": 8}
        assert space.choose({"M": 100, "N": 128}, "bfloat16", dev) == {"BLOCK": 64, "warps": 4}  # log2: nearer 256
        assert space.choose({"M": 9000, "N": 128}, "bfloat16", dev) == {"BLOCK": 64, "warps": 4}  # stale one skipped
        assert space.choose({"M": 64, "N": 32}, "bfloat16", dev) == {"BLOCK": 32, "warps": 4}  # unfit: heuristic
        assert space.choose({"M": 64, "N": 256}, "bfloat16", dev) == {"BLOCK": 32, "warps": 4}  # other N: heuristic
        assert space.choose({"M": 64, "N": 128}, "float32", dev) == {"BLOCK": 32, "warps": 4}  # other dtype
    said = [r.getMessage() for r in caplog.records if "tuned kernel configs" in r.getMessage()]
    assert said == [f"dsc: tuned kernel configs for Fake GPU 9000: {path}"]  # once, naming the file
    assert tuned.source(dev) == said[0].removeprefix("dsc: ")

    other = DeviceInfo("cuda", "Other GPU", (8, 0))
    with caplog.at_level(logging.INFO, logger="dsc"):
        assert space.choose({"M": 2, "N": 128}, "bfloat16", other) == {"BLOCK": 32, "warps": 4}
    warned = [r for r in caplog.records if "no tuned kernel configs for Other GPU" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING  # an untuned card is worth a warning
    assert "dsc tune" in tuned.source(other)


def _file(path, entries) -> None:
    path.write_text(json.dumps({"format": 1, "device": "Fake GPU 9000", "entries": entries}))


def test_malformed_entries_warn_once_naming_file_and_entry_and_fall_back(fake_device, monkeypatch, caplog):
    dev, path = fake_device
    space = _space()
    monkeypatch.setattr(tuned, "device_limits", lambda device: Limits("sm90", 1 << 20, 132))
    good = {"config": {"BLOCK": 64, "warps": 8}}
    _file(path, {space.kernel: {"bfloat16": {
        "M=1,N=128": good,
        "M=8,N=128": {"config": {"BLOCK": 16.0, "warps": 8}},  # 16.0 == 16 in Python; a float tile crashes
        "M=16,N=128": {"config": {"BLOCK": True, "warps": 8}},
        "M=abc,N=128": good,  # a bucketed dim that is not an integer
        "M=1.5,N=64": good,
        "M=32,N=128": {"config": {"BLOCK": [64], "warps": 8}},  # nested: not a config value
        "M=64,N=128": 3,
        "garbage": good,
    }, "float32": [1, 2]}, "other.kernel": "x"})
    with caplog.at_level(logging.INFO, logger="dsc"):
        for _ in range(2):  # the warnings come once
            assert space.choose({"M": 1, "N": 128}, "bfloat16", dev) == good["config"]
            for m in (8, 16):  # the nearest entries are bad: the next valid one, never a bad config
                assert space.choose({"M": m, "N": 128}, "bfloat16", dev) == good["config"]
            assert space.choose({"M": 2, "N": 64}, "bfloat16", dev) == {"BLOCK": 32, "warps": 4}  # heuristic
            assert space.choose({"M": 2, "N": 128}, "float32", dev) == {"BLOCK": 32, "warps": 4}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    loaded = [w for w in warnings if "malformed entries" in w]
    assert len(loaded) == 1 and str(path) in loaded[0] and "5 malformed entries" in loaded[0], warnings
    assert loaded[0].endswith(": test.kernel / bfloat16 / M=32,N=128: config BLOCK must be a number, string or "
                              "boolean, got [64]; test.kernel / bfloat16 / M=64,N=128: must be {\"config\": {...}, "
                              "...}; test.kernel / bfloat16 / garbage: shape key must be name=value pairs joined by "
                              "commas; and 2 more"), loaded[0]
    assert TunedTable.load(str(path)).problems[3:] == [
        "test.kernel / float32: must map shape -> record, got list",
        "other.kernel: must map dtype -> shape -> record, got str"]
    at_launch = [w for w in warnings if w.startswith(f"dsc: ignoring an entry of {path}")]
    assert sorted(w.split(": ", 2)[2] for w in at_launch) == sorted([
        "test.kernel / bfloat16 / M=8,N=128: config BLOCK must be int, got 16.0",
        "test.kernel / bfloat16 / M=16,N=128: config BLOCK must be int, got true",
        "test.kernel / bfloat16 / M=abc,N=128: shape key M must be an integer, got 'abc'",
        "test.kernel / bfloat16 / M=1.5,N=64: shape key M must be an integer, got '1.5'",
    ]), at_launch


@pytest.mark.parametrize("content", [b"\x00\xff\xfe binary", b"[" * 100_000, b'{"format": 1, "device": 3}'])
def test_an_unreadable_file_is_one_warning_and_heuristics(fake_device, content, caplog):
    dev, path = fake_device
    path.write_bytes(content)
    space = _space()
    with caplog.at_level(logging.INFO, logger="dsc"):
        for _ in range(2):
            assert space.choose({"M": 1, "N": 128}, "bfloat16", dev) == {"BLOCK": 32, "warps": 4}
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and str(path) in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith(f"dsc: ignoring tuned configs {path}: "), warned
    assert tuned.source(dev).startswith("no tuned kernel configs for Fake GPU 9000")


def test_the_user_directory_and_its_precedence_over_the_shipped_files(tmp_path, monkeypatch):
    monkeypatch.delenv("DSC_TUNED_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert tuned.user_dir() == str(tmp_path / "home" / ".cache" / "dsc" / "tuned")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert tuned.user_dir() == str(tmp_path / "xdg" / "dsc" / "tuned")
    monkeypatch.setenv("DSC_TUNED_DIR", str(tmp_path / "mine"))
    assert tuned.file_for("Fake GPU 9000") == str(tmp_path / "mine" / "fake-gpu-9000.json")  # not the package's

    shipped = tmp_path / "shipped"
    shipped.mkdir()
    monkeypatch.setattr(tuned, "SHIPPED_DIR", str(shipped))
    monkeypatch.setattr(tuned, "device_limits", lambda device: Limits("sm90", 1 << 20, 132))
    assert tuned.search_dirs() == [str(tmp_path / "mine"), str(shipped)]
    space, dev = _space(), DeviceInfo("cuda", "Fake GPU 9000", (9, 0))
    _file(shipped / "fake-gpu-9000.json", {space.kernel: {"bfloat16": {
        "M=1,N=128": {"config": {"BLOCK": 16, "warps": 4}}, "M=1,N=64": {"config": {"BLOCK": 16, "warps": 8}}}}})
    (tmp_path / "mine").mkdir()
    _file(tmp_path / "mine" / "fake-gpu-9000.json", {space.kernel: {"bfloat16": {
        "M=1,N=128": {"config": {"BLOCK": 64, "warps": 8}}}}})
    tuned.forget()
    try:
        assert space.choose({"M": 1, "N": 128}, "bfloat16", dev) == {"BLOCK": 64, "warps": 8}  # the user's
        assert space.choose({"M": 1, "N": 64}, "bfloat16", dev) == {"BLOCK": 16, "warps": 8}  # shipped, not in his
        assert tuned.source(dev) == (f"tuned kernel configs for Fake GPU 9000: {tmp_path / 'mine'}/fake-gpu-9000.json"
                                     f", then {shipped}/fake-gpu-9000.json")
    finally:
        tuned.forget()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_saved_files_are_readable_as_open_would_make_them(tmp_path, umask, mode):
    import os
    import stat

    old = os.umask(umask)
    try:
        TunedTable("dev").save(str(tmp_path / "dev.json"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "dev.json").st_mode) == mode


class FakeTimer:
    """Milliseconds from a table of configs; raises KeyboardInterrupt on request."""

    def __init__(self, ms_of, interrupt_after: int | None = None):
        self.ms_of, self.calls, self.interrupt_after = ms_of, 0, interrupt_after

    def __call__(self, run, copies):
        self.calls += 1
        if self.interrupt_after is not None and self.calls > self.interrupt_after:
            raise KeyboardInterrupt
        return self.ms_of(run(0))


def _workload(space, shape, bad=(), boom=()):
    """A launch whose output is 1..n scaled by its config's BLOCK (so the heuristic's is
    the truth), except configs in `bad` (wrong output) and `boom` (they raise)."""
    call = Call(space, shape, "bfloat16", torch.device("cpu"))
    truth = torch.arange(1.0, 9.0)

    def replay(i):
        cfg = space.choose(shape, "bfloat16", torch.device("cpu"))
        if (cfg["BLOCK"], cfg["warps"]) in boom:
            raise RuntimeError("out of resources")
        return (truth * (2.0 if (cfg["BLOCK"], cfg["warps"]) in bad else 1.0), cfg)
    return Workload(call, "test", replay, 1, [truth])


def _ms(out):
    cfg = out[1]  # the fake kernel hands its config to the fake timer
    return {(16, 4): 3.0, (16, 8): 2.0, (32, 4): 5.0, (32, 8): 4.0, (64, 4): 1.0, (64, 8): 6.0}[(cfg["BLOCK"],
                                                                                                cfg["warps"])]


def test_search_keeps_the_fastest_correct_config():
    space = _space()
    w = _workload(space, {"M": 8, "N": 64}, bad={(64, 4)}, boom={(16, 8)})  # the two fastest are wrong / crash
    o = search.tune_one(w, FakeTimer(_ms), Limits("cpu", 0, 2))
    assert o.config == {"BLOCK": 16, "warps": 4} and o.ms == 3.0
    assert o.default_ms == 5.0 and o.trials == 6 and o.rejected == 2 and math.isclose(o.speedup, 5 / 3)


def test_search_prunes_and_samples():
    space = _space()
    w = _workload(space, {"M": 8, "N": 16})  # only BLOCK 16 fits
    o = search.tune_one(w, FakeTimer(_ms), Limits("cpu", 0, 2))
    assert o.trials == 3 and o.config == {"BLOCK": 16, "warps": 8}  # the heuristic (32) is tried first anyway
    cands = search.candidates_for(_workload(space, {"M": 8, "N": 64}), Limits("cpu", 0, 2), max_trials=3)
    assert len(cands) == 3 and cands[0] == {"BLOCK": 32, "warps": 4}


def test_interrupted_run_keeps_what_it_finished(tmp_path):
    space = _space()
    path = tmp_path / "dev.json"
    table = TunedTable("dev")
    works = [_workload(space, {"M": m, "N": 64}) for m in (1, 64)]
    with pytest.raises(KeyboardInterrupt):
        search.tune(works, table, lambda: table.save(str(path)), FakeTimer(_ms, interrupt_after=8),
                    Limits("cpu", 0, 2))
    saved = TunedTable.load(str(path))
    assert list(saved.entries[space.kernel]["bfloat16"]) == ["M=1,N=64"]  # the first, whole; not the second
    assert saved.entries[space.kernel]["bfloat16"]["M=1,N=64"]["config"] == {"BLOCK": 64, "warps": 4}


def test_every_triton_gemm_candidate_computes_the_product():
    """Each sampled config of the space, forced on the kernel (under the interpreter, where
    warps and stages do not apply), gives the same product: pruning never admits a tile
    shape the kernel mishandles at ragged edges."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1, 40, 72, generator=g), torch.randn(1, 72, 56, generator=g)
    shape = {"batch": 1, "M": 40, "N": 56, "K": 72, "itemsize": 4}
    cands = gemm.TUNING.candidates(shape, ARCH_LIMITS["sm90"])
    tiles = {(c["BLOCK_M"], c["BLOCK_N"], c["BLOCK_K"], c["GROUP_M"]): c for c in cands}
    call = Call(gemm.TUNING, shape, "float32", a.device)
    assert len(tiles) >= 8
    for cfg in list(tiles.values())[:: max(1, len(tiles) // 8)]:
        c = torch.empty(1, 40, 56)
        with trial(call, cfg):
            gemm.bmm_into(a, b, c)
        assert_close(c, a @ b, 1e-5, f"config {cfg}")


def _jobs_at(space: Space, config: dict) -> tuple:
    """The kernel a space tunes, at DeepSeek-V3's widths in bf16, with config's tiles,
    specialized as the JIT specializes real arguments (unit strides are constants,
    pointers and widths multiples of 16): so Triton pipelines the loads as on the card."""
    tiles = {k: v for k, v in config.items() if k not in ("num_warps", "num_stages", "parts")}
    if space.kernel == "triton.gemm":  # a linear: x [M, K] row-major, B = W^T (K contiguous)
        (spec, sig, const), unit = gemm.signature("bf16")[0], ("sak", "sbk", "scn")
        divisible = ("a_ptr", "b_ptr", "c_ptr", "sam", "sbn", "scm", "N", "K")
    elif space.kernel == "triton.paged_attention":
        (spec, sig, const), unit = paged_attention.signature("bf16")[1], ()  # the split kernel
        divisible = ("q_ptr", "cache_ptr", "table_ptr", "lens_ptr", "items_ptr", "splits_ptr", "out_ptr", "lse_ptr",
                     "mid_o_ptr", "mid_lse_ptr", "stride_qb", "stride_qt", "stride_qh")
    elif space.kernel == "triton.grouped_gemm":  # gate + up with SiLU
        (spec, sig, const), unit = next(job for job in fused_moe.signature("bf16")
                                        if job[0].name == "grouped_gemm" and job[2]["SWIGLU"]), ()
        divisible = ("a_ptr", "wg_ptr", "wu_ptr", "out_ptr", "sam", "swe", "swn", "N", "K")
    else:
        (spec, sig, const), unit = fp8_gemm.signature("bf16", act_quant=True)[0], ()
        divisible = ("a_ptr", "w_ptr", "c_ptr", "sam", "N", "K")
    const = {**const, **tiles, **{k: 1 for k in unit}}
    return spec, {**sig, **{k: "constexpr" for k in const}}, const, {
        "num_warps": config["num_warps"], "num_stages": config["num_stages"], "divisible": list(divisible)}


@pytest.mark.parametrize("space", TRITON_SPACES, ids=lambda s: s.kernel)
def test_candidates_compile_for_sm90_within_its_shared_memory(space):
    """The heuristic and the largest-footprint candidates (by the space's own estimate)
    compile for sm_90, and Triton's shared memory for them stays within the card's and
    within a few KiB of the estimate the pruning trusts."""
    from dsc.codegen.triton.build import compile_all

    shape = _shape_for(space, 4096 if space.kernel != "triton.paged_attention" else 64, 2)
    limits = ARCH_LIMITS["sm90"]
    cands = sorted(space.candidates(shape, limits), key=lambda c: _smem(space, c, shape))
    picks = [space.default(shape, REFERENCE_CARDS["sm90"])] + cands[-2:]
    results = compile_all([_jobs_at(space, c) for c in picks], 90)
    for cfg, res in zip(picks, results):
        assert res["cubin_bytes"] > 0 and ".target sm_90" in res["ptx"], cfg
        assert res["shared"] <= limits.smem_per_block, (cfg, res["shared"])
        assert res["shared"] <= _smem(space, cfg, shape) + 8192, (cfg, res["shared"], _smem(space, cfg, shape))


def test_the_grouped_gemm_row_tile_is_tuned_per_batch_bucket(fake_device, monkeypatch):
    """vLLM's fused-MoE tables pick BLOCK_SIZE_M per batch size; dsc's tuned file does the
    same for the grouped GEMM's row tile, the launch reading the nearest bucket's."""
    dev, path = fake_device
    monkeypatch.setattr(tuned, "device_limits", lambda device: ARCH_LIMITS["sm90"])
    space = fused_moe.TUNING
    shape = {"N": 4096, "K": 7168, "experts": 256, "topk": 8, "block": 16, "swiglu": True, "fp8": 0, "itemsize": 2}
    small = {"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 1, "num_warps": 4, "num_stages": 4}
    large = {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 16, "num_warps": 8, "num_stages": 3}
    t = TunedTable(dev.name)
    for m, cfg in ((8, small), (2048, large)):
        t.put(space.kernel, "bfloat16", shape_key({**shape, "M": m}), {"config": cfg})
    t.save(str(path))
    assert space.choose({**shape, "M": 4}, "bfloat16", dev) == small
    assert space.choose({**shape, "M": 32}, "bfloat16", dev) == small
    assert space.choose({**shape, "M": 1500}, "bfloat16", dev) == large
    assert space.choose({**shape, "M": 8192}, "bfloat16", dev) == large
    # untuned shapes fall back to the heuristic's bucket rule
    assert space.choose({**shape, "M": 4096, "N": 2048}, "bfloat16", dev)["BLOCK_M"] == 128
