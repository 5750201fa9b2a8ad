"""Runs a scheduled graph: one launcher per kernel group, views on the host, dispatch
resolved from the call's sizes.

The per-call plan (which groups run, and where each intermediate lives in one
workspace whose bytes are shared by values that are never alive together) depends only
on the symbol bindings, so it is built once per shape and its workspace reused by every
call of that shape (see buffers.py).
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch

from dsc.codegen.kinds import IN_PLACE
from dsc.codegen.schedule import Group, live_groups, schedule
from dsc.errors import IRError
from dsc.ir.graph import Graph
from dsc.ir.interpreter import bind_symbols, concrete, concrete_attrs, evaluate_folds
from dsc.ir.opdef import get_op
from dsc.ir.ops.control import Dispatch
from dsc.ir.types import to_torch
from dsc.executor.buffers import Arena, Slot, place



class Executor:
    def __init__(self, g: Graph, lower: Callable[[Group], Callable], kinds: frozenset[str]):
        self.graph = g
        self.groups = schedule(g, kinds)
        self.launchers = {id(grp): self._launcher(grp, lower) for grp in self.groups}
        self._plans: dict[tuple, tuple[list[Group], Arena]] = {}

    @staticmethod
    def _launcher(grp: Group, lower):
        n = grp.root
        if grp.kind == "view":
            opdef = get_op(n.op)
            return lambda values, env, out=None: opdef.reference([values[id(n.srcs[0])]], concrete_attrs(n, env))
        if grp.kind == "dispatch":
            return lambda values, env, out=None: values[id(n.srcs[Dispatch.choose(n.attrs, env)])]
        return lower(grp)

    def _plan(self, env: dict) -> tuple[list[Group], Arena]:
        """The groups this shape runs, in order, and the workspace of their intermediates."""
        key = tuple(sorted((str(k), v) for k, v in env.items()))
        if key not in self._plans:
            def choose(n):
                try:
                    return Dispatch.choose(n.attrs, env)
                except KeyError:
                    raise IRError(f"dispatch on {n.attrs['symbol']}, which no input binds") from None

            order = live_groups(self.groups, self.graph, choose)
            self._plans[key] = (order, self._arena(order, env, choose))
        return self._plans[key]

    def _arena(self, order: list[Group], env: dict, choose) -> Arena:
        # a view or a branch choice aliases its source: it keeps the source's bytes alive
        alias: dict[int, int] = {}
        for grp in order:
            if grp.kind == "view":
                alias[id(grp.root)] = alias.get(id(grp.root.srcs[0]), id(grp.root.srcs[0]))
            elif grp.kind == "dispatch":
                src = grp.root.srcs[choose(grp.root)]
                alias[id(grp.root)] = alias.get(id(src), id(src))
        root = lambda nid: alias.get(nid, nid)  # noqa: E731
        last: dict[int, int] = {}
        for i, grp in enumerate(order):
            for s in ([grp.root.srcs[choose(grp.root)]] if grp.kind == "dispatch" else grp.inputs):
                last[root(id(s))] = i
        escaping = {root(id(v)) for _, v in self.graph.outputs}  # handed to the caller: never reused
        nodes, sizes, lifetimes = [], [], []
        for i, grp in enumerate(order):
            if grp.kind in IN_PLACE:
                continue
            for n in grp.outputs:
                if id(n) in escaping:
                    continue
                shape = tuple(concrete(d, env) for d in n.shape)
                dtype = to_torch(n.dtype)
                numel = 1
                for d in shape:
                    numel *= d
                nodes.append((id(n), shape, dtype))
                sizes.append(numel * dtype.itemsize)
                lifetimes.append((i, last.get(id(n), i)))
        offsets, total = place(sizes, lifetimes)
        slots = {nid: Slot(off, size, shape, dtype)
                 for (nid, shape, dtype), off, size in zip(nodes, offsets, sizes)}
        return Arena(slots, total)

    def __call__(self, inputs: Mapping[str, torch.Tensor], params: Mapping[str, torch.Tensor],
                 hook: Callable | None = None) -> dict:
        """g's outputs. hook(group, values, env, launch) -> launch()'s result, when given,
        wraps every group's launch (crosscheck.py compares each group with the reference)."""
        g = self.graph
        if any(name not in params for name in g.folded_names()):
            params = {**params, **evaluate_folds(g, params)}
        tensors = {**params, **inputs}
        env = bind_symbols(list(g.inputs), tensors)
        values: dict[int, torch.Tensor] = {}
        for n in g.nodes():
            if n.op in ("input", "param"):
                values[id(n)] = tensors[n.name]
        device = next(iter(inputs.values())).device if inputs else None
        order, arena = self._plan(env)
        for grp in order:
            outs = [arena.tensor(id(n), device) for n in grp.outputs] if device is not None else [None]
            planned = tuple(outs) if grp.extra_outputs else outs[0]

            def launch(grp=grp, planned=planned):
                return self.launchers[id(grp)](values, env, planned)
            out = hook(grp, values, env, launch) if hook is not None else launch()
            if grp.extra_outputs:
                for node, t in zip(grp.outputs, out):
                    values[id(node)] = t
            else:
                values[id(grp.root)] = out
        return {k: values[id(v)] for k, v in g.outputs}
