"""A transformers DeepSeek model patched by dsc against the unpatched model, end to end.

    python benchmarks/hf_generate.py [--out benchmarks/results] [--context 512] [--steps 8] [--batch 2] [--smoke]

A DeepseekV2ForCausalLM with DeepSeek-V2-Lite's layer dims (hidden 2048, 16 heads, MLA
rank 512, 64 experts top-6 + 2 shared) cut to two layers (one dense, one MoE) and a
1024-token vocabulary, random weights, float32 on this machine's CPU. Side by side in
one process: the unpatched model, and copies patched by dsc.integrations.hf.patch with
backend="tvm" and backend="reference". For each: the prefill of `context` tokens, then
`steps` single-token decode steps through the DynamicCache (median step), each feeding
the unpatched model's greedy token so all three see the same inputs. Also reported: the
logits' relative error against the unpatched model at every step, and whether the
greedy tokens agree.

Writes <out>/<device>/hf-generate[-smoke].json. --smoke shrinks everything so CI keeps
the script working; its times mean nothing.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def run(model, ids, next_tokens) -> tuple[float, list[float], list]:
    """(prefill ms, decode step ms, logits of every call) through one DynamicCache."""
    import torch
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        t = time.perf_counter()
        logits = [model(ids, past_key_values=cache).logits[:, -1]]
        prefill = (time.perf_counter() - t) * 1e3
        steps = []
        for tok in next_tokens:
            t = time.perf_counter()
            logits.append(model(tok, past_key_values=cache).logits[:, -1])
            steps.append((time.perf_counter() - t) * 1e3)
    return prefill, steps, logits


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args()

    sys.path.insert(0, HERE)
    import torch

    import dsc
    from dsc.integrations.hf import patch
    from dsc.eager.hf import hf_causal_lm
    from presets import device_name, slug

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    if args.smoke:
        cfg, context, steps, batch = dsc.Config.preset("tiny-v2-lite"), 6, 2, 2
    else:
        cfg, context, steps, batch = dsc.Config.preset("deepseek-v2-lite"), args.context, args.steps, args.batch
    reference = hf_causal_lm(cfg, vocab_size=1024, std=0.02 if not args.smoke else 0.2)
    ids = torch.randint(0, 1024, (batch, context), generator=torch.Generator().manual_seed(0))

    # the unpatched model's greedy tokens are every model's decode inputs
    with torch.no_grad():
        greedy = reference.generate(ids, max_new_tokens=steps, do_sample=False)[:, context:]
    tokens = list(greedy.split(1, dim=1))

    results = {}
    models = {"hf-eager": reference}
    import importlib.util

    for backend in ("tvm", "reference") if importlib.util.find_spec("tvm") else ("reference",):
        models[f"dsc-{backend}"] = patch(copy.deepcopy(reference), backend=backend)
    base = None
    for name, model in models.items():
        run(model, ids, tokens[:1])  # warm at the same shapes: kernels built, workspaces planned
        prefill, step_ms, logits = run(model, ids, tokens)
        if base is None:
            base = logits
        errs = [float((a - b).norm() / b.norm()) for a, b in zip(logits, base)]
        results[name] = {"prefill_ms": round(prefill, 3), "decode_step_ms": round(statistics.median(step_ms), 3),
                         "max_logits_rel_err": max(errs),
                         "greedy_agrees": all(torch.equal(a.argmax(-1), b.argmax(-1)) for a, b in zip(logits, base))}
        print(f"{name:14s} prefill {prefill:9.1f} ms  decode step {results[name]['decode_step_ms']:8.1f} ms  "
              f"max rel err {max(errs):.1e}")

    device = device_name("cpu")
    report = {"device": device, "benchmark": "hf_generate", "threads": torch.get_num_threads(),
              "torch": torch.__version__, "date": datetime.date.today().isoformat(), "config": cfg.name,
              "layers": 2, "dtype": "float32", "batch": batch, "context": context, "steps": steps,
              "results": results}
    folder = os.path.join(args.out, slug(device))
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "hf-generate-smoke.json" if args.smoke else "hf-generate.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
