"""Runs any graph with the ops' PyTorch reference implementations: the ground truth
every pass and backend is tested against."""

from __future__ import annotations

from typing import Mapping

import functools

import sympy
import torch

from dsc.errors import InputError, IRError
from dsc.ir.graph import Graph
from dsc.ir.node import Node
from dsc.ir.opdef import get_op
from dsc.ir.ops.control import Dispatch
from dsc.ir.types import to_torch


def bind_symbols(leaves: list[Node], tensors: Mapping[str, torch.Tensor], env: dict | None = None) -> dict:
    """Symbol -> int from the actual shapes of the leaves; raises InputError on a mismatch."""
    env = {} if env is None else env
    deferred = []
    for n in leaves:
        if n.name not in tensors:
            kind = "weight" if n.op == "param" else "input"
            raise InputError(f"missing {kind} {n.name!r} ({n.type})")
        t = tensors[n.name]
        if not isinstance(t, torch.Tensor):
            raise InputError(f"{n.name}: expected a torch.Tensor, got {type(t).__name__}")
        want = to_torch(n.dtype)
        if t.dtype != want:
            raise InputError(f"{n.name}: expected dtype {want}, got {t.dtype}")
        if t.dim() != n.type.rank:
            raise InputError(f"{n.name}: expected shape {list(n.shape)}, got {list(t.shape)}")
        for i, (d, actual) in enumerate(zip(n.shape, t.shape)):
            if isinstance(d, int):
                if d != actual:
                    raise InputError(f"{n.name}: dim {i} must be {d}, got {actual} (shape {list(t.shape)})")
            elif isinstance(d, sympy.Symbol):
                if env.setdefault(d, actual) != actual:
                    raise InputError(f"{n.name}: dim {i} is {d} = {env[d]} elsewhere, got {actual}")
            else:
                deferred.append((n, i, d, actual))
    for n, i, d, actual in deferred:
        value = d.subs(env)
        if not value.is_Integer:
            raise InputError(f"{n.name}: dim {i} ({d}) depends on sizes no input fixes")
        if int(value) != actual:
            raise InputError(f"{n.name}: dim {i} must be {d} = {int(value)}, got {actual}")
    return env


def concrete(d, env: dict) -> int:
    """A dim bound to an int under env. Memoized: sympy's subs costs ~0.1 ms, and the
    runtime asks for the same few dims under the same bindings on every call."""
    if isinstance(d, int):
        return d
    return _concrete(d, tuple(sorted(env.items(), key=lambda kv: str(kv[0]))))


@functools.lru_cache(maxsize=1 << 16)
def _concrete(d, env_items: tuple) -> int:
    return int(sympy.sympify(d).subs(dict(env_items)))


def concrete_attrs(n: Node, env: dict) -> dict:
    """n's attributes with symbolic "dims" bound to ints (what reference implementations take)."""
    opdef = get_op(n.op)
    return {k: (tuple(concrete(d, env) for d in v) if opdef.attributes[k].kind == "dims" else v)
            for k, v in n.attrs.items()}


def evaluate_folds(g: Graph, params: Mapping[str, torch.Tensor], check_shapes: bool = True) -> dict:
    """The folded params of g, computed from its checkpoint params (once per weight load)."""
    if not g.folds:
        return {}
    folds = Graph(f"{g.name}.folds", [], g.folds)
    return interpret(folds, {}, params, check_shapes)


def interpret(g: Graph, inputs: Mapping[str, torch.Tensor], params: Mapping[str, torch.Tensor],
              check_shapes: bool = True) -> dict[str, torch.Tensor]:
    """Evaluate g's outputs. Folded params missing from `params` are computed first; at a
    dispatch only the chosen branch runs; values are freed after their last use."""
    if any(name not in params for name in g.folded_names()):
        params = {**params, **evaluate_folds(g, params, check_shapes)}
    tensors = {**params, **inputs}
    env = bind_symbols(list(g.inputs), tensors)

    def choose(n: Node) -> int:
        try:
            return Dispatch.choose(n.attrs, env)
        except KeyError:
            raise IRError(f"dispatch on {n.attrs['symbol']}, which no input binds") from None

    order = g.live_nodes(choose)
    bind_symbols([n for n in order if n.op == "param"], tensors, env)

    last_use: dict[int, int] = {}
    for i, n in enumerate(order):
        for s in n.srcs:
            last_use[id(s)] = i
    keep = {id(v) for _, v in g.outputs}

    values: dict[int, torch.Tensor] = {}
    for i, n in enumerate(order):
        if n.op in ("input", "param"):
            values[id(n)] = tensors[n.name]
            continue
        if n.op == "dispatch":
            out = values[id(n.srcs[choose(n)])]
        else:
            out = get_op(n.op).reference([values[id(s)] for s in n.srcs], concrete_attrs(n, env))
        if check_shapes:
            want = [concrete(d, env) for d in n.shape]
            if list(out.shape) != want or out.dtype != to_torch(n.dtype):
                raise IRError(f"{n.op}: reference produced {out.dtype}{list(out.shape)}, "
                              f"declared {n.type} = {to_torch(n.dtype)}{want}")
        values[id(n)] = out
        for s in n.srcs:
            if last_use.get(id(s)) == i and id(s) not in keep:
                values.pop(id(s), None)
    return {k: values[id(v)] for k, v in g.outputs}
