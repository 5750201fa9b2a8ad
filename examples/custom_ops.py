"""dsc's kernels as torch custom ops (torch.ops.dsc.*), called the way a serving
framework with its own paged cache and scheduler calls them, on either backend's
kernels. Each result is checked against a few lines of plain PyTorch.

    python examples/custom_ops.py [--backend triton|tvm]
"""

import argparse
import math

import torch

import dsc.ops  # noqa: F401  (registers torch.ops.dsc.*; on a CPU, Triton's interpreter runs the kernels)


def rel(a, b, tol=1e-4):
    err = float((a.float() - b.float()).norm() / b.float().norm())
    assert err <= tol, f"relative error {err:.1e} above {tol:g}"
    return err


parser = argparse.ArgumentParser()
parser.add_argument("--backend", default="triton", choices=["triton", "tvm"])
backend = parser.parse_args().backend
g = torch.Generator().manual_seed(0)

# MLA decode over a paged latent cache (FlashMLA's contract): rows [c_kv ; k_pe], 64-token pages
B, H, rank, rope, page = 2, 16, 64, 16, 64
lens = torch.tensor([100, 37], dtype=torch.int32)  # tokens each row holds, the new one included
table = torch.arange(4, dtype=torch.int32).view(B, 2)  # row b owns pages table[b]
cache = torch.randn(4, page, rank + rope, generator=g)
q = torch.randn(B, 1, H, rank + rope, generator=g)  # absorbed queries
scale = 1 / math.sqrt(128 + rope)
out, lse = torch.ops.dsc.mla_decode(q, cache, table, lens, scale, rank, backend=backend)
for b in range(B):
    rows = cache[table[b].long()].reshape(-1, rank + rope)[: lens[b]]
    p = (q[b, 0] @ rows.T * scale).softmax(-1)
    print(f"mla_decode row {b}: rel err {rel(out[b, 0], p @ rows[:, :rank]):.1e}")

# MoE: DeepSeek-V3's router (sigmoid, noaux_tc, 4 groups) then the fused experts
N, hidden, inter, E, K = 6, 32, 16, 16, 4
x = torch.randn(N, hidden, generator=g)
gate = torch.randn(E, hidden, generator=g) / math.sqrt(hidden)
bias = torch.randn(E, generator=g) * 0.1
ids, w = torch.ops.dsc.moe_route(x @ gate.T, bias, K, n_group=4, topk_group=2, topk_method="noaux_tc",
                                 scoring_func="sigmoid", norm_topk_prob=True, routed_scaling_factor=2.5,
                                 backend=backend)
w13 = torch.randn(E, 2 * inter, hidden, generator=g) / math.sqrt(hidden)  # gate rows, then up rows
w2 = torch.randn(E, hidden, inter, generator=g) / math.sqrt(inter)
y = torch.ops.dsc.fused_moe(x, w13, w2, w, ids, backend=backend)
ref = torch.zeros_like(x)
for t in range(N):
    for k in range(K):
        e = int(ids[t, k])
        h = torch.nn.functional.silu(x[t] @ w13[e, :inter].T) * (x[t] @ w13[e, inter:].T)
        ref[t] += w[t, k] * (h @ w2[e].T)
print(f"moe_route + fused_moe: rel err {rel(y, ref):.1e}")

# FP8: 128x128 block-scaled weights, activations quantized per token per 128 channels in the GEMM
weight = torch.randn(256, 384, generator=g) / math.sqrt(384)
wq, ws = torch.ops.dsc.fp8_quant(weight, 128, 128)
a = torch.randn(4, 384, generator=g)
print(f"fp8_gemm vs the float weight: rel err {rel(torch.ops.dsc.fp8_gemm(a, wq, ws, backend=backend), a @ weight.T, 6e-2):.1e} "
      f"(FP8's own error, about 3e-2)")
