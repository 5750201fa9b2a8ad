"""The Triton kernels one call of a graph launches, with the arguments it passes: what the
sm_80/sm_90 compile check compiles, specialized as Triton's JIT specializes each launch.
It runs the executor with launches recorded, not run, so it sits above codegen."""

from __future__ import annotations

import torch

from dsc.codegen.triton.build import recorded_launches
from dsc.codegen.triton.backend import BACKEND, compile_jobs
from dsc.errors import DscError
from dsc.executor.executor import Executor
from dsc.ir.interpreter import concrete
from dsc.ir.types import sym, to_torch
from dsc.runtime.device import REFERENCE_CARDS


def launch_jobs(graph, env: dict, arch: str = "sm90") -> list[tuple]:
    """(spec, signature, constexprs, options) of every kernel a call of graph at the sizes env
    (symbol or its name -> int) launches on arch's reference card (REFERENCE_CARDS: the
    tiles, splits, warps and stages a launch there chooses, tuned or default), options
    holding the arguments that call passes ("args" and "kwargs" of compile_all, num_warps
    and num_stages), its "grid" and its group's "group" kind: the call runs with its
    kernel launches recorded, not run, on placeholder tensors of those sizes (int inputs
    zero: valid page, length and expert ids), so strides, views and workspace offsets are
    the real ones. What the sm_80/sm_90 compile check and the resource report compile,
    specialized as Triton's JIT specializes the launch, and what the traffic model reads."""
    env = {sym(k) if isinstance(k, str) else k: v for k, v in env.items()}

    def placeholder(n, device="cpu"):
        shape, dt = [concrete(d, env) for d in n.shape], to_torch(n.dtype)
        return (torch.empty(shape, dtype=dt, device=device) if dt.is_floating_point or device == "meta"
                else torch.zeros(shape, dtype=dt))

    # weights only reach kernels, which record them: on the meta device they take no memory
    # (V3's 256 experts are 22 GB in bf16), and their address counts as 16-byte aligned, as
    # an allocator's is
    leaves = [n for n in graph.nodes() if n.op in ("input", "param")]
    inputs = {n.name: placeholder(n) for n in leaves if n.op == "input"}
    params = {n.name: placeholder(n, "meta") for n in leaves if n.op == "param"}
    params.update({name: placeholder(n, "meta") for name, n in graph.folds})
    jobs = []

    def hook(grp, values, env, launch):
        first = len(launches)
        out = launch()
        listed, made = {job[0].name: job for job in compile_jobs(grp)}, launches[first:]
        unlisted = [spec.name for spec, *_ in made if spec.name not in listed]
        if unlisted:  # what a group may launch is what `dsc compile` builds ahead of time
            raise DscError(f"group {grp.kind}: launched {unlisted}, which compile_jobs does not list "
                           f"({sorted(listed)})")
        for spec, args, kwargs, grid in made:
            sig = listed[spec.name][1]
            kwargs = dict(kwargs)
            chosen = {k: kwargs.pop(k) for k in ("num_warps", "num_stages") if k in kwargs}
            jobs.append((spec, sig, {}, {"args": list(args), "kwargs": kwargs, **chosen, "grid": grid,
                                         "group": grp.kind}))
        return out

    with recorded_launches(gpu=REFERENCE_CARDS[arch]) as launches:
        Executor(graph, BACKEND.lower, BACKEND.kinds)(inputs, params, hook=hook)
    return jobs
