"""Time dsc's Triton kernel groups against PyTorch eager and the hardware roofline.

    python benchmarks/kernels.py [--out benchmarks/results] [--smoke]

On a CUDA card: MLA decode over the paged latent cache at DeepSeek-V3's shape (576/512,
bf16, batch 64, context 4096, page 64) with 16 query heads (a tensor-parallel shard:
memory-bound) and with 128 (compute-bound, about 2 * heads FLOPs per cached byte), and
the fused MoE (256 experts, top-8, 7168 -> 2048) at decode (M = 64) and prefill
(M = 4096) sizes in bf16 and FP8. The roofline comes from this card, measured in the
same run: device-to-device copy bandwidth (bytes read + written) and a bf16 8192^3
matmul. --smoke runs every benchmark at tiny sizes (on a CPU through Triton's
interpreter, where the times mean nothing) to keep this script working.

Writes <out>/<device>/kernels[-smoke].json: one record per (benchmark, backend, shape)
with median_ms, achieved GB/s and TFLOP/s, and roofline_fraction = (the time the
roofline allows) / (the measured time).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def median_ms(fn, device) -> float:
    if device.type == "cuda":
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=25, rep=200, return_mode="median"))
    fn()
    times = []
    for _ in range(3):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def roofline(device, smoke: bool) -> dict:
    import torch

    n = (1 << 20) if smoke else (1 << 30)
    src = torch.empty(n, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    copy_ms = median_ms(lambda: dst.copy_(src), device)
    size = 256 if smoke else 8192
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16 if device.type == "cuda" else torch.float32)
    mm_ms = median_ms(lambda: a @ a, device)
    return {"copy_GBps": 2 * n / copy_ms / 1e6, "matmul_TFLOPs": 2 * size ** 3 / mm_ms / 1e9,
            "matmul_dtype": str(a.dtype).replace("torch.", "")}


def record(bench, backend, shape, ms, nbytes, flops, roof) -> dict:
    gbps, tflops = nbytes / ms / 1e6, flops / ms / 1e9
    floor_ms = max(nbytes / (roof["copy_GBps"] * 1e6), flops / (roof["matmul_TFLOPs"] * 1e9))
    return {"benchmark": bench, "backend": backend, "shape": shape, "median_ms": round(ms, 5),
            "GBps": round(gbps, 2), "TFLOPs": round(tflops, 3), "roofline_fraction": round(floor_ms / ms, 4)}


def bench_mla_decode(device, smoke: bool, roof: dict) -> list[dict]:
    batch, ctx, page, dk, dv = (2, 100, 16, 72, 64) if smoke else (64, 4096, 64, 576, 512)
    out = []
    for heads in ((4, 16) if smoke else (16, 128)):
        for varlen in (False, True):
            out += _mla_decode_case(device, roof, batch, heads, ctx, page, dk, dv, varlen)
    return out


def _mla_decode_case(device, roof, batch, heads, ctx, page, dk, dv, varlen: bool = False) -> list[dict]:
    """Every row holding ctx tokens, or (varlen) rows of 1 to 2 * ctx - 1 tokens, ctx on
    average: the uneven batch the decode schedule balances."""
    import torch

    from dsc import ops

    g = torch.Generator(device=device).manual_seed(0)
    per_row = -(-(2 * ctx if varlen else ctx) // page)
    table = torch.randperm(batch * per_row, generator=g, device=device).view(batch, per_row).to(torch.int32)
    cache = torch.randn(batch * per_row, page, dk, generator=g, device=device).to(torch.bfloat16)
    q = torch.randn(batch, 1, heads, dk, generator=g, device=device).to(torch.bfloat16)
    if varlen:  # 1 .. 2 ctx - 1 tokens, shuffled
        lens = (torch.randperm(batch, generator=g, device=device) * (2 * ctx - 2) // max(1, batch - 1) + 1)
        lens = lens.to(torch.int32)
    else:
        lens = torch.full((batch,), ctx, dtype=torch.int32, device=device)
    tokens = int(lens.sum())
    scale = dk ** -0.5
    shape = {"batch": batch, "heads": heads, "context": ctx, "page": page, "dk": dk, "dv": dv, "dtype": "bf16",
             "lengths": "1..2ctx" if varlen else "ctx"}
    nbytes = tokens * dk * 2 + q.numel() * 2 + batch * heads * dv * 2
    flops = 2 * heads * tokens * (dk + dv)

    def eager():  # gather the pages, then attention in float32
        rows = cache[table.long()].reshape(batch, -1, dk)
        s = torch.einsum("bhd,bsd->bhs", q[:, 0].float(), rows.float()) * scale
        s = s.masked_fill(torch.arange(rows.shape[1], device=device)[None, None] >= lens[:, None, None], float("-inf"))
        return torch.einsum("bhs,bsd->bhd", s.softmax(-1), rows[..., :dv].float()).to(q.dtype)

    ms = median_ms(lambda: ops.mla_decode(q, cache, table, lens, scale, dv, validate=False), device)
    return [record("mla_decode", "dsc-triton", shape, ms, nbytes, flops, roof),
            record("mla_decode", "torch-eager", shape, median_ms(eager, device), nbytes, flops, roof)]


def bench_fused_moe(device, smoke: bool, roof: dict) -> list[dict]:
    import torch

    from dsc.ir.opdef import get_op

    experts, top_k, hidden, inter = (8, 2, 64, 32) if smoke else (256, 8, 7168, 2048)
    g = torch.Generator(device=device).manual_seed(0)
    w13 = (torch.randn(experts, 2 * inter, hidden, generator=g, device=device) / hidden ** 0.5).to(torch.bfloat16)
    w2 = (torch.randn(experts, hidden, inter, generator=g, device=device) / inter ** 0.5).to(torch.bfloat16)
    quant = {}
    for name, w in (("w13", w13), ("w2", w2)):  # per expert, to keep the float32 temporaries small
        s = torch.stack([get_op("fp8_scale").reference([w[e]], {"tile_n": 128, "tile_k": 128})
                         for e in range(experts)])
        q = torch.stack([get_op("fp8_quant").reference([w[e], s[e]], {"tile_n": 128, "tile_k": 128})
                         for e in range(experts)])
        quant[name] = (q, s)
    out = []
    for m in ((5, 40) if smoke else (64, 4096)):
        out += _fused_moe_case(device, roof, g, m, experts, top_k, hidden, inter, w13, w2, quant, smoke)
    return out


def _fused_moe_case(device, roof, g, m, experts, top_k, hidden, inter, w13, w2, quant, smoke) -> list[dict]:
    import torch

    from dsc.codegen.triton import fused_moe, router
    from dsc.ir.opdef import get_op

    spec = router.RouterSpec("sigmoid", "noaux_tc", top_k, 2 if smoke else 8, 1 if smoke else 4, True, 1e-20,
                             2.5, 0, 0, 0.0)
    x = torch.randn(m, hidden, generator=g, device=device).to(torch.bfloat16)
    ids, w = router.route(torch.randn(m, experts, generator=g, device=device), torch.zeros(experts, device=device),
                          spec)
    touched = int(ids.unique().numel())
    flops = 2 * m * top_k * 3 * hidden * inter
    act = device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)  # FP8 tensor cores
    out = []

    def fused(fmt):
        slots = fused_moe.align(ids, experts, 16)
        if fmt == "bf16":
            h = fused_moe.grouped_gemm(x, slots, ids, w13[:, :inter], w13[:, inter:], None, gather=True, block=16)
            y = fused_moe.grouped_gemm(h, slots, ids, w2, None, w, gather=False, block=16)
        else:
            (q13, s13), (q2, s2) = quant["w13"], quant["w2"]
            h = fused_moe.grouped_gemm(x, slots, ids, q13[:, :inter], q13[:, inter:], None, gather=True, block=16,
                                       scales=s13, up_offset=inter, act_quant=act)
            y = fused_moe.grouped_gemm(h, slots, ids, q2, None, w, gather=False, block=16, scales=s2, act_quant=act)
        return fused_moe.combine(y, slots, ids, x.dtype)

    for fmt in ("bf16", "fp8"):
        nbytes = touched * 3 * hidden * inter * (1 if fmt == "fp8" else 2) + 2 * m * hidden * 2
        shape = {"tokens": m, "experts": experts, "top_k": top_k, "hidden": hidden, "inter": inter, "weights": fmt,
                 "activations": "bf16", "fp8_activations": fmt == "fp8" and act}
        out.append(record("fused_moe", "dsc-triton", shape, median_ms(lambda f=fmt: fused(f), device), nbytes, flops,
                          roof))
    experts_op = get_op("moe_experts")  # PyTorch eager: a loop over the experts that got tokens
    eager_ms = median_ms(lambda: experts_op.reference([x, ids, w, w13[:, :inter], w13[:, inter:], w2], {}), device)
    shape = {"tokens": m, "experts": experts, "top_k": top_k, "hidden": hidden, "inter": inter, "weights": "bf16",
             "activations": "bf16"}
    out.append(record("fused_moe", "torch-eager", shape, eager_ms,
                      touched * 3 * hidden * inter * 2 + 2 * m * hidden * 2, flops, roof))
    return out


def main() -> int:
    import torch

    import dsc.codegen.triton  # noqa: F401  (before triton: the interpreter on a CPU)

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    p.add_argument("--smoke", action="store_true", help="tiny sizes, any device: checks the script, not the speed")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.smoke:
        sys.stderr.write("benchmarks/kernels.py: no CUDA device; the kernel benchmarks need one (--smoke runs the "
                         "script at tiny sizes on a CPU)\n")
        return 2
    sys.path.insert(0, HERE)
    from presets import device_name, slug

    name = device_name(str(device))
    roof = roofline(device, args.smoke)
    records = bench_mla_decode(device, args.smoke, roof) + bench_fused_moe(device, args.smoke, roof)
    report = {"device": name, "torch": torch.__version__, "date": datetime.date.today().isoformat(),
              "smoke": args.smoke, "roofline": roof, "records": [{"device": name, **r} for r in records]}
    folder = os.path.join(args.out, slug(name))
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "kernels-smoke.json" if args.smoke else "kernels.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    for r in records:
        print(f"{r['benchmark']:11s} {r['backend']:12s} {json.dumps(r['shape'])}: {r['median_ms']:.4f} ms "
              f"{r['GBps']:9.1f} GB/s {r['TFLOPs']:8.2f} TFLOP/s  roofline {r['roofline_fraction']:.1%}")
    print(f"copy {roof['copy_GBps']:.0f} GB/s, matmul {roof['matmul_TFLOPs']:.1f} TFLOP/s -> {path}")
    return 0 if all(math.isfinite(r["median_ms"]) for r in records) else 1


if __name__ == "__main__":
    raise SystemExit(main())
