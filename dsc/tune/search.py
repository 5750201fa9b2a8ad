"""The search: for each recorded launch, time every config of its kernel's space that
fits the card, check each against the heuristic's output, keep the fastest.

Results go into a TunedTable saved after every finished launch (atomically), so an
interrupted run keeps everything it finished. A candidate that fails to launch or
whose output differs from the heuristic's (beyond rounding) is rejected and counted,
never kept.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable, Iterable

import torch

from dsc.runtime import search_space, tuned
from dsc.runtime.accuracy import relative_error
from dsc.runtime.device import Limits
from dsc.runtime.timing import Timer
from dsc.tune.workloads import Workload, _outputs

# Configs change the summation order (and, in bf16, where partial sums round): 2e-2
# admits that and rejects a wrong kernel, whose error is O(1).
AGREEMENT = 2e-2


@dataclass
class Outcome:
    kernel: str
    dtype: str
    key: str
    where: str
    config: dict
    ms: float
    default_ms: float
    trials: int
    rejected: int

    @property
    def speedup(self) -> float:
        return self.default_ms / self.ms if self.ms > 0 else math.nan


def agrees(out, baseline: list[torch.Tensor]) -> bool:
    outs = [t for t in _outputs(out) if t.is_floating_point()]
    refs = [t for t in baseline if t.is_floating_point()]
    return len(outs) == len(refs) and all(relative_error(o, r) <= AGREEMENT for o, r in zip(outs, refs))


def candidates_for(w: Workload, limits: Limits, max_trials: int | None, seed: int = 0) -> list[dict]:
    """The fitting configs, the heuristic's first; a random sample of them past max_trials."""
    space = w.call.space
    default = space.default(w.call.shape, w.call.device)
    rest = [c for c in space.candidates(w.call.shape, limits) if c != default]
    if max_trials is not None and len(rest) > max_trials - 1:
        rest = random.Random(seed).sample(rest, max(0, max_trials - 1))
    return [default] + rest


Progress = Callable[[str, int, int, float], None]  # (label, trial, of, best ms so far)


def tune_one(w: Workload, timer: Timer, limits: Limits, max_trials: int | None = None,
             progress: Progress | None = None) -> Outcome:
    configs = candidates_for(w, limits, max_trials)
    label = f"{w.call.space.kernel} {w.call.key}"
    best_cfg, best_ms, default_ms, rejected = None, math.inf, math.nan, 0
    for i, cfg in enumerate(configs):
        try:
            ok = agrees(_run(w, 0, cfg), w.baseline)
            ms = timer(lambda j, cfg=cfg: _run(w, j, cfg), w.copies) if ok else math.inf
        except Exception:  # noqa: BLE001  (a config the compiler or the card refuses: rejected)
            ok, ms = False, math.inf
        if i == 0:
            default_ms = ms
        if not ok or not math.isfinite(ms):
            rejected += 1
        elif ms < best_ms:
            best_cfg, best_ms = cfg, ms
        if progress:
            progress(label, i + 1, len(configs), best_ms)
    if best_cfg is None:  # even the heuristic failed: record nothing better than it
        best_cfg, best_ms = configs[0], default_ms
    return Outcome(w.call.space.kernel, w.call.dtype, w.call.key, w.where, best_cfg, best_ms, default_ms,
                   len(configs), rejected)


def _run(w: Workload, i: int, cfg: dict):
    with search_space.trial(w.call, cfg):
        return w.replay(i)


def tune(workloads: Iterable[Workload], table: tuned.TunedTable, save: Callable[[], None], timer: Timer,
         limits: Limits, max_trials: int | None = None, progress: Progress | None = None,
         done: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Tune every workload into table, saving after each one."""
    outcomes = []
    for w in workloads:
        o = tune_one(w, timer, limits, max_trials, progress)
        if math.isfinite(o.ms):
            table.put(o.kernel, o.dtype, o.key, {"config": o.config, "ms": round(o.ms, 6),
                                                 "default_ms": round(o.default_ms, 6), "trials": o.trials,
                                                 "rejected": o.rejected, "where": o.where})
            save()
        outcomes.append(o)
        if done:
            done(o)
    return outcomes
