"""What to tune: the tunable kernel launches a config's layers make at each shape bucket.

The layers run once per bucket (decode: batch rows x context; prefill: tokens) with
random weights made on the device; a launch hook records, per kernel group, the
tunable kernels it calls and a copy of the group's inputs. Replaying the group's
launcher on those copies is a trial: the tuner forces a candidate config on the
recorded kernel and times the group (for a split-KV attention that includes the
combine the split count changes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from dsc.config import Config
from dsc.nn import MLA, MoE
from dsc.nn.checkpoint import random_weights
from dsc.runtime import search_space
from dsc.runtime.timing import copies_to_rotate

# The buckets of the issue: decode batch 1..256, prefill up to 16k tokens, context up to 128k.
DECODE_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CONTEXTS = (1024, 4096, 16384, 65536, 131072)
PREFILL_TOKENS = (512, 2048, 8192, 16384)


@dataclass
class Buckets:
    batches: tuple[int, ...] = DECODE_BATCHES
    contexts: tuple[int, ...] = CONTEXTS
    prefill: tuple[int, ...] = PREFILL_TOKENS

    def decode(self) -> Iterator[tuple[int, int]]:
        for ctx in self.contexts:
            for b in self.batches:
                yield b, ctx


@dataclass
class Workload:
    """One recorded launch of a tunable kernel, and how to replay its group."""

    call: search_space.Call
    where: str  # "mla decode B=8 S=4096"
    replay: Callable[[int], object]  # replay(i): the group's launch on input copy i
    copies: int
    baseline: list[torch.Tensor] = field(default_factory=list)  # the group's outputs at the heuristic config


def _outputs(out) -> list[torch.Tensor]:
    return [t for t in (out if isinstance(out, (tuple, list)) else [out]) if isinstance(t, torch.Tensor)]


class Recorder:
    """The launch hook: records each group's tunable calls once per (kernel, dtype, shape)."""

    def __init__(self, executor, where: str, seen: set, cache_bytes: int, params: set[int]):
        self.executor, self.where, self.seen, self.cache_bytes, self.params = executor, where, seen, cache_bytes, params
        self.found: list[Workload] = []

    def __call__(self, grp, values, env, launch):
        with search_space.recording() as calls:
            out = launch()
        fresh = [c for c in calls if (c.space.kernel, c.dtype, c.key) not in self.seen]
        if not fresh:
            return out
        # the group's inputs outlive this call only as copies (the workspace is reused);
        # weights are not copied (they are not rewritten, and can be gigabytes)
        moving = [s for s in grp.inputs if id(values[id(s)]) not in self.params]
        nbytes = sum(values[id(s)].numel() * values[id(s)].element_size() for s in moving)
        copies = copies_to_rotate(nbytes, self.cache_bytes)
        sets = []
        for _ in range(copies):
            v = {id(s): values[id(s)] for s in grp.inputs}
            v.update({id(s): values[id(s)].clone() for s in moving})
            sets.append(v)
        launcher, env = self.executor.launchers[id(grp)], dict(env)
        # in-place groups (the paged append) write into their input: replays write into copies
        replay = lambda i, sets=sets: launcher(sets[i], env, None)  # noqa: E731
        baseline = [t.clone() for t in _outputs(out)]
        for c in fresh:
            self.seen.add((c.space.kernel, c.dtype, c.key))
            self.found.append(Workload(c, self.where, replay, copies, baseline))
        return out


def _fill_cache(mla: MLA, cache, context: int, seed: int) -> None:
    """Rows of `context` random latents (packed when the cache is FP8)."""
    g = torch.Generator(device=cache.pages.device).manual_seed(seed)
    if cache.pages.dtype == torch.uint8:
        from dsc.ir.opdef import get_op

        pack = next(n for n in mla.graph.nodes() if n.op == "kv_pack_fp8")
        latent = torch.randn(*cache.pages.shape[:2], mla.cfg.latent_dim, generator=g, device=cache.pages.device)
        cache.pages.copy_(get_op("kv_pack_fp8").reference([latent.to(mla.dtype)], pack.attrs))
    else:
        cache.pages.copy_(torch.randn(cache.pages.shape, generator=g, device=cache.pages.device))
    cache.seqlens.fill_(context)


def mla_workloads(cfg: Config, backend: str, passes, dtype, device, buckets: Buckets, seen: set, cache_bytes: int,
                  fits: Callable[[int], bool], seed: int = 0) -> Iterator[Workload]:
    """MLA's launches: a decode step per (batch, context) and a prefill per token count.
    Buckets whose cache would not fit (fits(bytes) false) are skipped."""
    mla = MLA(cfg, backend=backend, passes=passes, dtype=dtype, device=device)
    mla.load_state_dict(random_weights(mla, seed))
    params = {id(t) for t in mla.weights().values()}
    g = torch.Generator(device=device).manual_seed(seed + 1)
    row = mla.graph.input("cache")
    per_token = int(row.shape[-1]) * (1 if row.dtype.name == "u8" else torch.empty((), dtype=dtype).element_size())
    shapes = [("decode", b, 1, ctx) for b, ctx in buckets.decode()] + [("prefill", 1, t, 0) for t in buckets.prefill]
    for phase, batch, tokens, ctx in shapes:
        if not fits(batch * (ctx + tokens) * per_token):
            continue
        cache = mla.new_cache(batch, ctx + tokens)
        if ctx:
            _fill_cache(mla, cache, ctx, seed + 2)
        x = torch.randn(batch, tokens, cfg.hidden_size, generator=g, device=device).to(dtype)
        pos = (ctx + torch.arange(tokens, device=device)).repeat(batch, 1)
        where = f"mla {phase} B={batch} " + (f"S={ctx}" if phase == "decode" else f"T={tokens}")
        rec = Recorder(mla._runner, where, seen, cache_bytes, params)
        with mla.launch_hook(rec):
            mla(x, pos, cache)
        yield from rec.found
        del cache


def moe_workloads(cfg: Config, backend: str, passes, dtype, device, buckets: Buckets, seen: set, cache_bytes: int,
                  seed: int = 0) -> Iterator[Workload]:
    """MoE's launches at every decode batch and prefill token count."""
    moe = MoE(cfg, backend=backend, passes=passes, dtype=dtype, device=device)
    moe.load_state_dict(random_weights(moe, seed))
    params = {id(t) for t in moe.weights().values()}
    g = torch.Generator(device=device).manual_seed(seed + 3)
    for tokens in sorted(set(buckets.batches) | set(buckets.prefill)):
        x = torch.randn(tokens, cfg.hidden_size, generator=g, device=device).to(dtype)
        rec = Recorder(moe._runner, f"moe N={tokens}", seen, cache_bytes, params)
        with moe.launch_hook(rec):
            moe(x)
        yield from rec.found
