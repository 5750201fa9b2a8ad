"""The MoE router in one kernel with two outputs: scores, expert selection (greedy,
group-limited or DeepSeek-V3's noaux_tc), the selected weights renormalized and scaled,
and the shared experts appended to both (matched by the scheduler). What the group
computes is a RouterSpec read off the nodes it fuses, shared by every backend's router
kernel and by dsc.ops.moe_route.

Kernel: route(logits, bias, spec, out=None) -> (ids, weights)."""

from __future__ import annotations

from dataclasses import dataclass

from dsc.codegen.groups import GroupKind
from dsc.errors import DscError


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


def router_spec(group) -> RouterSpec:
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


def _router(group, k):
    spec = router_spec(group)
    logits = group.inputs[0]
    bias = group.inputs[1] if len(group.inputs) > 1 else None

    def route(v, env, out=None):
        return k.route(v[id(logits)], v[id(bias)] if bias is not None else None, spec, out=out)
    return route


KINDS = (GroupKind("router", calls=("route",), launch=_router),)
