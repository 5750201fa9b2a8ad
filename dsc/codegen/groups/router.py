"""The MoE router in one kernel with two outputs: scores, expert selection (greedy,
group-limited or DeepSeek-V3's noaux_tc), the selected weights renormalized and scaled,
and the shared experts appended to both (matched by the scheduler).

Kernel: route(logits, bias, spec, out=None) -> (ids, weights), spec a RouterSpec."""

from dsc.codegen.groups import GroupKind
from dsc.codegen.router_spec import router_spec


def _router(group, k):
    spec = router_spec(group)
    logits = group.inputs[0]
    bias = group.inputs[1] if len(group.inputs) > 1 else None

    def route(v, env, out=None):
        return k.route(v[id(logits)], v[id(bias)] if bias is not None else None, spec, out=out)
    return route


KINDS = (GroupKind("router", calls=("route",), launch=_router),)
