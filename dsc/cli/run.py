"""`dsc run`: build a layer, run it on random weights, compare with the eager reference.

The report gives the config, the relative error against dsc.eager (run in float32 as
the truth), the KV-cache bytes per token against the MHA layout of the same model,
the weight bytes, and the time per call. A layer whose weights would not fit in this
machine's free memory is built and verified but not executed, and the report says so.
"""

from __future__ import annotations

import json
import time

import torch

from dsc.cli import load_config, output_path, write_atomic
from dsc.cli.memory import (available_bytes, check_working_memory, human_bytes, memory_needed, mla_working_bytes,
                            moe_working_bytes)
from dsc.codegen.backend import CODEGEN_BACKENDS, get_backend
from dsc.config import Config
from dsc.eager import EagerMLA, eager_moe
from dsc.ir.cost import cache_bytes_per_token, cost_at, weight_bytes
from dsc.errors import InputError
from dsc.nn import MLA, MoE, random_checkpoint
from dsc.nn.graph_module import resolve_device, resolve_dtype
from dsc.passes.fp8 import error_bound
from dsc.runtime.accuracy import relative_error

TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 1e-2}
def describe(cfg: Config) -> str:
    q = f"q_lora_rank {cfg.q_lora_rank}" if cfg.q_lora_rank else "no q-LoRA"
    y = cfg.rope_scaling
    rope = f"rope {cfg.qk_rope_head_dim} ({'YaRN x' + format(y.factor, 'g') if y else 'plain'}, " \
           f"{'interleaved' if cfg.rope_interleave else 'half-split'})"
    route = f"{cfg.scoring_func}/{cfg.topk_method}"
    if cfg.topk_method != "greedy":
        route += f" {cfg.topk_group} of {cfg.n_group} groups"
    return (f"hidden {cfg.hidden_size}, {cfg.num_attention_heads} heads, {q}, kv_lora_rank {cfg.kv_lora_rank}, "
            f"nope {cfg.qk_nope_head_dim} + {rope}, v {cfg.v_head_dim}\n"
            f"  MoE: {cfg.n_routed_experts} routed experts (top-{cfg.num_experts_per_tok}, {route}, "
            f"norm_topk_prob {str(cfg.norm_topk_prob).lower()}, scale {cfg.routed_scaling_factor:g}), "
            f"{cfg.n_shared_experts} shared, intermediate {cfg.moe_intermediate_size}")


def _timed(fn, repeats: int = 3) -> tuple[object, float]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, best


REPORT_CONTEXT = 4096  # decode step at S = 4096, prefill of T = 4096


def pass_table(module, layer: str) -> list[dict]:
    """Per pass of the module's pipeline (and the naive graph first): weight bytes,
    KV-cache bytes per token, and the cost model's FLOPs and bytes for one decode step
    at S = 4096 and one prefill of T = 4096 (one row)."""
    records = module.pass_manager.records
    graphs = [("naive", records[0].before if records else module.graph)] + [(r.name, r.after) for r in records]
    page = module.page_size if layer == "mla" else 1
    decode = {"B": 1, "T": 1, "P": REPORT_CONTEXT // page, "N": 1}
    prefill = {"B": 1, "T": REPORT_CONTEXT, "P": REPORT_CONTEXT // page, "N": REPORT_CONTEXT}
    rows = []
    for name, g in graphs:
        df, db = cost_at(g, decode)
        pf, pb = cost_at(g, prefill)
        rows.append({"after": name, "weight_bytes": weight_bytes(g),
                     "kv_cache_bytes_per_token": cache_bytes_per_token(g),
                     "decode_flops": df, "decode_bytes": db, "prefill_flops": pf, "prefill_bytes": pb})
    return rows


def print_pass_table(rows: list[dict]) -> None:
    print(f"  {'after':14s} {'weights':>11s} {'KV B/token':>10s} {'decode S=4096':>22s} {'prefill T=4096':>22s}")
    for r in rows:
        kv = f"{r['kv_cache_bytes_per_token']:,}" if r["kv_cache_bytes_per_token"] else "-"
        print(f"  {r['after']:14s} {human_bytes(r['weight_bytes']):>11s} {kv:>10s} "
              f"{r['decode_flops'] / 1e9:9.3f} GF {human_bytes(r['decode_bytes']):>9s} "
              f"{r['prefill_flops'] / 1e12:9.3f} TF {human_bytes(r['prefill_bytes']):>9s}")


def _announce(rep: dict) -> bool:
    """Print the per-pass table and log; say whether the layer will run."""
    if len(rep["passes"]) > 1:
        print_pass_table(rep["passes"])
    for line in rep["pass_log"]:
        print(f"  pass log: {line}")
    if not rep["executed"]:
        print("  " + rep["not_executed_reason"])
    return rep["executed"]


def _layer_report(module, device: torch.device, layer: str, working: int, **facts) -> dict:
    """What every layer reports before running, and whether it (its weights and `working`
    bytes of activations) fits in memory to run."""
    rep = {"graph_ops": sum(n.op not in ("input", "param") for n in module.graph.nodes()), "verified": True,
           "weight_bytes": module.weight_bytes, "checkpoint_bytes": module.checkpoint_bytes, **facts,
           "passes": pass_table(module, layer), "pass_log": list(module.pass_manager.ctx.log)}
    need = memory_needed(module) + working
    have = available_bytes(device)
    rep["executed"] = have is None or need <= have * 0.8
    if not rep["executed"]:
        rep["not_executed_reason"] = (f"not executed: running and checking it needs about {human_bytes(need)}, "
                                      f"this machine has {human_bytes(have)} free")
    return rep


def tolerance(module) -> float:
    """The dtype's tolerance, or the FP8 error bound of the compiled graph if larger."""
    return max(TOLERANCE[module.dtype], error_bound(module.graph))


def _record(rep: dict, phase: str, shape: str, out: torch.Tensor, ref: torch.Tensor, seconds: float,
            tol: float, **facts) -> None:
    r = rep[phase] = {**facts, "rel_err": relative_error(out, ref), "seconds": seconds}
    r["ok"] = r["rel_err"] <= tol
    print(f"  {phase:8s} {shape:16s} rel err {r['rel_err']:.2e} vs eager (tol {tol:g}) "
          f"{'ok' if r['ok'] else 'MISMATCH'}   {seconds * 1e3:8.2f} ms")


def _mla_working(cfg: Config, args) -> int:
    """The prefill of --prompt-len tokens and the decode step after it, bounded together."""
    return mla_working_bytes(cfg, args.batch, args.prompt_len, args.prompt_len + 1)


def run_mla(cfg: Config, args, dtype, device) -> dict:
    mla = MLA(cfg, backend=args.backend, passes=args.passes, dtype=dtype, device=device, target=args.target)
    item = torch.empty((), dtype=dtype).element_size()
    mha = cfg.num_attention_heads * (cfg.qk_head_dim + cfg.v_head_dim)
    kv = cache_bytes_per_token(mla.graph)  # after the passes: fp8_kv packs it
    rep = _layer_report(mla, device, "mla", _mla_working(cfg, args), kv_cache_bytes_per_token=kv,
                        mha_kv_cache_bytes_per_token=mha * item,
                        kv_cache_ratio_vs_mha=kv / (mha * item))
    layout = "packed FP8 latent" if mla.graph.input("cache").dtype.name == "u8" else f"{cfg.latent_dim} latent values"
    print(f"MLA  graph: {rep['graph_ops']} ops, verified; weights {human_bytes(rep['weight_bytes'])}")
    print(f"  KV cache per token per layer: {kv:,} B ({layout}) vs MHA {mha * item:,} B ({mha} values): "
          f"{100 * rep['kv_cache_ratio_vs_mha']:.2f}%")
    if not _announce(rep):
        return rep

    B, T = args.batch, args.prompt_len
    sd = random_checkpoint(cfg, "mla", dtype, args.seed, device)
    mla.load_state_dict(sd)
    eager = EagerMLA(cfg, {k: v.float() for k, v in sd.items()})
    gen = torch.Generator(device="cpu").manual_seed(args.seed + 1)
    # the reference sees the same (dtype-rounded) input, so the error is the layer's own
    x = torch.randn(B, T + 1, cfg.hidden_size, generator=gen).to(device=device, dtype=dtype).float()
    pos = torch.arange(T + 1, device=device).repeat(B, 1)

    cache = mla.new_cache(B, T + 1)
    rows = eager.new_state(B)
    ref_prefill = eager(x[:, :T], pos[:, :T], rows)
    ref_decode = eager(x[:, T:], pos[:, T:], rows)

    def prefill():
        cache.reset()
        return mla(x[:, :T].to(dtype), pos[:, :T], cache)

    out_prefill, t_prefill = _timed(prefill)

    def decode():
        cache.truncate([T] * B)
        return mla(x[:, T:].to(dtype), pos[:, T:], cache)

    out_decode, t_decode = _timed(decode)
    _record(rep, "prefill", f"B={B} T={T}", out_prefill, ref_prefill, t_prefill, tolerance(mla), batch=B, tokens=T)
    _record(rep, "decode", f"B={B} T=1 after {T}", out_decode, ref_decode, t_decode, tolerance(mla), batch=B, context=T)
    return rep


def run_moe(cfg: Config, args, dtype, device) -> dict:
    moe = MoE(cfg, backend=args.backend, passes=args.passes, dtype=dtype, device=device, target=args.target)
    per_token = cfg.moe_intermediate_size * cfg.hidden_size * 3 * torch.empty((), dtype=dtype).element_size()
    rep = _layer_report(moe, device, "moe", moe_working_bytes(cfg, args.tokens),
                        active_weight_bytes_per_token=(cfg.num_experts_per_tok + cfg.n_shared_experts) * per_token)
    print(f"MoE  graph: {rep['graph_ops']} ops, verified; weights {human_bytes(rep['weight_bytes'])} "
          f"({human_bytes(rep['active_weight_bytes_per_token'])} active per token)")
    if not _announce(rep):
        return rep
    sd = random_checkpoint(cfg, "moe", dtype, args.seed, device)
    moe.load_state_dict(sd)
    gen = torch.Generator(device="cpu").manual_seed(args.seed + 2)
    x = torch.randn(args.tokens, cfg.hidden_size, generator=gen).to(device=device, dtype=dtype).float()
    ref = eager_moe(cfg, {k: v.float() for k, v in sd.items()}, x)
    out, seconds = _timed(lambda: moe(x.to(dtype)))
    _record(rep, "forward", f"N={args.tokens}", out, ref, seconds, tolerance(moe), tokens=args.tokens)
    return rep


def artifacts_in_use(args, device: torch.device):
    """--artifacts DIR: the tvm backend's kernels from `dsc compile --backend tvm`, run
    through NVRTC on this CUDA device (no TVM needed); otherwise nothing changes."""
    import contextlib

    if not args.artifacts:
        return contextlib.nullcontext()
    from dsc.codegen.tvm.build import use_artifacts
    from dsc.runtime.nvrtc import Artifacts

    if device.type != "cuda":
        raise InputError("--artifacts runs CUDA kernels: pass --device cuda")
    major, minor = torch.cuda.get_device_capability(device)
    return use_artifacts(Artifacts(args.artifacts, 10 * major + minor))


def run(args) -> int:
    cfg = load_config(args.model)
    if args.json:
        output_path(args.json, "json")
    dtype, device = resolve_dtype(args.dtype), resolve_device(args.device)
    if args.artifacts and args.backend != "tvm":
        args.backend = "tvm"  # the artifacts are the tvm backend's kernels
    artifacts = artifacts_in_use(args, device)  # checked before anything is printed
    if args.backend in CODEGEN_BACKENDS and not args.artifacts:
        get_backend(args.backend).prepare()  # a missing library is one line too, before the report starts
    for name in ("batch", "prompt_len", "tokens"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    layers = ("mla", "moe") if args.layer == "all" else (args.layer,)
    asks = {"mla": (f"--batch {args.batch} --prompt-len {args.prompt_len}", "the MLA prefill and decode",
                    _mla_working(cfg, args)),
            "moe": (f"--tokens {args.tokens}", "the MoE call", moe_working_bytes(cfg, args.tokens))}
    check_working_memory([asks[layer] for layer in layers], device)
    torch.manual_seed(args.seed)
    print(f"dsc run {cfg.name} ({cfg.model_type}): backend {args.backend}, passes {args.passes}, "
          f"{str(dtype).removeprefix('torch.')}, {device}")
    print("  " + describe(cfg))
    if args.backend != "reference":
        from dsc.runtime import tuned

        print(f"  kernel configs: {tuned.source(device)}")
    report = {"model": cfg.name, "config": cfg.to_hf(), "backend": args.backend, "passes": args.passes,
              "dtype": str(dtype), "device": str(device), "layers": {}}
    if cfg.rope_scaling is not None:
        report["config"]["rope_scaling"] = cfg.rope_scaling.to_dict()
    with artifacts:
        for layer in layers:
            report["layers"][layer] = (run_mla if layer == "mla" else run_moe)(cfg, args, dtype, device)
    if args.json:
        write_atomic(args.json, json.dumps(report, indent=2, default=str))
    bad = [f"{layer} {phase}" for layer, rep in report["layers"].items() for phase, r in rep.items()
           if isinstance(r, dict) and r.get("ok") is False]
    if bad:
        print(f"MISMATCH in {', '.join(bad)}")
        return 1
    return 0
