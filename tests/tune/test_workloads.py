"""What `dsc tune` records from a layer's forward, and that replaying a recorded group
under a trial config reproduces it: on the triton backend (Triton's interpreter), with
a fake timer, so the GPU path's wiring is exercised without a GPU."""

from __future__ import annotations

import torch

from dsc import Config
from dsc.runtime import tuned
from dsc.runtime.device import ARCH_LIMITS
from dsc.tune import search, workloads
from tests.tune.test_tuning import FakeTimer

BUCKETS = workloads.Buckets(batches=(2,), contexts=(40,), prefill=(8,))
FP8 = "absorb,fuse_experts,fp8,fp8_kv,fold,cse,dce"


def _record(passes):
    cfg = Config.preset("tiny-v3")
    seen: set = set()
    found = list(workloads.mla_workloads(cfg, "triton", passes, torch.float32, torch.device("cpu"), BUCKETS, seen,
                                         1 << 20, lambda nbytes: True))
    found += list(workloads.moe_workloads(cfg, "triton", passes, torch.float32, torch.device("cpu"), BUCKETS, seen,
                                          1 << 20))
    return found


def test_records_each_tunable_launch_once_and_replays_it():
    found = _record("default")
    kernels = {w.call.space.kernel for w in found}
    assert kernels == {"triton.gemm", "triton.paged_attention", "triton.grouped_gemm"}
    keys = [(w.call.space.kernel, w.call.key) for w in found]
    assert len(keys) == len(set(keys))  # one workload per (kernel, shape)
    attn = [w for w in found if w.call.space.kernel == "triton.paged_attention"]
    assert {(w.call.shape["batch"], w.call.shape["context"]) for w in attn} >= {(2, 64)}  # B=2, 40 (+1) in 64-pages
    assert {w.where.split()[1] for w in found} == {"decode", "prefill", "N=2", "N=8"}
    for w in found:
        assert w.baseline and all(torch.isfinite(t).all() and t.abs().sum() > 0 for t in w.baseline if
                                  t.is_floating_point())
        default = w.call.space.default(w.call.shape, w.call.device)
        assert search.agrees(search._run(w, w.copies - 1, default), w.baseline), w.where


def test_fake_timed_search_over_fp8_launches_keeps_correct_configs():
    found = _record(FP8)
    kernels = {w.call.space.kernel for w in found}
    assert {"triton.fp8_gemm", "triton.grouped_gemm", "triton.paged_attention"} <= kernels
    grouped = [w for w in found if w.call.space.kernel == "triton.grouped_gemm"]
    assert all(w.call.shape["fp8"] == 128 for w in grouped)
    table = tuned.TunedTable("fake")

    def ms(out):  # any deterministic preference among the candidates
        return 1.0 + (sum(float(t.double().sum()) for t in search._outputs(out)) % 1.0)
    outcomes = search.tune(found, table, lambda: None, FakeTimer(ms), ARCH_LIMITS["sm90"], max_trials=3)
    assert len(outcomes) == len(found)
    for o, w in zip(outcomes, found):
        assert o.trials == min(3, len(search.candidates_for(w, ARCH_LIMITS["sm90"], None)))
        assert o.rejected == 0, (o.kernel, o.key)  # every candidate tried computes the same layer
        assert table.record(o.kernel, o.dtype, o.key)["config"] == o.config
