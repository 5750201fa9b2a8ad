"""`dsc show`: the IR before and after each pass, its symbolic cost, and (--cost) the
trade-off absorb decided on."""

from __future__ import annotations

import sympy

from dsc.cli import load_config
from dsc.compiler import LAYERS, compile_layer
from dsc.ir.cost import graph_cost
from dsc.ir.types import sym
from dsc.passes import resolve_pipeline
from dsc.passes.absorb import naive_and_absorbed, tradeoff


def show(args) -> int:
    cfg = load_config(args.model)
    resolve_pipeline(args.passes)  # an unknown pass is refused before any layer prints
    layers = LAYERS if args.layer == "all" else (args.layer,)
    for layer in layers:
        compiled = compile_layer(cfg, layer, passes=args.passes, target=args.target or "sm90", backend=None,
                                 dtype=args.dtype)
        pm, final = compiled.passes, compiled.graph
        print(f"# {layer} of {cfg.name}: the naive graph")
        print(compiled.naive)
        for rec in pm.records:
            print(f"# after {rec.name} ({rec.seconds * 1e3:.1f} ms){'' if rec.changed else ': unchanged'}")
            if rec.changed:
                print(rec.after)
        for line in pm.ctx.log:
            print(f"# log: {line}")
        if not pm.records:
            print(f"# passes {args.passes!r}: no pass in the pipeline, the graph above runs as is")
        cost = graph_cost(final)
        print(f"# cost per call: flops = {cost.flops}")
        print(f"#                bytes = {cost.bytes}\n")
        if args.cost and layer == "mla":
            print_absorb_tradeoff(final, args.target or "sm90")
    return 0


def print_absorb_tradeoff(g, target: str) -> None:
    forms = naive_and_absorbed(g)
    if forms is None:
        print("# --cost: no absorb dispatch in this graph (run the absorb pass to see its trade-off)\n")
        return
    t = tradeoff(*forms, target)
    simplify = {sym("B"): 1}
    print("# absorb trade-off for one row (B = 1), T new tokens, S cached tokens incl. the new ones "
          "(page-rounded):")
    for label, f, b in (("naive   ", t.naive_flops, t.naive_bytes), ("absorbed", t.absorbed_flops, t.absorbed_bytes)):
        print(f"#   {label} flops = {sympy.factor_terms(sympy.expand(f.subs(simplify)))}")
        print(f"#            bytes = {sympy.factor_terms(sympy.expand(b.subs(simplify)))}")
    print(f"#   crossover on the {t.machine} roofline, appending T tokens to {t.context} cached: "
          f"absorbed for T <= {t.crossover}, naive above\n")
