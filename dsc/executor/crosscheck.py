"""Compare a backend with the reference interpreter kernel group by kernel group, so a
disagreement names the group (and its fused ops) instead of a whole layer's output.

Each group runs on the backend; its outputs are then recomputed from the very same
input values with the ops' reference implementations. Groups that update state in place
(the paged cache write) are checked against the reference applied to a copy of their
inputs taken before the launch.
"""

from __future__ import annotations

from typing import Mapping

import torch

from dsc.codegen.kinds import GROUP_KINDS
from dsc.codegen.schedule import Group
from dsc.errors import DscError
from dsc.ir.interpreter import concrete_attrs
from dsc.ir.node import Node, toposort
from dsc.ir.opdef import get_op
from dsc.ir.ops.control import Dispatch
from dsc.runtime.accuracy import relative_error


def reference_outputs(group: Group, values: dict, env: dict) -> list[torch.Tensor]:
    """The group's outputs from the reference ops, reading what lies outside the group
    from values (and recomputing what the backend never materialized, e.g. a gather that
    attention reads straight from the pages)."""
    inside = {id(n) for n in group.nodes}
    memo: dict[int, torch.Tensor] = {}

    def ref(n: Node) -> torch.Tensor:
        if id(n) not in inside and id(n) in values:
            return values[id(n)]
        if id(n) not in memo:
            if n.op == "dispatch":
                memo[id(n)] = ref(n.srcs[Dispatch.choose(n.attrs, env)])
            else:
                memo[id(n)] = get_op(n.op).reference([ref(s) for s in n.srcs], concrete_attrs(n, env))
        return memo[id(n)]

    return [ref(n) for n in group.outputs]


def crosscheck(executor, inputs: Mapping[str, torch.Tensor], params: Mapping[str, torch.Tensor],
               tol: float) -> list[tuple[Group, float]]:
    """Run the executor's graph, checking every kernel group against the reference ops.
    Returns (group, relative error) per launched group; raises DscError naming the first
    group whose error exceeds tol."""
    report: list[tuple[Group, float]] = []

    def check(group: Group, values: dict, env: dict, launch):
        kind = GROUP_KINDS[group.kind]
        if kind.host:
            return launch()
        in_place = kind.in_place
        snapshot = {id(s): values[id(s)].clone() for s in group.inputs if id(s) in values} if in_place else None
        out = launch()
        got = list(out) if group.extra_outputs else [out]
        want = reference_outputs(group, {**values, **snapshot} if in_place else values, env)
        pack = next((n for n in group.nodes if n.op == "kv_pack_fp8"), None)
        if pack is not None:  # FP8 rows compare by what they decode to: a latent 1 ulp apart
            # (another summation order) may move a scale's low byte, not its meaning
            attrs = {"rank": pack.attrs["rank"], "group": pack.attrs["group"], "dtype": "f32"}
            unpack = get_op("kv_unpack_fp8").reference
            got, want = ([unpack([t], attrs) for t in ts] for ts in (got, want))
        err = max(relative_error(o, w) for o, w in zip(got, want))
        report.append((group, err))
        if err > tol:
            inside = {id(n) for n in group.nodes}
            ops = "+".join(n.op for n in toposort(list(group.outputs)) if id(n) in inside) or group.root.op
            raise DscError(f"kernel group {group.kind} ({ops}) disagrees with the reference: "
                           f"relative error {err:.3e} > {tol:g}")
        return out

    executor(inputs, params, hook=check)
    return report
