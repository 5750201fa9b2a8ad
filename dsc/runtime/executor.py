"""Runs a scheduled graph: one launcher per kernel group, views on the host, dispatch
resolved from the call's sizes, and each intermediate freed after its last reader.

The per-call plan (which groups run, when each buffer dies) depends only on the
symbol bindings, so it is built once per shape and reused.
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch

from dsc.codegen.schedule import Group, live_groups, schedule
from dsc.errors import IRError
from dsc.ir.graph import Graph
from dsc.ir.interpreter import bind_symbols, concrete, evaluate_folds
from dsc.ir.opdef import get_op
from dsc.ir.ops.control import Dispatch


class Executor:
    def __init__(self, g: Graph, lower: Callable[[Group], Callable], kinds: frozenset[str]):
        self.graph = g
        self.groups = schedule(g, kinds)
        self.launchers = {id(grp): self._launcher(grp, lower) for grp in self.groups}
        self._plans: dict[tuple, list[tuple[Group, list[int]]]] = {}

    @staticmethod
    def _launcher(grp: Group, lower):
        n = grp.root
        if grp.kind == "view":
            opdef = get_op(n.op)

            def view(values, env):
                attrs = {k: (tuple(concrete(d, env) for d in a) if opdef.attributes[k].kind == "dims" else a)
                         for k, a in n.attrs.items()}
                return opdef.reference([values[id(n.srcs[0])]], attrs)
            return view
        if grp.kind == "dispatch":
            return lambda values, env: values[id(n.srcs[Dispatch.choose(n.attrs, env)])]
        return lower(grp)

    def _plan(self, env: dict) -> list[tuple[Group, list[int]]]:
        """The groups to run with, for each, the node ids whose last reader it is."""
        key = tuple(sorted((str(k), v) for k, v in env.items()))
        if key not in self._plans:
            def choose(n):
                try:
                    return Dispatch.choose(n.attrs, env)
                except KeyError:
                    raise IRError(f"dispatch on {n.attrs['symbol']}, which no input binds") from None

            order = live_groups(self.groups, self.graph, choose)
            last: dict[int, int] = {}
            for i, grp in enumerate(order):
                srcs = [grp.root.srcs[choose(grp.root)]] if grp.kind == "dispatch" else grp.inputs
                for s in srcs:
                    last[id(s)] = i
            keep = {id(v) for _, v in self.graph.outputs}
            frees = [[] for _ in order]
            for nid, i in last.items():
                if nid not in keep:
                    frees[i].append(nid)
            self._plans[key] = list(zip(order, frees))
        return self._plans[key]

    def __call__(self, inputs: Mapping[str, torch.Tensor], params: Mapping[str, torch.Tensor]) -> dict:
        g = self.graph
        if any(name not in params for name in g.folded_names()):
            params = {**params, **evaluate_folds(g, params)}
        tensors = {**params, **inputs}
        env = bind_symbols(list(g.inputs), tensors)
        values: dict[int, torch.Tensor] = {}
        for n in g.nodes():
            if n.op in ("input", "param"):
                values[id(n)] = tensors[n.name]
        for grp, frees in self._plan(env):
            out = self.launchers[id(grp)](values, env)
            if grp.extra_outputs:
                for node, t in zip(grp.outputs, out):
                    values[id(node)] = t
            else:
                values[id(grp.root)] = out
            for nid in frees:
                values.pop(nid, None)
        return {k: values[id(v)] for k, v in g.outputs}
