"""The naive MLA graph, as DeepSeek's reference code computes it.

    q      = q_b_proj(rms_norm(q_a_proj(x)))            (or q_proj(x) without q-LoRA)
    c_kv, k_pe = split(kv_a_proj_with_mqa(x));  c_kv = rms_norm(c_kv)
    q_pe, k_pe = rope(q_pe), rope(k_pe)
    cache  <- [c_kv | k_pe] of the new tokens             (the paged latent cache)
    k_nope, v = split(kv_b_proj(c_kv of every cached token))   per head
    out    = o_proj(attention([q_nope|q_pe], [k_nope|k_pe], v))

Only the latent (kv_lora_rank + qk_rope_head_dim values per token) is cached; the
naive form re-expands it through kv_b_proj on every call. The `absorb` pass rewrites
this into attention over the latent itself.

Inputs: x [B, T, hidden], positions [B, T] int64, cache [NB, PAGE_SIZE, latent] (NB
pages), block_table [B, P] int32 (each row's pages), cache_seqlens [B] int32 (tokens
already cached per row). Outputs: out [B, T, hidden] and the updated cache.
"""

from __future__ import annotations

from dsc.ir.build import inp, op, param, slice_last
from dsc.config import Config
from dsc.ir.graph import Graph
from dsc.ir.types import dtype as as_dtype, i32, i64, sym

PAGE_SIZE = 64  # tokens per cache page, FlashMLA's choice


def rope_attrs(cfg: Config) -> dict:
    y = cfg.rope_scaling
    attrs = dict(theta=float(cfg.rope_theta), interleave=cfg.rope_interleave)
    if y is not None:
        attrs.update(factor=float(y.factor), original_max=y.original_max_position_embeddings,
                     beta_fast=float(y.beta_fast), beta_slow=float(y.beta_slow), mscale=float(y.mscale),
                     mscale_all_dim=float(y.mscale_all_dim))
    return attrs


def build_mla(cfg: Config, dtype="f32", page_size: int = PAGE_SIZE) -> Graph:
    dt = as_dtype(dtype)
    B, T, P, NB = sym("B"), sym("T"), sym("P"), sym("NB")
    H, hidden = cfg.num_attention_heads, cfg.hidden_size
    nope, rope_dim, vdim, rank = cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim, cfg.kv_lora_rank
    qk = cfg.qk_head_dim

    x = inp("x", [B, T, hidden], dt)
    positions = inp("positions", [B, T], i64)
    cache = inp("cache", [NB, page_size, cfg.latent_dim], dt)
    block_table = inp("block_table", [B, P], i32)
    cache_seqlens = inp("cache_seqlens", [B], i32)

    def linear(v, name, out_features, in_features):
        return op("linear", v, param(f"{name}.weight", [out_features, in_features], dt))

    def rms_norm(v, name, width):
        return op("rms_norm", v, param(f"{name}.weight", [width], dt), eps=float(cfg.rms_norm_eps))

    if cfg.q_lora_rank is None:
        q = linear(x, "q_proj", H * qk, hidden)
    else:
        q_a = rms_norm(linear(x, "q_a_proj", cfg.q_lora_rank, hidden), "q_a_layernorm", cfg.q_lora_rank)
        q = linear(q_a, "q_b_proj", H * qk, cfg.q_lora_rank)
    q = op("reshape", q, shape=(B, T, H, qk))
    q_nope = slice_last(q, 0, nope)
    q_pe = op("rope", slice_last(q, nope, qk), positions, **rope_attrs(cfg))

    kv_a = linear(x, "kv_a_proj_with_mqa", cfg.latent_dim, hidden)
    c_kv = rms_norm(slice_last(kv_a, 0, rank), "kv_a_layernorm", rank)
    k_pe = op("rope", slice_last(kv_a, rank, cfg.latent_dim), positions, **rope_attrs(cfg))
    new_cache = op("paged_append", cache, block_table, cache_seqlens, op("concat", c_kv, k_pe, axis=-1))

    latent = op("paged_gather", new_cache, block_table)  # [B, S, rank + rope]
    S = latent.shape[1]
    kv = op("reshape", linear(slice_last(latent, 0, rank), "kv_b_proj", H * (nope + vdim), rank),
            shape=(B, S, H, nope + vdim))
    k_rope = op("expand", op("reshape", slice_last(latent, rank, cfg.latent_dim), shape=(B, S, 1, rope_dim)),
                shape=(B, S, H, rope_dim))
    k = op("concat", slice_last(kv, 0, nope), k_rope, axis=-1)
    v = slice_last(kv, nope, nope + vdim)
    attn = op("attention", op("concat", q_nope, q_pe, axis=-1), k, v, cache_seqlens, scale=cfg.softmax_scale)
    out = linear(op("reshape", attn, shape=(B, T, H * vdim)), "o_proj", hidden, H * vdim)
    return Graph("mla", [x, positions, cache, block_table, cache_seqlens], {"out": out, "cache": new_cache})
