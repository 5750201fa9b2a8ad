"""Pattern rewriting over hash-consed graphs, in the spirit of tinygrad's PatternMatcher.

A rule is (Pat, fn): where the pattern matches a node, fn(node, **captures) may return
a replacement (or None to decline). `graph_rewrite` rebuilds the graph bottom-up and
applies the rules until nothing changes, so a pass reads as a short table of rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from dsc.ir.graph import Graph
from dsc.ir.node import Node


COMMUTATIVE = ("add", "mul")


@dataclass(frozen=True)
class Pat:
    """Matches a node by op (a name, a tuple of names, or None for any), operand
    patterns (None: any operands) and an attribute predicate; `name` captures it."""

    op: str | tuple[str, ...] | None = None
    srcs: tuple["Pat", ...] | None = None
    name: str | None = None
    where: Callable[[Node], bool] | None = None

    def match(self, n: Node, caps: dict) -> bool:
        if self.op is not None and n.op not in ((self.op,) if isinstance(self.op, str) else self.op):
            return False
        if self.where is not None and not self.where(n):
            return False
        if self.srcs is not None:
            if len(self.srcs) != len(n.srcs):
                return False
            orders = [n.srcs, n.srcs[::-1]] if n.op in COMMUTATIVE and len(n.srcs) == 2 else [n.srcs]
            for srcs in orders:  # cse may have put commutative operands either way round
                trial = dict(caps)
                if all(p.match(s, trial) for p, s in zip(self.srcs, srcs)):
                    caps.update(trial)
                    break
            else:
                return False
        if self.name is not None:
            if caps.setdefault(self.name, n) is not n:
                return False
        return True


def P(op=None, *srcs: Pat, name: str | None = None, where=None) -> Pat:
    return Pat(op, tuple(srcs) if srcs else None, name, where)


Rule = tuple[Pat, Callable[..., Node | None]]


def substitute(g: Graph, fn: Callable[[Node, Node], Node | None]) -> Graph:
    """Rebuild g bottom-up; fn(original, rebuilt) sees each node (rebuilt over the
    replaced operands) and may return a replacement."""
    memo: dict[int, Node] = {}

    def visit(root: Node) -> Node:
        for n in root.toposort():
            if id(n) in memo:
                continue
            srcs = tuple(memo[id(s)] for s in n.srcs)
            rebuilt = n if all(a is b for a, b in zip(srcs, n.srcs)) else Node.make(n.op, srcs, **n.attrs)
            out = fn(n, rebuilt)
            memo[id(n)] = rebuilt if out is None else out
        return memo[id(root)]

    outputs = [(k, visit(v)) for k, v in g.outputs]
    folds = [(k, visit(v)) for k, v in g.folds]
    return g.replace(outputs=outputs, folds=folds)


def graph_rewrite(g: Graph, rules: Iterable[Rule], max_rounds: int = 32) -> Graph:
    rules = list(rules)

    def apply(_: Node, n: Node) -> Node | None:
        for pat, fn in rules:
            caps: dict = {}
            if pat.match(n, caps):
                out = fn(n, **caps)
                if out is not None and out is not n:
                    return out
        return None

    for _ in range(max_rounds):
        new = substitute(g, apply)
        if new == g:
            return g
        g = new
    raise AssertionError(f"rewrite of graph {g.name} did not reach a fixed point in {max_rounds} rounds")
