"""DeepSeekMoE ops: router scores, expert selection, weight gathering and
normalisation, and the routed SwiGLU experts."""

from __future__ import annotations

import sympy
import torch
import torch.nn.functional as F

from dsc.ir.opdef import Attr, OpDef, register
from dsc.ir.ops.checks import dim_match, float_dtype, int_dtype, rank_is, same_dtype
from dsc.ir.types import TensorType, f32, i64
from dsc.routing import SCORING_FUNCS, TOPK_METHODS, broken_routing_rule


def finite_or_zero(scores: torch.Tensor) -> torch.Tensor:
    """vLLM's rule for non-finite router scores (a NaN or infinite logit, e.g. from a
    padded token's garbage hidden state): they count as 0 before selection, so the top-k
    stays k distinct experts, the weights stay finite, and no other token is touched. A
    softmax row with a NaN or +inf logit is NaN throughout, so all of it becomes 0."""
    return torch.where(torch.isfinite(scores), scores, torch.zeros((), dtype=scores.dtype, device=scores.device))


@register
class RouterScores(OpDef):
    """Per-expert affinities from router logits [N, E], computed in float32."""

    name = "router_scores"
    operands = ("logits",)
    attributes = {"func": Attr("str", choices=SCORING_FUNCS)}

    def infer(self, srcs, a):
        rank_is(self, "logits", srcs[0], 2)
        if srcs[0].dtype != f32:
            raise self.fail(f"router logits must be f32 (DeepSeek routes in float32), got {srcs[0].dtype.name}")
        return srcs[0]

    def reference(self, args, a):
        x = args[0]
        return finite_or_zero(x.softmax(dim=-1) if a["func"] == "softmax" else x.sigmoid())

    def flops(self, srcs, out, a):
        return 4 * sympy.sympify(out.numel())


@register
class SelectExperts(OpDef):
    """The top_k experts of each token [N, top_k] (int64, best first).

    greedy: top_k of the scores. group_limited_greedy: keep the topk_group groups with
    the highest maximum score, then top_k inside them. noaux_tc: add the correction
    bias (for selection only), score groups by the sum of their two best, keep
    topk_group, then top_k. Experts of dropped groups are masked with -inf, as in
    DeepSeek's code.
    """

    name = "select_experts"
    operands = ("scores", "bias?")
    attributes = {
        "method": Attr("str", choices=TOPK_METHODS),
        "top_k": Attr("int"),
        "n_group": Attr("int", 1),
        "topk_group": Attr("int", 1),
    }

    def infer(self, srcs, a):
        scores = srcs[0]
        rank_is(self, "scores", scores, 2)
        float_dtype(self, "scores", scores)
        n_exp = scores.shape[1]
        if len(srcs) == 2:
            rank_is(self, "bias", srcs[1], 1)
            same_dtype(self, scores, srcs[1])
            dim_match(self, "bias length", srcs[1].shape[0], n_exp)
        if not isinstance(n_exp, int):
            raise self.fail(f"the expert count must be an int, got {n_exp}")
        broken = broken_routing_rule(n_exp, a["top_k"], a["n_group"], a["topk_group"], a["method"])
        if broken:
            raise self.fail(f"{broken[0]}: {broken[1]}, got {broken[2]}")
        return TensorType([scores.shape[0], a["top_k"]], i64)

    def reference(self, args, a):
        scores = args[0]
        choice = finite_or_zero(scores + args[1]) if len(args) == 2 else scores
        if a["method"] != "greedy":
            n, e = choice.shape
            grouped = choice.view(n, a["n_group"], e // a["n_group"])
            if a["method"] == "group_limited_greedy":
                group_scores = grouped.max(dim=-1).values
            else:
                group_scores = grouped.topk(2, dim=-1).values.sum(dim=-1)
            keep = group_scores.topk(a["topk_group"], dim=-1).indices
            group_mask = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, keep, True)
            expert_mask = group_mask[:, :, None].expand_as(grouped).reshape(n, e)
            choice = choice.masked_fill(~expert_mask, float("-inf"))
        return choice.topk(a["top_k"], dim=-1).indices

    def flops(self, srcs, out, a):
        return 2 * sympy.sympify(srcs[0].numel())


@register
class Gather(OpDef):
    """x[n, idx[n, j]] along the last axis: the selected experts' scores."""

    name = "gather"
    operands = ("x", "idx")

    def infer(self, srcs, a):
        x, idx = srcs
        rank_is(self, "x", x, 2)
        rank_is(self, "idx", idx, 2)
        int_dtype(self, "idx", idx)
        dim_match(self, "idx's row count", idx.shape[0], x.shape[0])
        return x.with_shape(idx.shape)

    def reference(self, args, a):
        return args[0].gather(1, args[1].to(torch.int64))


@register
class NormalizeSum(OpDef):
    """x / (sum(x, last axis) + eps): top-k weights renormalised to sum to 1."""

    name = "normalize_sum"
    row_wise = True
    operands = ("x",)
    attributes = {"eps": Attr("float", 1e-20)}

    def infer(self, srcs, a):
        float_dtype(self, "x", srcs[0])
        return srcs[0]

    def reference(self, args, a):
        x = args[0]
        return x / (x.sum(dim=-1, keepdim=True) + a["eps"])

    def flops(self, srcs, out, a):
        return 2 * sympy.sympify(out.numel())


@register
class MoeExperts(OpDef):
    """sum_j w[n, j] * down_e(silu(gate_e(x_n)) * up_e(x_n)) with e = ids[n, j].

    x [N, H]; ids, w [N, K]; gate, up [E, I, H]; down [E, H, I] (stacked per-expert
    nn.Linear weights). Each expert runs only on the tokens routed to it; each weighted
    row (the product in float32) is rounded to x's dtype, as the grouped path's down
    projection writes it, and the rows summed in float32, cast to x's dtype at the end.
    """

    name = "moe_experts"
    operands = ("x", "ids", "w", "gate", "up", "down")

    def infer(self, srcs, a):
        x, ids, w, gate, up, down = srcs
        rank_is(self, "x", x, 2)
        float_dtype(self, "x", x)
        rank_is(self, "ids", ids, 2)
        int_dtype(self, "ids", ids)
        rank_is(self, "w", w, 2)
        float_dtype(self, "w", w)
        for what, t in (("gate", gate), ("up", up), ("down", down)):
            rank_is(self, what, t, 3)
            same_dtype(self, x, t)
        dim_match(self, "w's shape", w.shape[0], ids.shape[0])
        dim_match(self, "w's top-k dim", w.shape[1], ids.shape[1])
        dim_match(self, "ids' token count", ids.shape[0], x.shape[0])
        e, i, h = gate.shape
        dim_match(self, "gate's hidden dim", h, x.shape[1])
        for what, t, want in (("up", up, (e, i, h)), ("down", down, (e, h, i))):
            for d, wd in zip(t.shape, want):
                dim_match(self, f"{what}'s shape {list(t.shape)}", d, wd)
        return x

    def reference(self, args, a):
        x, ids, w, gate, up, down = args
        out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        for e in ids.unique().tolist():
            if not 0 <= e < gate.shape[0]:  # a slot of no expert (expert parallelism's -1) adds nothing
                continue
            tok, slot = torch.where(ids == e)
            h = x[tok]
            act = F.silu(F.linear(h, gate[e])) * F.linear(h, up[e])
            weighted = (F.linear(act, down[e]).float() * w[tok, slot, None].float()).to(x.dtype)
            out.index_add_(0, tok, weighted.float())
        return out.to(x.dtype)

    def flops(self, srcs, out, a):
        x, ids, _, gate, _, _ = srcs
        _, i, h = gate.shape
        return 6 * sympy.sympify(ids.numel()) * i * h

    def bytes(self, srcs, out, a):
        x, ids, w, gate, up, down = srcs
        e = gate.shape[0]
        per_expert = sympy.sympify(gate.nbytes() + up.nbytes() + down.nbytes()) / e
        touched = sympy.Min(e, sympy.sympify(ids.numel()))  # experts actually read
        io = sum(sympy.sympify(t.nbytes()) for t in (x, ids, w, out))
        return io + touched * per_expert
