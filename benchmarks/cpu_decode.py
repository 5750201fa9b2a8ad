"""The CPU path: dsc's tvm backend against Hugging Face and the reference backend.

    python benchmarks/cpu_decode.py [--out benchmarks/results] [--context 1024] [--batch 2] [--smoke]

One decode step at DeepSeek-V2-Lite's attention dims (16 heads, kv_lora_rank 512, rope
64, nope 128, v 128; hidden 2048, no q-LoRA), float32, after a prefill of `context`
tokens: dsc's MLA with backend="tvm" (absorbed decode over the paged latent cache),
backend="reference" (the same graph through the interpreter's torch ops), and HF
transformers' DeepseekV2Attention with its DynamicCache. All three run side by side in
one process on the same weights and inputs; each decode step is timed after the cache
is rolled back to `context` tokens, median of --repeat steps. Also reported: every
implementation's cache bytes, and the decode output's relative error against HF's.

Then the DeepSeek-V2-Lite MoE layer (64 experts, top-6, 2 shared, 2048 -> 1408) with
backend="tvm" against backend="reference" at decode (batch tokens) and a 64-token
prefill.

Writes <out>/<device>/cpu-decode[-smoke].json. --smoke shrinks everything to tiny
sizes so CI keeps this script working; its times mean nothing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def median_ms(fn, repeat: int) -> float:
    fn()  # warm: compiles, allocates the workspace of this shape
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def mla_decode(cfg, batch: int, context: int, repeat: int) -> dict:
    import torch
    from transformers import DynamicCache

    from dsc.nn import MLA, random_checkpoint
    from dsc.eager.hf import causal_mask, hf_modules
    from dsc.runtime.accuracy import relative_error

    sd = random_checkpoint(cfg, "mla", seed=0)
    _, attn, _, rotary = hf_modules(cfg)
    attn.load_state_dict(sd, strict=True)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, context, cfg.hidden_size, generator=gen)
    pos = torch.arange(context).repeat(batch, 1)
    step = torch.randn(batch, 1, cfg.hidden_size, generator=gen)
    step_pos = torch.full((batch, 1), context)
    record: dict = {"batch": batch, "context": context, "dtype": "float32", "heads": cfg.num_attention_heads,
                    "kv_lora_rank": cfg.kv_lora_rank, "qk_rope_head_dim": cfg.qk_rope_head_dim,
                    "qk_nope_head_dim": cfg.qk_nope_head_dim, "v_head_dim": cfg.v_head_dim}

    with torch.inference_mode():
        hf_cache = DynamicCache()
        attn(hidden_states=x, position_embeddings=rotary(x, pos), attention_mask=causal_mask(context, 0),
             past_key_values=hf_cache)
        emb, mask = rotary(step, step_pos), causal_mask(1, context)

        def hf_step():
            out = attn(hidden_states=step, position_embeddings=emb, attention_mask=mask, past_key_values=hf_cache)[0]
            hf_cache.crop(-1)  # back to `context` tokens
            return out
        want = hf_step()
        record["hf"] = {"ms": median_ms(hf_step, repeat),
                        "cache_bytes": sum(t.numel() * t.element_size() for layer in hf_cache.layers
                                           for t in (layer.keys, layer.values)),
                        "what": "transformers DeepseekV2Attention, DynamicCache, eager attention"}
        for backend in ("tvm", "reference"):
            mla = MLA(cfg, backend=backend)
            mla.load_state_dict(sd)
            cache = mla.new_cache(batch, context + 1)
            mla(x, pos, cache)

            def dsc_step(mla=mla, cache=cache):
                out = mla(step, step_pos, cache)
                cache.truncate([context] * batch)
                return out
            got = dsc_step()
            record[backend] = {"ms": median_ms(dsc_step, repeat), "rel_err_vs_hf": relative_error(got, want),
                               "cache_bytes": context * batch * cache.pages.shape[2] * cache.pages.element_size(),
                               "cache_allocated_bytes": cache.pages.numel() * cache.pages.element_size()}
    record["speedup_tvm_vs_hf"] = record["hf"]["ms"] / record["tvm"]["ms"]
    record["speedup_tvm_vs_reference"] = record["reference"]["ms"] / record["tvm"]["ms"]
    return record


def moe(cfg, tokens: int, repeat: int) -> dict:
    import torch

    from dsc.nn import MoE, random_checkpoint
    from dsc.runtime.accuracy import relative_error

    sd = random_checkpoint(cfg, "moe", seed=0)
    x = torch.randn(tokens, cfg.hidden_size, generator=torch.Generator().manual_seed(1))
    record: dict = {"tokens": tokens, "dtype": "float32", "experts": cfg.n_routed_experts,
                    "top_k": cfg.num_experts_per_tok, "shared": cfg.n_shared_experts,
                    "intermediate": cfg.moe_intermediate_size}
    outs = {}
    with torch.inference_mode():
        for backend in ("tvm", "reference"):
            layer = MoE(cfg, backend=backend)
            layer.load_state_dict(sd)
            outs[backend] = layer(x)
            record[backend] = {"ms": median_ms(lambda layer=layer: layer(x), repeat)}
    record["rel_err_tvm_vs_reference"] = relative_error(outs["tvm"], outs["reference"])
    record["speedup_tvm_vs_reference"] = record["reference"]["ms"] / record["tvm"]["ms"]
    return record


def main() -> int:
    import torch

    from dsc.config import Config

    sys.path.insert(0, HERE)
    from presets import device_name, slug

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    p.add_argument("--context", type=int, default=1024)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--smoke", action="store_true", help="tiny sizes: keeps the script working, times mean nothing")
    args = p.parse_args()

    cfg = Config.preset("tiny-v2-lite" if args.smoke else "deepseek-v2-lite")
    context, repeat = (16, 1) if args.smoke else (args.context, args.repeat)
    device = device_name("cpu")
    result = {"device": device, "threads": torch.get_num_threads(), "torch": torch.__version__,
              "date": datetime.date.today().isoformat(), "preset": cfg.name, "smoke": args.smoke,
              "mla_decode": mla_decode(cfg, args.batch, context, repeat),
              "moe": [moe(cfg, tokens, repeat) for tokens in (args.batch, 4 if args.smoke else 64)]}
    folder = os.path.join(args.out, slug(device))
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "cpu-decode" + ("-smoke" if args.smoke else "") + ".json")
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    d = result["mla_decode"]
    print(f"MLA decode (batch {args.batch}, context {context}): tvm {d['tvm']['ms']:.2f} ms, reference "
          f"{d['reference']['ms']:.2f} ms, HF {d['hf']['ms']:.2f} ms ({d['speedup_tvm_vs_hf']:.1f}x); cache bytes "
          f"dsc {d['tvm']['cache_bytes']}, HF {d['hf']['cache_bytes']}")
    for r in result["moe"]:
        print(f"MoE {r['tokens']} tokens: tvm {r['tvm']['ms']:.2f} ms, reference {r['reference']['ms']:.2f} ms")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
