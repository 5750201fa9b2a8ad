"""Partition an optimized graph into kernel groups, one fused kernel per group.

Backend-independent: Triton and TVM lower the same groups, so each checks the other.
The rules, in the spirit of a fusing scheduler (Inductor, TVM's FuseOps):

- Layout ops (reshape, slice, expand, permute) are views: no kernel; the kernels that
  read them take strides.
- Row ops (elementwise ops, casts, RMSNorm, RoPE, last-axis concat) are fused into
  their consumer while it is a row op over the same leading dims and they have no other
  user; what remains is one generated row kernel per root. A paged_append whose new
  rows come from a row region writes them straight into the cache pages (the MLA
  "RMSNorm + RoPE + latent-cache write" group) instead of materializing them.
- Attention over a gathered paged cache with one shared latent head, whose V is a
  prefix of K, reads the pages directly (MLA decode, split-KV); any other attention is
  dense flash attention.
- Matrix ops (linear, einsum) are GEMMs.
- The MoE router (scores -> expert selection -> the selected weights, renormalized and
  scaled, shared experts appended) is one kernel with two outputs; alignment, grouped
  GEMMs and combine are a group each; an unfused moe_experts is the whole fused MoE.
- dispatch picks a branch at run time; groups are scheduled for both branches and the
  runtime runs only what the chosen branch reaches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dsc.codegen.kinds import GROUP_KINDS, KIND_OF_OP
from dsc.errors import DscError
from dsc.ir.graph import Graph
from dsc.ir.node import Node
from dsc.ir.opdef import OPS

VIEW_OPS = frozenset({"reshape", "slice", "expand", "permute"})
ROW_OPS = frozenset(name for name, opdef in OPS.items() if opdef.row_wise)  # declared by each op (OpDef.row_wise)


@dataclass(eq=False)
class Group:
    """One kernel launch (or a host-side view/branch choice for kind view/dispatch).

    root: the node whose value the group produces; nodes: the row-region nodes fused
    into it (root first); inputs: the values it reads from outside (graph leaves, other
    groups' roots, views)."""

    kind: str
    root: Node
    nodes: tuple[Node, ...] = ()
    inputs: tuple[Node, ...] = field(default=())
    extra_outputs: tuple[Node, ...] = ()  # further values the kernel writes (the router's weights)

    def __post_init__(self):
        if self.kind not in GROUP_KINDS:
            raise DscError(f"group kind {self.kind!r} is not declared in dsc/codegen/groups/")

    @property
    def outputs(self) -> tuple[Node, ...]:
        return (self.root, *self.extra_outputs)

    def __repr__(self) -> str:
        fused = "+".join(n.op for n in reversed(self.nodes)) or self.root.op
        return f"Group({self.kind}: {fused})"


def is_row_op(n: Node) -> bool:
    if n.op == "concat":
        return n.attrs["axis"] % n.type.rank == n.type.rank - 1
    return n.op in ROW_OPS


def call_nodes(g: Graph) -> list[Node]:
    """The nodes a call may evaluate (both branches of each dispatch), sources first.
    Folds are not among them: they run once, when the weights are loaded."""
    reach = _reach(g)
    return [n for n in g.nodes() if id(n) in reach]


def _reach(g: Graph) -> set[int]:
    seen: set[int] = set()
    stack = [v for _, v in g.outputs]
    while stack:
        n = stack.pop()
        if id(n) not in seen:
            seen.add(id(n))
            stack.extend(n.srcs)
    return seen


def _users(g: Graph) -> dict[int, list[Node]]:
    users: dict[int, list[Node]] = {}
    for n in call_nodes(g):
        for s in n.srcs:
            users.setdefault(id(s), []).append(n)
    return users


def _leading(n: Node) -> tuple:
    return tuple(n.shape[:-1])


def _paged_kv(k: Node, v: Node):
    """(gather, unpack or None) when k = reshape([kv_unpack_fp8](paged_gather(cache, table)))
    to one head and v = k[..., :dv]: attention that can read (and dequantize) the pages
    directly."""
    if k.op != "reshape" or k.shape[2] != 1:
        return None
    src, unpack = k.srcs[0], None
    if src.op == "kv_unpack_fp8":
        src, unpack = src.srcs[0], src
    if src.op != "paged_gather":
        return None
    if v.op != "slice" or v.srcs[0] is not k or v.attrs["start"] != 0 or v.attrs["axis"] % 4 != 3:
        return None
    return src, unpack


def schedule(g: Graph, supported: frozenset[str] | None = None) -> list[Group]:
    """Groups in execution order (sources before users). `supported`: the kinds a
    backend implements; a node no kind covers is a DscError naming its op."""
    users = _users(g)
    outputs = {id(v) for _, v in g.outputs}

    def inlined(n: Node) -> bool:
        """Fused into its one user rather than materialized."""
        us = users.get(id(n), [])
        if not (is_row_op(n) or n.op == "kv_pack_fp8") or id(n) in outputs or len(us) != 1:
            return False
        u = us[0]
        if u.op == "paged_append":
            return u.srcs[3] is n
        if u.op == "kv_pack_fp8":  # the FP8 cache row is packed as it is written
            return inlined(u) and _leading(u) == _leading(n)
        return n.op != "kv_pack_fp8" and is_row_op(u) and _leading(u) == _leading(n)

    order = call_nodes(g)
    routers = {}
    for n in order:
        if n.op == "select_experts":
            r = _router(n, users, outputs)
            if r is not None:
                routers[id(r.root)] = r
    covered = {id(m) for r in routers.values() for m in r.nodes}
    # an FP8 cache is gathered and dequantized in one pass: the gather joins its unpack
    covered |= {id(n.srcs[0]) for n in order if n.op == "kv_unpack_fp8" and n.srcs[0].op == "paged_gather"}

    groups: list[Group] = []
    for n in order:
        if id(n) in routers:
            groups.append(routers[id(n)])
            continue
        if n.op in ("input", "param") or inlined(n) or id(n) in covered:
            continue
        if n.op in VIEW_OPS:
            groups.append(Group("view", n, inputs=(n.srcs[0],)))
        elif n.op == "dispatch":
            groups.append(Group("dispatch", n, inputs=n.srcs))
        elif is_row_op(n) or n.op == "paged_append":
            region = _region(n, inlined)
            inside = {id(r) for r in region}
            ins = _unique(s for r in region for s in r.srcs if id(s) not in inside)
            groups.append(Group("paged_append" if n.op == "paged_append" else "rowwise", n, tuple(region), ins))
        elif n.op == "paged_gather":
            groups.append(Group("paged_gather", n, (n,), n.srcs))
        elif n.op == "kv_unpack_fp8" and n.srcs[0].op == "paged_gather":
            # gather + dequantize in one pass (the gather is then only this group's)
            gather = n.srcs[0]
            if len(users.get(id(gather), [])) != 1:
                raise DscError("kv_unpack_fp8: its paged_gather has other users; nothing covers that yet")
            groups.append(Group("paged_gather", n, (n, gather), gather.srcs))
        elif n.op == "attention":
            q, k, v, lens = n.srcs
            paged = _paged_kv(k, v)
            if paged is not None:
                gather, unpack = paged
                fused = (n, unpack) if unpack is not None else (n,)
                groups.append(Group("paged_attention", n, fused, (q, *gather.srcs, lens)))
            else:
                groups.append(Group("attention", n, (n,), n.srcs))
        elif n.op in KIND_OF_OP:  # a one-node group, as its kind declares (dsc/codegen/groups/)
            groups.append(Group(KIND_OF_OP[n.op], n, (n,), n.srcs))
        else:
            raise DscError(f"no kernel group covers op {n.op!r} (in graph {g.name}) yet")
    if supported is not None:
        for grp in groups:
            if grp.kind not in supported:
                raise DscError(f"this backend has no kernel for group {grp.kind!r} ({grp.root.op})")
    return groups


def _router(sel: Node, users, outputs) -> Group | None:
    """select_experts over router_scores, with gather(scores, ids) and the weight chain
    (normalize_sum, scale, append_const) and append_iota on the ids: one kernel."""
    scores = sel.srcs[0]
    if scores.op != "router_scores":
        return None
    gathers = [u for u in users.get(id(scores), []) if u.op == "gather" and u.srcs[1] is sel]
    if len(gathers) != 1 or len(users.get(id(scores), [])) != 2 or id(scores) in outputs:
        return None
    nodes = [scores, sel, gathers[0]]
    w = gathers[0]
    for op in ("normalize_sum", "scale", "append_const"):
        us = users.get(id(w), [])
        if len(us) == 1 and us[0].op == op and id(w) not in outputs:
            w = us[0]
            nodes.append(w)
    ids = sel
    others = [u for u in users.get(id(sel), []) if u is not gathers[0]]
    if len(others) == 1 and others[0].op == "append_iota" and id(sel) not in outputs:
        ids = others[0]  # the shared experts' ids are appended in the same kernel
        nodes.append(ids)
    inputs = (scores.srcs[0], *sel.srcs[1:])
    return Group("router", ids, tuple(nodes), inputs, extra_outputs=(w,))


def _region(root: Node, inlined) -> list[Node]:
    """root and every inlined row node it reaches, root first."""
    region, stack, seen = [], [root], set()
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        region.append(n)
        stack.extend(s for s in n.srcs if inlined(s))
    return region


def _unique(nodes) -> tuple[Node, ...]:
    out, seen = [], set()
    for n in nodes:
        if id(n) not in seen:
            seen.add(id(n))
            out.append(n)
    return tuple(out)


def live_groups(groups: list[Group], g: Graph, choose) -> list[Group]:
    """The groups one call runs: those the outputs reach through group inputs, taking at
    each dispatch only the branch `choose` picks."""
    by_root = {id(out): grp for grp in groups for out in grp.outputs}
    live: set[int] = set()
    stack = [v for _, v in g.outputs]
    while stack:
        n = stack.pop()
        grp = by_root.get(id(n))
        if grp is None or id(grp) in live:
            continue
        live.add(id(grp))
        stack.extend([n.srcs[choose(n)]] if grp.kind == "dispatch" else grp.inputs)
    return [grp for grp in groups if id(grp) in live]
