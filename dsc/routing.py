"""DeepSeekMoE's routing rules, the one copy that Config validation, the IR verifier and
dsc.ops.moe_route read: the selection methods, the scoring functions and what top_k,
n_group and topk_group may be. Plain Python on the floor of the house (no torch), so a
Config can check itself without importing the IR."""

from __future__ import annotations

TOPK_METHODS = ("greedy", "group_limited_greedy", "noaux_tc")
SCORING_FUNCS = ("softmax", "sigmoid")

# The arguments by their IR attribute names; Config passes its field names instead.
ARGUMENT_NAMES = {"experts": "experts", "top_k": "top_k", "n_group": "n_group", "topk_group": "topk_group"}


def broken_routing_rule(experts: int, top_k: int, n_group: int, topk_group: int, method: str,
                        names: dict[str, str] | None = None) -> tuple[str, str, int] | None:
    """(argument, rule, value) of the first rule the routing breaks, or None.

    Groups (DeepSeek's node-limited routing) always partition the experts; the methods
    that route by group must reach top_k experts in the topk_group groups they keep, and
    noaux_tc scores a group by the sum of its top two experts."""
    n = {**ARGUMENT_NAMES, **(names or {})}
    if n_group < 1:
        return n["n_group"], "must be at least 1", n_group
    if experts % n_group:
        return n["n_group"], f"must divide {n['experts']} ({experts})", n_group
    if not 1 <= topk_group <= n_group:
        return n["topk_group"], f"must not exceed {n['n_group']} ({n_group}) and be at least 1", topk_group
    if not 1 <= top_k <= experts:
        return n["top_k"], f"must not exceed {n['experts']} ({experts}) and be at least 1", top_k
    if method != "greedy" and top_k > topk_group * (experts // n_group):
        return (n["top_k"], f"must not exceed the experts in the top {topk_group} groups "
                            f"({topk_group * (experts // n_group)}) for {method}", top_k)
    if method == "noaux_tc" and experts // n_group < 2:
        return (n["n_group"], "must leave at least 2 experts per group for noaux_tc (groups are scored by their "
                              "top-2 sum)", n_group)
    return None
