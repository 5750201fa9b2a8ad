"""torch.compile over dsc's modules: the whole layer is one opaque custom op, so
fullgraph=True traces it without a graph break, and the compiled module gives the same
result for prefill and decode.

    python examples/torch_compile.py [--backend reference|triton|tvm]
"""

import argparse

import torch

import dsc
from dsc.nn import MLA, MoE, random_checkpoint

parser = argparse.ArgumentParser()
parser.add_argument("--backend", default="reference", choices=["reference", "triton", "tvm"])
args = parser.parse_args()

cfg = dsc.Config.preset("tiny-v3")
mla = MLA(cfg, backend=args.backend)
mla.load_state_dict(random_checkpoint(cfg, "mla", seed=0))
moe = MoE(cfg, backend=args.backend)
moe.load_state_dict(random_checkpoint(cfg, "moe", seed=1))
compiled_mla = torch.compile(mla, fullgraph=True)
compiled_moe = torch.compile(moe, fullgraph=True)

g = torch.Generator().manual_seed(2)
eager_cache, compiled_cache = mla.new_cache(2, 64), mla.new_cache(2, 64)
steps = [(torch.randn(2, 8, cfg.hidden_size, generator=g), torch.arange(8).expand(2, 8))]  # prefill
steps += [(torch.randn(2, 1, cfg.hidden_size, generator=g), torch.full((2, 1), 8 + i)) for i in range(3)]  # decode
for x, pos in steps:
    pos = pos.contiguous()
    a, b = mla(x, pos, eager_cache), compiled_mla(x, pos, compiled_cache)
    y, z = moe(a), compiled_moe(b)
    err = float((z - y).norm() / y.norm())
    assert err <= 1e-5, err
    print(f"{'prefill' if x.shape[1] > 1 else 'decode '} T={x.shape[1]}: compiled vs eager rel err {err:.1e}")
print(f"cache lengths {compiled_cache.lengths()} ({args.backend} backend)")
