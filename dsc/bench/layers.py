"""Whole layers side by side on the same weights and the same cached history:
dsc's module on its backend, dsc.eager (the independent plain-PyTorch layers, eager),
the same under torch.compile, and Hugging Face transformers' layer.

An MLA decode step reads a history of `context` tokens: random latents written
straight into every implementation's cache (dsc's paged pages, dsc.eager's per-row
tensors, HF's DynamicCache of the normalised c_kv and roped k_pe), so long contexts
cost no prefill. Each step is timed with the caches rolled back afterwards; each
output's relative error against dsc.eager in float32 is kept beside its time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from dsc.config import Config
from dsc.eager import EagerMLA, eager_moe
from dsc.errors import DscError
from dsc.ir.cost import cost_at
from dsc.nn import MLA, MoE
from dsc.nn.checkpoint import random_weights

COMPARES = ("eager", "compile", "hf")


@dataclass
class Impl:
    name: str  # "dsc-tvm", "torch-eager", "torch-compile", "hf"
    step: Callable[[], torch.Tensor]
    note: str = ""
    setup_s: float = 0.0  # compile time, for torch.compile


@dataclass
class Case:
    """One layer call at one shape, every implementation of it, and its useful work."""

    layer: str
    phase: str
    shape: dict
    flops: float
    nbytes: float
    impls: list[Impl] = field(default_factory=list)
    truth: torch.Tensor | None = None  # dsc.eager in float32
    skipped: dict = field(default_factory=dict)  # implementation -> why


def _compiled(fn: Callable, case: Case, name: str) -> Impl | None:
    start = time.perf_counter()
    try:
        compiled = torch.compile(fn, dynamic=False)
        compiled()
    except Exception as e:  # noqa: BLE001  (inductor may lack a compiler here: recorded, not fatal)
        case.skipped[name] = f"torch.compile failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
        return None
    return Impl(name, compiled, "dsc.eager under torch.compile (inductor)", time.perf_counter() - start)


def _latents(cfg: Config, batch: int, context: int, device, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A random normalised c_kv [B, S, rank] and roped k_pe [B, S, rope], float32."""
    g = torch.Generator(device=device).manual_seed(seed)
    c_kv = torch.randn(batch, context, cfg.kv_lora_rank, generator=g, device=device)
    k_pe = torch.randn(batch, context, cfg.qk_rope_head_dim, generator=g, device=device)
    return c_kv, k_pe


def _fill_dsc_cache(mla: MLA, cache, c_kv: torch.Tensor, k_pe: torch.Tensor) -> None:
    batch, context = c_kv.shape[:2]
    latent = torch.cat([c_kv, k_pe], dim=-1).to(mla.dtype)
    if cache.pages.dtype == torch.uint8:  # the fp8_kv layout: packed as the graph packs it
        from dsc.ir.opdef import get_op

        pack = next(n for n in mla.graph.nodes() if n.op == "kv_pack_fp8")
        latent = get_op("kv_pack_fp8").reference([latent], pack.attrs)
    page = cache.page_size
    for b in range(batch):
        pages = cache.block_table[b].long()
        rows = cache.pages[pages].view(-1, cache.row_width)
        rows[:context] = latent[b]
        cache.pages[pages] = rows.view(-1, page, cache.row_width)
    cache.seqlens.fill_(context)


def mla_case(cfg: Config, module: MLA, weights: dict, phase: str, batch: int, context: int, tokens: int,
             compare: tuple[str, ...], seed: int = 0) -> Case:
    """MLA: a decode step (tokens 1) or a prefill of `tokens` after `context` cached ones."""
    device, dtype = module.device, module.dtype
    graph_sizes = {"B": batch, "T": tokens, "P": -(-(context + tokens) // module.page_size)}
    flops, nbytes = cost_at(module.graph, graph_sizes)
    case = Case("mla", phase, {"batch": batch, "context": context, "tokens": tokens,
                               "heads": cfg.num_attention_heads, "kv_lora_rank": cfg.kv_lora_rank,
                               "rope": cfg.qk_rope_head_dim, "hidden": cfg.hidden_size}, flops, nbytes)
    g = torch.Generator(device=device).manual_seed(seed + 7)
    x = torch.randn(batch, tokens, cfg.hidden_size, generator=g, device=device).to(dtype)
    pos = (context + torch.arange(tokens, device=device)).repeat(batch, 1)
    c_kv, k_pe = _latents(cfg, batch, context, device, seed)

    cache = module.new_cache(batch, context + tokens)
    _fill_dsc_cache(module, cache, c_kv, k_pe)

    def dsc_step():
        out = module(x, pos, cache)
        cache.truncate([context] * batch)
        return out
    case.impls.append(Impl(f"dsc-{module.backend}", dsc_step, f"dsc.nn.MLA backend={module.backend}"))

    w32 = {k: v.float() for k, v in weights.items()}
    truth_rows = [(c_kv[b], k_pe[b]) for b in range(batch)]
    case.truth = EagerMLA(cfg, w32)(x.float(), pos, list(truth_rows))
    if "eager" in compare or "compile" in compare:
        eager = EagerMLA(cfg, {k: v.to(dtype) for k, v in weights.items()})
        rows = [(c_kv[b].to(dtype), k_pe[b].to(dtype)) for b in range(batch)]

        def eager_step():
            return eager(x, pos, list(rows))  # a fresh list: the step's appends are dropped
        if "eager" in compare:
            case.impls.append(Impl("torch-eager", eager_step, "dsc.eager.EagerMLA (plain PyTorch, per row)"))
        if "compile" in compare:
            impl = _compiled(eager_step, case, "torch-compile")
            if impl:
                case.impls.append(impl)
    if "hf" in compare:
        _hf_mla(cfg, case, weights, x, pos, c_kv, k_pe, context)
    return case


def _hf_mla(cfg, case, weights, x, pos, c_kv, k_pe, context) -> None:
    try:
        from transformers import DynamicCache

        from dsc.eager.hf import causal_mask, hf_modules
    except (ImportError, DscError) as e:
        case.skipped["hf"] = f"transformers is not installed ({e})"
        return
    _, attn, _, rotary = hf_modules(cfg)
    attn = attn.to(device=x.device, dtype=x.dtype)
    attn.load_state_dict({k: v.to(x.dtype) for k, v in weights.items()}, strict=True)
    if cfg.model_type == "deepseek_v2":
        # HF's V2 rotates adjacent pairs in place (complex multiply), so its cached k_pe is
        # interleaved where dsc's is de-interleaved (see Numerics): the same keys, re-laid
        half = k_pe.shape[-1] // 2
        k_pe = torch.stack([k_pe[..., :half], k_pe[..., half:]], dim=-1).flatten(-2)
    hf_cache = DynamicCache()
    hf_cache.update(c_kv[:, None].to(x.dtype), k_pe[:, None].to(x.dtype), 0)
    emb = rotary(x, pos)
    mask = causal_mask(x.shape[1], context).to(device=x.device, dtype=x.dtype)

    def hf_step():
        out = attn(hidden_states=x, position_embeddings=emb, attention_mask=mask, past_key_values=hf_cache)[0]
        hf_cache.crop(-x.shape[1])  # back to `context` tokens
        return out
    case.impls.append(Impl("hf", hf_step, f"transformers {type(attn).__name__}, DynamicCache (latent), eager"))


def moe_case(cfg: Config, module: MoE, weights: dict, tokens: int, compare: tuple[str, ...], seed: int = 0) -> Case:
    device, dtype = module.device, module.dtype
    flops, nbytes = cost_at(module.graph, {"N": tokens})
    case = Case("moe", "forward", {"tokens": tokens, "experts": cfg.n_routed_experts,
                                   "top_k": cfg.num_experts_per_tok, "shared": cfg.n_shared_experts,
                                   "hidden": cfg.hidden_size, "inter": cfg.moe_intermediate_size}, flops, nbytes)
    g = torch.Generator(device=device).manual_seed(seed + 11)
    x = torch.randn(tokens, cfg.hidden_size, generator=g, device=device).to(dtype)
    case.impls.append(Impl(f"dsc-{module.backend}", lambda: module(x), f"dsc.nn.MoE backend={module.backend}"))
    sd = _checkpoint_names(cfg, weights)
    case.truth = eager_moe(cfg, {k: v.float() for k, v in sd.items()}, x.float())
    typed = {k: (v if k.endswith("e_score_correction_bias") else v.to(dtype)) for k, v in sd.items()}
    if "eager" in compare:
        case.impls.append(Impl("torch-eager", lambda: eager_moe(cfg, typed, x), "dsc.eager.eager_moe"))
    if "compile" in compare:
        impl = _compiled(lambda: eager_moe(cfg, typed, x), case, "torch-compile")
        if impl:
            case.impls.append(impl)
    if "hf" in compare:
        try:
            from dsc.eager.hf import hf_modules, to_hf5_experts

            _, _, moe, _ = hf_modules(cfg)
        except (ImportError, DscError) as e:
            case.skipped["hf"] = f"transformers is not installed ({e})"
            return case
        moe = moe.to(device=device, dtype=dtype)
        moe.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in to_hf5_experts(cfg, sd).items()},
                            strict=True)
        case.impls.append(Impl("hf", lambda: moe(x[None])[0], f"transformers {type(moe).__name__}, eager experts"))
    return case


def _checkpoint_names(cfg: Config, weights: dict) -> dict:
    """Stacked experts.{gate,up,down}_proj [E, ...] as DeepSeek's per-expert names."""
    out = {k: v for k, v in weights.items() if not k.startswith("experts.")}
    for name in ("gate_proj", "up_proj", "down_proj"):
        for e in range(cfg.n_routed_experts):
            out[f"experts.{e}.{name}.weight"] = weights[f"experts.{name}"][e]
    return out


def layer_weights(module, seed: int) -> dict:
    w = random_weights(module, seed)
    module.load_state_dict(w)
    return w
