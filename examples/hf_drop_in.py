"""dsc as a drop-in for a Hugging Face DeepSeek model: patch() swaps each layer's
attention and MoE for dsc's, carrying the weights over, and generate() runs as before.

    python examples/hf_drop_in.py [--backend reference|triton|tvm] [--model PATH]

Without --model it builds a tiny random DeepseekV3ForCausalLM (two layers: one dense,
one MoE); with it, any local DeepSeek-V2/V3 checkpoint transformers can load.
Needs transformers: pip install -e ".[hf]".
"""

import argparse
import copy

import torch
import transformers

import dsc
from dsc.integrations.hf import patch
from dsc.eager.hf import hf_causal_lm

parser = argparse.ArgumentParser()
parser.add_argument("--backend", default="reference", choices=["reference", "triton", "tvm"])
parser.add_argument("--model", help="a local DeepSeek-V2/V3 checkpoint directory")
args = parser.parse_args()

if args.model:
    model = transformers.AutoModelForCausalLM.from_pretrained(args.model, torch_dtype="auto").eval()
else:
    model = hf_causal_lm(dsc.Config.preset("tiny-v3"))
reference = copy.deepcopy(model)
patch(model, backend=args.backend)

ids = torch.randint(0, model.config.vocab_size, (2, 8), generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    want, got = reference(ids).logits, model(ids).logits
    err = float((got - want).norm() / want.norm())
    print(f"logits: rel err {err:.1e}")
    assert err <= (1e-5 if got.dtype == torch.float32 else 2e-2), err
    want = reference.generate(ids, max_new_tokens=8, do_sample=False)
    got = model.generate(ids, max_new_tokens=8, do_sample=False)
print(f"greedy generation identical: {torch.equal(got, want)}")
assert torch.equal(got, want)
print(got[:, ids.shape[1]:].tolist())
