"""`dsc show`: the IR before and after each pass, and its symbolic cost."""

from __future__ import annotations

from dsc.builders import build_mla, build_moe
from dsc.cli import load_config
from dsc.ir.cost import graph_cost
from dsc.ir.types import dtype as ir_dtype
from dsc.passes import PassManager, resolve_pipeline


def show(args) -> int:
    cfg = load_config(args.model)
    pipeline = resolve_pipeline(args.passes)
    layers = ("mla", "moe") if args.layer == "all" else (args.layer,)
    for layer in layers:
        build = build_mla if layer == "mla" else build_moe
        graph = build(cfg, ir_dtype(args.dtype))
        pm = PassManager(pipeline)
        final = pm.run(graph)
        print(f"# {layer} of {cfg.name}: the naive graph")
        print(graph)
        for rec in pm.records:
            print(f"# after {rec.name} ({rec.seconds * 1e3:.1f} ms)")
            print(rec.after)
        if not pm.records:
            print(f"# passes {args.passes!r}: no pass in the pipeline, the graph above runs as is\n")
        cost = graph_cost(final)
        print(f"# cost: flops = {cost.flops}")
        print(f"#       bytes = {cost.bytes}\n")
    return 0
