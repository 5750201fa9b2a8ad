"""The search space each tunable kernel declares next to its source (like a
`triton.autotune` config list): its parameters and their candidate values, which shape
dims are *bucketed* (batch rows, tokens, context: the nearest tuned bucket is used) and
which must match exactly (widths, expert counts, flags), a `fits(config, shape, limits)`
rule that prunes what the card cannot run, and its heuristic default. At every launch
the kernel asks `space.choose(shape, dtype, device)`: a trial's config while tuning, the
tuned config nearest the shape in this device's file (dsc/runtime/tuned.py), else the
heuristic. `recording` and `trial` are the tuner's two hooks into those launches.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import json
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from dsc.runtime import tuned
from dsc.runtime.device import Limits
from dsc.runtime.tuned import Shape, shape_key

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

    def type_problem(self, config: dict) -> str | None:
        """Why a stored config's values are of the wrong type for this space (8.0 or
        true where a tile size is an int), or None. A launch must never see them."""
        for k, v in config.items():
            kinds = {type(c) for c in self.params.get(k, ())}
            if kinds and type(v) not in kinds:
                return f"config {k} must be {' or '.join(sorted(t.__name__ for t in kinds))}, got {json.dumps(v)}"
        return None

    def valid(self, config, shape: Shape, limits: Limits) -> bool:
        """A stored config this code can still launch: the same params, allowed values
        (of the same type: 8.0 == 8 in Python), fitting."""
        if not isinstance(config, dict) or set(config) != set(self.params) or self.type_problem(config):
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
        found = tuned.lookup(self, dtype, shape, device)
        return found if found is not None else self.default(shape, device)


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
