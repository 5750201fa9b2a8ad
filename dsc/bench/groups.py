"""Per kernel group: each group of a layer's forward timed as launched (its planned
buffers, its inputs), beside the same ops run by PyTorch eager (the ops' reference
implementations on the same inputs), with the group's FLOPs and the bytes a fused
kernel must move: each input read once, each output written once, and of a paged
cache only the rows in use."""

from __future__ import annotations

import math
from dataclasses import dataclass

import sympy
import torch

from dsc.codegen.schedule import Group
from dsc.ir.cost import node_cost
from dsc.ir.interpreter import concrete
from dsc.ir.node import toposort
from dsc.executor.crosscheck import reference_outputs


@dataclass
class GroupTiming:
    index: int
    kind: str
    ops: str  # the fused ops, in order
    out_shape: tuple
    ms: float
    eager_ms: float
    flops: float
    nbytes: float


def fused_ops(grp: Group) -> str:
    inside = {id(n) for n in grp.nodes}
    return "+".join(n.op for n in toposort(list(grp.outputs)) if id(n) in inside) or grp.root.op


def group_flops(grp: Group, env: dict) -> float:
    total = sum((node_cost(n).flops for n in grp.nodes), sympy.Integer(0))
    return float(sympy.sympify(total).subs(env))


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def group_bytes(grp: Group, values: dict, env: dict, outputs: list[torch.Tensor], used_rows: int | None) -> float:
    """Inputs read once, outputs written once; a paged cache (a [pages, page, row] input)
    counts its used rows only, and an append into it the rows it writes (not the cache)."""
    total = 0
    share = _expert_share(grp, values)
    for s in grp.inputs:
        t = values[id(s)]
        if id(s) in share:
            total += share[id(s)]
        elif s.op == "paged_append" or (s.op == "input" and s.name == "cache"):  # the paged cache
            if grp.kind != "paged_append" and used_rows is not None:
                total += used_rows * t.shape[-1] * t.element_size()
            elif grp.kind != "paged_append":
                total += _nbytes(t)
        else:
            total += _nbytes(t)
    for n, t in zip(grp.outputs, outputs):
        if grp.kind == "paged_append":  # the appended rows
            total += math.prod(concrete(d, env) for d in n.srcs[-1].shape) * t.element_size()
        else:
            total += _nbytes(t)
    return float(total)


def _expert_share(grp: Group, values: dict) -> dict[int, float]:
    """Input bytes a MoE group really reads where that is less than the whole tensor:
    a grouped GEMM only the experts its tokens chose (weights and their scales), the
    combine only the routed rows of the padded sorted layout."""
    n = grp.root
    if grp.kind in ("grouped_gemm", "grouped_gemm_fp8"):
        ids = values.get(id(n.srcs[2]))
        weights = [n.srcs[3]] + ([n.srcs[4]] if grp.kind == "grouped_gemm_fp8" else [])
        if ids is None or any(id(w) not in values for w in weights):
            return {}
        touched = int(ids.unique().numel())
        return {id(w): _nbytes(values[id(w)]) * touched / values[id(w)].shape[0] for w in weights}
    if grp.kind == "moe_combine":
        y, ids = values.get(id(n.srcs[0])), values.get(id(n.srcs[2]))
        if y is None or ids is None:
            return {}
        return {id(n.srcs[0]): ids.numel() * y.shape[-1] * y.element_size()}
    return {}


class GroupTimer:
    """The launch hook: times each group (and its eager twin) once per forward."""

    def __init__(self, timer, used_rows: int | None = None, eager: bool = True):
        self.timer, self.used_rows, self.eager = timer, used_rows, eager
        self.timings: list[GroupTiming] = []

    def __call__(self, grp: Group, values: dict, env: dict, launch):
        out = launch()
        if grp.kind in ("view", "dispatch"):
            return out
        outs = list(out) if grp.extra_outputs else [out]
        ms = self.timer(lambda i: launch(), 1)
        eager_ms = self.timer(lambda i: reference_outputs(grp, values, env), 1) if self.eager else float("nan")
        self.timings.append(GroupTiming(len(self.timings), grp.kind, fused_ops(grp), tuple(outs[0].shape), ms,
                                        eager_ms, group_flops(grp, env),
                                        group_bytes(grp, values, env, outs, self.used_rows)))
        return out
