"""The static resource report: every Triton kernel dsc launches at DeepSeek-V3's shapes,
compiled for sm_90 or sm_80 as the JIT specializes each launch on that arch's reference
card (launch_jobs), with what it compiled to (registers, spills, shared memory, warps,
stages, the tensor-core instruction) and where it misses its design
(dsc.codegen.triton.resources.problems). `benchmarks/resource_report.py` writes it as JSON;
`tests/codegen/triton/test_resource_gate.py` fails on its problems.
"""

from __future__ import annotations

from dsc.codegen.triton import resources
from dsc.codegen.triton.build import compile_all
from dsc.codegen.triton.resources import USAGE_FIELDS, expected_tensor_core
from dsc.compiler import compile_layer
from dsc.config import Config
from dsc.executor.launches import launch_jobs

# the FP8 pipeline: FP8 x FP8 dots on sm_90, weight-only FP8 on sm_80, the FP8 latent cache
FP8 = ["absorb", "fuse_experts", "fp8", "fp8_kv", "fold", "cse", "dce"]
PAGE = 64


def mla_decode_env(batch: int, context: int) -> dict:
    pages = -(-context // PAGE)
    return {"B": batch, "T": 1, "NB": batch * pages, "P": pages}


def layer_launches(cfg: Config, arch: str, *, batch: int, context: int, prefill: int, tokens: tuple[int, ...],
                   pipelines: tuple[str, ...] = ("bf16", "fp8"), heads: tuple[int, ...] | None = None
                   ) -> list[tuple[str, list[tuple]]]:
    """(label, launch_jobs) of cfg's layers in bf16 on arch: the MLA decode step (batch rows
    over context cached tokens, page 64) for each head count in heads (cfg's own by
    default), the MLA prefill of `prefill` tokens (with cfg's heads), the MoE at each
    token count; for each pipeline ("bf16": the default passes, "fp8": the FP8 pipeline)."""
    out = []
    heads = heads or (cfg.num_attention_heads,)
    for name in pipelines:
        passes = FP8 if name == "fp8" else "default"
        for h in heads:
            graph = compile_layer(cfg.replace(num_attention_heads=h), "mla", passes=passes, target=arch,
                                  backend=None, dtype="bf16", page_size=PAGE).graph
            decode = launch_jobs(graph, mla_decode_env(batch, context), arch)
            out.append((f"{name} mla decode H={h} B={batch} ctx={context}", decode))
            if h == heads[0] and prefill:
                pages = -(-prefill // PAGE)
                out.append((f"{name} mla prefill T={prefill}",
                            launch_jobs(graph, {"B": 1, "T": prefill, "NB": pages, "P": pages}, arch)))
        graph = compile_layer(cfg, "moe", passes=passes, target=arch, backend=None, dtype="bf16").graph
        for n in tokens:
            out.append((f"{name} moe N={n}", launch_jobs(graph, {"N": n}, arch)))
    return out


def v3_launches(arch: str = "sm90", *, fp8: bool = True) -> list[tuple[str, list[tuple]]]:
    """layer_launches of V3 on arch: MLA decode (batch 64, context 4096, page 64) with 128
    heads and with 16 (a tensor-parallel rank's), MLA prefill of 4096 tokens, MoE at 64 and
    4096 tokens; with fp8 the same through the FP8 pipeline."""
    return layer_launches(Config.preset("deepseek-v3"), arch, batch=64, context=4096, prefill=4096,
                          tokens=(64, 4096), pipelines=("bf16", "fp8") if fp8 else ("bf16",), heads=(128, 16))


_TILES = ("GROUP_M", "SPLIT_K", "CHUNK", "SUB")  # tile-like constexprs not named BLOCK*


def _variant(constants: dict, num_warps: int, num_stages: int) -> str:
    tiles = " ".join(f"{k}={v}" for k, v in constants.items() if k.startswith("BLOCK") or k in _TILES)
    return f"{tiles} warps={num_warps} stages={num_stages}".strip()


def records(labelled: list[tuple[str, list[tuple]]], arch: int) -> list[dict]:
    """One record per distinct compiled kernel of the labelled launch_jobs lists (label:
    where they launch, e.g. "mla decode B=64"): what it compiled to for arch (compile_all
    with ptxas's figures) and what its design expects (expected_tensor_core); the gate's
    `problems` reads them."""
    jobs = [(label, job) for label, found in labelled for job in found]
    compiled = compile_all([job for _, job in jobs], arch, resources=True)
    out: dict[tuple, dict] = {}
    for (label, (spec, *_)), res in zip(jobs, compiled):
        key = (spec.name, repr(sorted(res["constants"].items())), res["num_warps"], res["num_stages"])
        if key in out:
            if label not in out[key]["launched_by"]:
                out[key]["launched_by"].append(label)
            continue
        out[key] = {"name": spec.name, "arch": arch,
                    "variant": _variant(res["constants"], res["num_warps"], res["num_stages"]),
                    "num_warps": res["num_warps"], "num_stages": res["num_stages"], "shared_bytes": res["shared"],
                    **{k: res[k] for k in USAGE_FIELDS}, "tensor_core": res["tensor_core"],
                    "mma_operands": res["mma_operands"],
                    "expected_tensor_core": expected_tensor_core(spec.dot_rows, res["constants"], res["num_warps"],
                                                                 arch),
                    "constants": res["constants"], "launched_by": [label]}
    return list(out.values())


def report(arch: str = "sm90", *, fp8: bool = True) -> dict:
    """{"arch", "triton", "kernels": records, "problems": lines} for v3_launches(arch)."""
    import triton

    found = records(v3_launches(arch, fp8=fp8), int(arch.removeprefix("sm")))
    return {"arch": arch, "triton": triton.__version__, "kernels": found,
            "problems": [line for record in found for line in resources.problems(record)]}
