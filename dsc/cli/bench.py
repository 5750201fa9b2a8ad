"""`dsc bench`: time a model's layers and their kernel groups against PyTorch and the
machine's roofline (measured in the same run), and write JSON records and PNG plots
under benchmarks/results/<device>/.

Per kernel group (a decode step at --context, a prefill of --prefill tokens, the MoE at
--tokens): the group as launched beside the same ops in PyTorch eager. Per layer: dsc's
module beside dsc.eager, torch.compile of it and Hugging Face's layer (--compare), the
MLA decode step at every --contexts length. Every record carries median ms, achieved
GB/s and TFLOP/s and the fraction of the roofline; layer records also their relative
error against dsc.eager in float32.
"""

from __future__ import annotations

import dataclasses
import json
import os

import torch

from dsc.bench import groups, layers, machine, plots, records, traffic
from dsc.bench.cards import CARDS, card_for
from dsc.cli import int_list, load_config, output_path, write_atomic
from dsc.cli.memory import (available_bytes, check_working_memory, human_bytes, memory_needed, mla_working_bytes,
                            moe_working_bytes)
from dsc.codegen.backend import CODEGEN_BACKENDS, default_backend, get_backend
from dsc.errors import InputError
from dsc.nn import MLA, MoE
from dsc.nn.graph_module import resolve_device, resolve_dtype
from dsc.runtime import tuned
from dsc.runtime.accuracy import relative_error
from dsc.runtime.device import detect, slug


def _setup(args):
    device = resolve_device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    backend = args.backend or default_backend(device.type)
    if backend in CODEGEN_BACKENDS:  # the reference interpreter runs anywhere
        chosen = get_backend(backend)
        if device.type not in chosen.runs_on:
            raise InputError(f"dsc bench --backend {backend} runs on {' or '.join(chosen.runs_on)} here, not "
                             f"{device.type}" + (f" ({chosen.run_elsewhere})" if chosen.run_elsewhere else ""))
        chosen.prepare()
    dtype = resolve_dtype(args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    compare = tuple(c for c in args.compare.split(",") if c) if args.compare != "none" else ()
    bad = [c for c in compare if c not in layers.COMPARES]
    if bad:
        raise InputError(f"--compare: unknown {', '.join(bad)}; choose from {', '.join(layers.COMPARES)} or none")
    if not args.no_plots:
        plots._pyplot()  # a missing matplotlib is one line before anything runs
    return device, backend, dtype, compare


def bench(args) -> int:
    with torch.no_grad():  # every implementation measured for inference
        return _bench(args)


def _bench(args) -> int:
    cfg = load_config(args.model)
    output_path(args.out, "out", "dir")
    device, backend, dtype, compare = _setup(args)
    contexts, batch = int_list(args.contexts, "contexts"), args.batch
    for name in ("batch", "prefill", "tokens", "repeat"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.context is not None and args.context < 1:
        raise InputError(f"--context must be at least 1, got {args.context}")
    if args.traffic:
        return _traffic(cfg, args, [CARDS[args.traffic]] if args.traffic != "all" else list(CARDS.values()))
    check_working_memory(_asks(cfg, args, contexts), device)
    info = detect(device)
    dt = str(dtype).removeprefix("torch.")
    print(f"dsc bench {cfg.name}: backend {backend}, passes {args.passes}, {dt}, {info.name}")
    if backend != "reference":
        print(f"  kernel configs: {tuned.source(device)}")
    roof = machine.measure(device, quick=args.quick)
    print(f"  roofline (measured now): copy {roof.copy_gbps:,.1f} GB/s, matmul {roof.matmul_tflops:,.3f} TFLOP/s "
          f"({roof.matmul_dtype}); ridge {roof.ridge:.1f} FLOP/byte")
    timer = machine.timer_for(device, args.repeat)
    recs: list[dict] = []
    skipped: dict = {}
    wanted = ("mla", "moe") if args.layer == "all" else (args.layer,)
    for layer in wanted:
        module = (MLA if layer == "mla" else MoE)(cfg, backend=backend, passes=args.passes, dtype=dtype,
                                                  device=device)
        need, have = memory_needed(module), available_bytes(device)
        if have is not None and need > have * 0.8:
            skipped[layer] = f"needs about {human_bytes(need)}, {human_bytes(have)} free"
            print(f"  {layer}: not run: {skipped[layer]}")
            continue
        weights = layers.layer_weights(module, args.seed)
        if layer == "mla":
            recs += _mla(cfg, module, weights, batch, contexts, args, compare, timer, roof, info.name, dt)
        else:
            recs += _moe(cfg, module, weights, args, compare, timer, roof, info.name, dt)
    card = card_for(info.name) if device.type == "cuda" and backend == "triton" else None
    if card is not None:  # the model's bounds beside the timings above
        _traffic(cfg, args, [card])
    label = f"bench-{slug(cfg.name)}-{backend}-{dt}" + ("" if args.passes == "default" else "-" + slug(args.passes))
    path = records.write(args.out, info.name, label, roof, recs, model=cfg.name, backend=backend,
                         passes=args.passes, skipped=skipped, quick=args.quick)
    print(f"wrote {path}")
    if not args.no_plots:
        folder = os.path.dirname(path)
        title = f"{cfg.name} on {info.name}: dsc-{backend} ({dt}) vs PyTorch"
        made = [plots.roofline(recs, roof, title, os.path.join(folder, f"{label}-roofline.png"))]
        if any(r["benchmark"] == "mla decode" for r in recs):
            made.append(plots.decode_latency(recs, f"{cfg.name} MLA decode step, batch {batch}, {dt}, {info.name}",
                                             os.path.join(folder, f"{label}-decode-latency.png")))
        made.append(plots.kv_cache_bytes(kv_rows(), os.path.join(folder, "kv-cache-bytes.png")))
        for p in made:
            print(f"wrote {p}")
    bad = [r for r in recs if r.get("rel_err") is not None and not r["rel_err"] <= r["tolerance"]]
    for r in bad:
        print(f"MISMATCH: {r['benchmark']} {r['backend']} rel err {r['rel_err']:.2e} > {r['tolerance']:g}")
    return 1 if bad else 0


def _traffic(cfg, args, cards) -> int:
    """The traffic model's table for cfg's Triton launches at the bench's shapes on each
    card, and its JSON under <out>/model/<card>/."""
    from dsc.bench.resources import layer_launches

    context = args.context or max(int_list(args.contexts, "contexts"))
    for card in cards:
        launched = layer_launches(cfg, card.arch, batch=args.batch, context=context, prefill=args.prefill,
                                  tokens=tuple(sorted({args.batch, args.tokens})))
        rows = traffic.model(launched, card)
        print(f"traffic model, {cfg.name} on {card.name} ({card.arch}; HBM {card.hbm_gbps:,.0f} GB/s, L2 "
              f"{card.l2_gbps:,.0f} GB/s assumed, bf16 {card.bf16_tflops:g} TFLOP/s): bounds, not measurements")
        for where in dict.fromkeys(r["where"] for r in rows):
            here = [r for r in rows if r["where"] == where]
            total = sum(r.get("bound_us", 0) for r in here)
            print(f"  {where}: {total:,.1f} us bound over {sum('bound_us' in r for r in here)} modelled kernels")
            for r in here:
                if "bound_us" not in r:
                    print(f"    {r['kernel'][:30]:30s} {r['programs']:>7} programs  (no model)")
                    continue
                print(f"    {r['kernel'][:30]:30s} {r['programs']:>7} programs {r['instruction']:8s} "
                      f"HBM {r['hbm_bytes'] / 1e6:10.1f} MB  L2 {r['l2_bytes'] / 1e6:10.1f} MB  smem "
                      f"{r['smem_bytes'] / 1e6:10.1f} MB  {r['flops'] / 1e9:9.2f} GFLOP  {r['bound_us']:10.1f} us "
                      f"{r['limiter']:12s} ({r['hbm_tbps_at_bound']:.2f} TB/s, {r['tflops_at_bound']:.0f} TFLOP/s)")
        path = os.path.join(args.out, "model", slug(card.name), f"traffic-{slug(cfg.name)}.json")
        write_atomic(path, json.dumps({"card": dataclasses.asdict(card), "model": cfg.name, "batch": args.batch,
                                       "context": context, "prefill": args.prefill, "kernels": rows}, indent=1))
        print(f"wrote {path}")
    return 0


def _asks(cfg, args, contexts: tuple[int, ...]) -> list[tuple[str, str, int]]:
    """What the flags ask of memory per layer (check_working_memory's list)."""
    asks = []
    if args.layer in ("mla", "all"):
        ctx = max(max(contexts), args.context or 0)
        asks += [(f"--batch {args.batch} --contexts {args.contexts}" + (f" --context {args.context}"
                                                                         if args.context else ""),
                  "the MLA decode step", mla_working_bytes(cfg, args.batch, 1, ctx + 1)),
                 (f"--prefill {args.prefill}", "the MLA prefill", mla_working_bytes(cfg, 1, args.prefill,
                                                                                    args.prefill))]
    if args.layer in ("moe", "all"):
        asks.append((f"--batch {args.batch} --tokens {args.tokens}", "the MoE call",
                     moe_working_bytes(cfg, max(args.batch, args.tokens))))
    return asks


def _tolerance(dtype: torch.dtype, module) -> float:
    from dsc.cli.run import tolerance

    return max(tolerance(module), 1e-4 if dtype == torch.float32 else 3e-2)


def _layer_records(case: layers.Case, timer, roof, device: str, dt: str, tol: float) -> list[dict]:
    out, base = [], None
    for impl in case.impls:
        got = impl.step()
        err = relative_error(got, case.truth)
        ms = timer(lambda i, impl=impl: impl.step(), 1)
        base = ms if impl.name == "torch-eager" else base
        rec = records.record(device, f"{case.layer} {case.phase}", impl.name, case.shape, dt, ms, case.nbytes,
                             case.flops, roof, rel_err=err, tolerance=tol if impl.name.startswith("dsc") else 5e-2,
                             note=impl.note)
        if impl.setup_s:
            rec["compile_s"] = round(impl.setup_s, 2)
        out.append(rec)
    for rec in out:
        if base:
            rec["speedup_vs_torch_eager"] = round(base / rec["median_ms"], 3)
    for name, why in case.skipped.items():
        print(f"  {case.layer} {case.phase}: {name} skipped: {why}")
    _print(out)
    return out


def _group_records(module, step, used_rows, where: dict, layer: str, phase: str, timer, roof, device, dt):
    if module.backend == "reference":  # the interpreter runs ops, not kernel groups: layer records only
        return []
    gt = groups.GroupTimer(timer, used_rows)
    with module.launch_hook(gt):
        step()
    out = []
    for t in gt.timings:
        shape = {**where, "group": t.index, "ops": t.ops, "out_shape": list(t.out_shape)}
        common = dict(group_kind=t.kind)
        dsc_rec = records.record(device, f"{layer} {phase} group", f"dsc-{module.backend}", shape, dt, t.ms,
                                 t.nbytes, t.flops, roof, speedup_vs_torch_eager=round(t.eager_ms / t.ms, 3),
                                 **common)
        out += [dsc_rec, records.record(device, f"{layer} {phase} group", "torch-eager", shape, dt, t.eager_ms,
                                        t.nbytes, t.flops, roof, **common)]
    _print([r for r in out if r["backend"].startswith("dsc")], groups=True)
    return out


def _mla(cfg, module, weights, batch, contexts, args, compare, timer, roof, device, dt) -> list[dict]:
    tol = _tolerance(module.dtype, module)
    out = []
    main_ctx = max(contexts) if args.context is None else args.context
    decode = layers.mla_case(cfg, module, weights, "decode", batch, main_ctx, 1, ())
    out += _group_records(module, decode.impls[0].step, batch * (main_ctx + 1),
                          {"batch": batch, "context": main_ctx, "tokens": 1}, "mla", "decode", timer, roof, device,
                          dt)
    prefill = layers.mla_case(cfg, module, weights, "prefill", 1, 0, args.prefill, ())
    out += _group_records(module, prefill.impls[0].step, args.prefill,
                          {"batch": 1, "context": 0, "tokens": args.prefill}, "mla", "prefill", timer, roof, device,
                          dt)
    for ctx in contexts:
        out += _layer_records(layers.mla_case(cfg, module, weights, "decode", batch, ctx, 1, compare), timer, roof,
                              device, dt, tol)
    out += _layer_records(layers.mla_case(cfg, module, weights, "prefill", 1, 0, args.prefill, compare), timer,
                          roof, device, dt, tol)
    return out


def _moe(cfg, module, weights, args, compare, timer, roof, device, dt) -> list[dict]:
    tol = _tolerance(module.dtype, module)
    out = []
    for tokens in sorted({args.batch, args.tokens}):
        case = layers.moe_case(cfg, module, weights, tokens, compare)
        out += _group_records(module, case.impls[0].step, None, {"tokens": tokens}, "moe", f"N={tokens}", timer,
                              roof, device, dt)
        out += _layer_records(case, timer, roof, device, dt, tol)
    return out


def _print(recs: list[dict], groups: bool = False) -> None:
    for r in recs:
        what = r["shape"]["ops"][:44] if groups else ", ".join(f"{k} {v}" for k, v in r["shape"].items()
                                                                  if k in ("batch", "context", "tokens"))
        extra = f" x{r['speedup_vs_torch_eager']:.2f} vs eager" if "speedup_vs_torch_eager" in r else ""
        err = f" err {r['rel_err']:.1e}" if r.get("rel_err") is not None else ""
        print(f"  {r['benchmark']:20s} {r['backend']:13s} {what:44s} {r['median_ms']:10.4f} ms "
              f"{r['achieved_gbps']:9.2f} GB/s {r['achieved_tflops'] * 1e3:9.2f} GFLOP/s "
              f"{100 * r['roofline_fraction']:6.2f}% roof{extra}{err}")


def kv_rows() -> list[dict]:
    """KV-cache bytes per token per layer for the DeepSeek presets: MHA in bf16, MLA's
    latent in bf16 and packed FP8 (the fp8_kv pass)."""
    from dsc.compiler import compile_layer
    from dsc.config import Config
    from dsc.ir.cost import cache_bytes_per_token

    out = []
    for name in ("deepseek-v2-lite", "deepseek-v2", "deepseek-v3"):
        cfg = Config.preset(name)
        c = compile_layer(cfg, "mla", passes=["absorb", "fp8_kv", "fold", "cse", "dce"], target="sm90", backend=None,
                          dtype="bf16", page_size=64)
        out.append({"model": name, "mla_bf16": cache_bytes_per_token(c.naive),
                    "mla_fp8": cache_bytes_per_token(c.graph),
                    "mha_bf16": cfg.num_attention_heads * (cfg.qk_head_dim + cfg.v_head_dim) * 2})
    return out
