"""The static resource report: every Triton kernel dsc launches at DeepSeek-V3's shapes,
compiled for sm_90 or sm_80 as the JIT specializes each launch on that arch's reference
card (launch_jobs), with what it compiled to (registers, spills, shared memory, warps,
stages, the tensor-core instruction) and where it misses its design
(dsc.codegen.triton.resources.problems). `benchmarks/resource_report.py` writes it as JSON;
`tests/codegen/triton/test_resource_gate.py` fails on its problems.
"""

from __future__ import annotations

from dsc.compiler import compile_layer
from dsc.config import Config
from dsc.executor.launches import launch_jobs

# the FP8 pipeline: FP8 x FP8 dots on sm_90, weight-only FP8 on sm_80, the FP8 latent cache
FP8 = ["absorb", "fuse_experts", "fp8", "fp8_kv", "fold", "cse", "dce"]
PAGE = 64


def mla_decode_env(batch: int, context: int) -> dict:
    pages = -(-context // PAGE)
    return {"B": batch, "T": 1, "NB": batch * pages, "P": pages}


def v3_launches(arch: str = "sm90", *, fp8: bool = True) -> list[tuple[str, list[tuple]]]:
    """(label, launch_jobs) of V3 in bf16 on arch: MLA decode (batch 64, context 4096,
    page 64) with 128 heads and with 16 (a tensor-parallel rank's), MLA prefill of 4096
    tokens, MoE at 64 and 4096 tokens; with fp8 the same through the FP8 pipeline."""
    v3 = Config.preset("deepseek-v3")
    out = []
    pipelines = [("bf16", "default")] + ([("fp8", FP8)] if fp8 else [])
    for name, passes in pipelines:
        for heads in (128, 16):
            cfg = v3.replace(num_attention_heads=heads)
            graph = compile_layer(cfg, "mla", passes=passes, target=arch, backend=None, dtype="bf16",
                                  page_size=PAGE).graph
            decode = launch_jobs(graph, mla_decode_env(64, 4096), arch)
            out.append((f"{name} mla decode H={heads} B=64 ctx=4096", decode))
            if heads == 128:
                prefill = {"B": 1, "T": 4096, "NB": 4096 // PAGE, "P": 4096 // PAGE}
                out.append((f"{name} mla prefill T=4096", launch_jobs(graph, prefill, arch)))
        graph = compile_layer(v3, "moe", passes=passes, target=arch, backend=None, dtype="bf16").graph
        for tokens in (64, 4096):
            out.append((f"{name} moe N={tokens}", launch_jobs(graph, {"N": tokens}, arch)))
    return out


def report(arch: str = "sm90", *, fp8: bool = True) -> dict:
    """{"arch", "triton", "kernels": records, "problems": lines} for v3_launches(arch)."""
    import triton

    from dsc.codegen.triton import resources

    found = resources.records(v3_launches(arch, fp8=fp8), int(arch.removeprefix("sm")))
    return {"arch": arch, "triton": triton.__version__, "kernels": found,
            "problems": [line for record in found for line in resources.problems(record)]}
