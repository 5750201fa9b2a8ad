"""What a router kernel group computes, read off the IR nodes it fuses: shared by every
backend's router kernel (see dsc.codegen.schedule for the group)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from dsc.errors import DscError

if TYPE_CHECKING:  # the schedule collects the group kinds, this among their launchers' helpers
    from dsc.codegen.schedule import Group


@dataclass(frozen=True)
class RouterSpec:
    func: str  # softmax | sigmoid
    method: str  # greedy | group_limited_greedy | noaux_tc
    top_k: int
    n_group: int
    topk_group: int
    normalize: bool
    eps: float
    scale: float
    extra: int  # always-selected (shared) experts appended
    extra_start: int
    extra_w: float


def router_spec(group: Group) -> RouterSpec:
    by_op = {m.op: m for m in group.nodes}
    sel = by_op["select_experts"]
    norm, scale, const, iota = (by_op.get(op) for op in ("normalize_sum", "scale", "append_const", "append_iota"))
    if (const is None) != (iota is None) or (const and const.attrs["count"] != iota.attrs["count"]):
        raise DscError("router: shared experts must be appended to both the ids and the weights")
    return RouterSpec(
        func=by_op["router_scores"].attrs["func"], method=sel.attrs["method"], top_k=sel.attrs["top_k"],
        n_group=sel.attrs["n_group"], topk_group=sel.attrs["topk_group"], normalize=norm is not None,
        eps=norm.attrs["eps"] if norm else 0.0, scale=scale.attrs["factor"] if scale else 1.0,
        extra=iota.attrs["count"] if iota else 0, extra_start=iota.attrs["start"] if iota else 0,
        extra_w=const.attrs["value"] if const else 0.0)
