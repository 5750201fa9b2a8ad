"""Graph -> text. Generic over the op declarations; `dsc.ir.parser` reads it back.

    graph moe(%x: f32[N, 64]) {
      %gate.weight = param : f32[16, 64]
      %0 = cast(%x) {dtype="f32"} : f32[N, 64]
      ...
      return out=%9
    }

Folds (params computed from other params at load time) print as `fold NAME=%ref`
lines before the return.
"""

from __future__ import annotations

import math
from typing import Any

from dsc.ir.graph import Graph


def format_value(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return repr(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, tuple):
        return "[" + ", ".join(format_value(x) for x in v) + "]"
    return str(v)  # int or sympy expression


def print_graph(g: Graph) -> str:
    names: dict[int, str] = {}
    lines = []
    for n in g.inputs:
        names[id(n)] = "%" + n.name
    header = ", ".join(f"%{n.name}: {n.type}" for n in g.inputs)
    lines.append(f"graph {g.name}({header}) {{")
    counter = 0
    for n in g.nodes():
        if n.op == "input":
            continue
        if n.op == "param":
            names[id(n)] = "%" + n.name
            lines.append(f"  %{n.name} = param : {n.type}")
            continue
        names[id(n)] = f"%{counter}"
        counter += 1
        args = ", ".join(names[id(s)] for s in n.srcs)
        attrs = ", ".join(f"{k}={format_value(v)}" for k, v in sorted(n.attrs.items()))
        attrs = f" {{{attrs}}}" if attrs else ""
        lines.append(f"  {names[id(n)]} = {n.op}({args}){attrs} : {n.type}")
    for k, v in g.folds:
        lines.append(f"  fold {k}={names[id(v)]}")
    outs = ", ".join(f"{k}={names[id(v)]}" for k, v in g.outputs)
    lines.append(f"  return {outs}")
    lines.append("}")
    return "\n".join(lines) + "\n"
