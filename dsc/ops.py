"""dsc's kernels as torch custom ops (namespace `dsc`), for frameworks that bring their
own cache and scheduler: `torch.ops.dsc.mla_decode(...)` or `dsc.ops.mla_decode(...)`.

They take tensors in the layouts FlashMLA, vLLM and DeepGEMM use, run dsc's Triton
kernels (natively on CUDA, under Triton's interpreter on a CPU), and each has a fake
(meta) implementation, so torch.compile traces through them without a graph break.
They are inference ops: none has an autograd formula.

Every op checks its tensors' dtype, device and shape up front, in the real and the fake
implementation alike, and raises dsc.InputError naming the argument.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

import dsc.codegen.triton  # noqa: F401  (on a machine without CUDA: Triton's interpreter)
from dsc.codegen.paged import check_pages
from dsc.errors import InputError
from dsc.ir.ops.grouped import EXPERT_BLOCK
from dsc.routing import SCORING_FUNCS, TOPK_METHODS, broken_routing_rule

FLOATS = (torch.float32, torch.bfloat16, torch.float16)
E4M3 = torch.float8_e4m3fn


def _kernels(op: str, backend: str):
    """The kernels of a registered codegen backend, by the names the group kinds call them
    (dsc/codegen/groups/)."""
    from dsc.codegen.backend import CODEGEN_BACKENDS, get_backend

    if backend not in CODEGEN_BACKENDS:
        raise InputError(f"dsc.ops.{op}: backend must be one of {', '.join(CODEGEN_BACKENDS)}, got {backend!r}")
    chosen = get_backend(backend)
    chosen.prepare()
    return chosen.kernels


def check(op: str, name: str, t, *, dtypes: Sequence[torch.dtype] | None = None, rank: int | None = None,
          shape: Sequence | None = None, device: torch.device | None = None) -> None:
    """Raise InputError naming `op` and the argument `name` unless t is a tensor of one of
    `dtypes`, of `rank` dims, matching `shape` (None entries match any size) on `device`."""
    def bad(why):
        raise InputError(f"dsc.ops.{op}: {name} {why}")

    if not isinstance(t, Tensor):
        bad(f"must be a torch.Tensor, got {type(t).__name__}")
    if dtypes is not None and t.dtype not in dtypes:
        bad(f"must be {' or '.join(str(d).removeprefix('torch.') for d in dtypes)}, "
            f"got {str(t.dtype).removeprefix('torch.')}")
    if rank is not None and t.dim() != rank:
        bad(f"must have {rank} dims, got shape {list(t.shape)}")
    if shape is not None:
        want = ", ".join("*" if s is None else str(s) for s in shape)
        if t.dim() != len(shape) or any(s is not None and t.shape[i] != s for i, s in enumerate(shape)):
            bad(f"must have shape [{want}], got {list(t.shape)}")
    if device is not None and t.device != device:
        bad(f"must be on {device} (with the other inputs), got {t.device}")


def _check_range(op: str, name: str, lengths: Tensor, lo: int, hi: int, what: str) -> None:
    """A host read of lengths or indices (a device sync: the `validate` flags turn it off)."""
    if lengths.numel():
        got_lo, got_hi = int(lengths.min()), int(lengths.max())
        if got_lo < lo or got_hi > hi:
            raise InputError(f"dsc.ops.{op}: {name} must lie in [{lo}, {hi}] ({what}), got {got_lo}..{got_hi}")


# -- MLA decode: FlashMLA's contract ------------------------------------------------------------

def _mla_decode_checks(q, kv_cache, block_table, cache_seqlens, head_dim_v):
    check("mla_decode", "q", q, dtypes=FLOATS, rank=4)
    B, D = q.shape[0], q.shape[3]
    check("mla_decode", "kv_cache", kv_cache, dtypes=(q.dtype,), shape=(None, None, D), device=q.device)
    check("mla_decode", "block_table", block_table, dtypes=(torch.int32,), shape=(B, None), device=q.device)
    check("mla_decode", "cache_seqlens", cache_seqlens, dtypes=(torch.int32,), shape=(B,), device=q.device)
    if not 0 < head_dim_v <= D:
        raise InputError(f"dsc.ops.mla_decode: head_dim_v must be in 1..{D} (a prefix of each cache row), "
                         f"got {head_dim_v}")


@torch.library.custom_op("dsc::mla_decode", mutates_args=())
def mla_decode(q: Tensor, kv_cache: Tensor, block_table: Tensor, cache_seqlens: Tensor, softmax_scale: float,
               head_dim_v: int = 512, causal: bool = True, num_splits: Optional[int] = None,
               validate: bool = True, backend: str = "triton") -> tuple[Tensor, Tensor]:
    """Absorbed MLA attention over a paged latent cache (FlashMLA's contract).

    q [B, T, H, D] (T <= 2 for multi-token prediction; any H); kv_cache [pages,
    page_size, D] with each row [c_kv ; k_pe] and page_size 1, 16, 64 or any other;
    block_table [B, pages per row] int32; cache_seqlens [B] int32: each row's tokens,
    the new ones included (already written). With causal, query t of a row of length L
    sees positions 0 .. L - T + t. The value is the first head_dim_v columns of a row.

    Returns (out [B, T, H, head_dim_v] in q's dtype, lse [B, H, T] float32). A query that
    sees no cached position (a row of length 0: an idle slot of a serving batch) gets
    out = 0 and lse = +inf, as FlashMLA returns.

    validate reads cache_seqlens and the block table on the host (a device sync: turn it
    off under CUDA graphs) and refuses lengths outside 0 .. the block table's capacity and
    any entry a row uses (its first ceil(len / page_size)) that is not a page of kv_cache.
    With validate=False that is the caller's contract: the kernel reads the pages the
    table names unchecked, and a bad entry reads another tensor's memory or faults.

    backend: whose kernels run it, "triton" (the default: split-KV, the rows' cache work
    balanced over num_splits programs per query-row block, by default the tuned count,
    one wave of the GPU's SMs) or "tvm" (llvm on a CPU; it has no split and ignores
    num_splits).
    """
    _mla_decode_checks(q, kv_cache, block_table, cache_seqlens, head_dim_v)
    if validate:
        _check_range("mla_decode", "cache_seqlens", cache_seqlens, 0, block_table.shape[1] * kv_cache.shape[1],
                     "a row's block table holds the upper bound")
        check_pages(block_table, cache_seqlens, kv_cache.shape[1], kv_cache.shape[0], InputError,
                    "dsc.ops.mla_decode: block_table")
    kernels = _kernels("mla_decode", backend)
    return kernels.paged_attention(q, kv_cache, block_table, cache_seqlens, softmax_scale, head_dim_v, len_offset=0,
                                   causal=causal, num_splits=num_splits)


@mla_decode.register_fake
def _(q, kv_cache, block_table, cache_seqlens, softmax_scale, head_dim_v=512, causal=True, num_splits=None,
      validate=True, backend="triton"):
    _mla_decode_checks(q, kv_cache, block_table, cache_seqlens, head_dim_v)
    B, T, H, _ = q.shape
    return q.new_empty(B, T, H, head_dim_v), q.new_empty(B, H, T, dtype=torch.float32)


# -- MLA prefill: attention with expanded keys and values (the naive form) ------------------------

def _mla_prefill_checks(q, k, v, seqlens):
    check("mla_prefill", "q", q, dtypes=FLOATS, rank=4)
    B, _, H, D = q.shape
    check("mla_prefill", "k", k, dtypes=(q.dtype,), rank=4, device=q.device)
    S = k.shape[1]
    if k.shape[0] != B or k.shape[2] not in (1, H) or k.shape[3] != D:
        raise InputError(f"dsc.ops.mla_prefill: k must have shape [{B}, S, {H} or 1, {D}], got {list(k.shape)}")
    check("mla_prefill", "v", v, dtypes=(q.dtype,), rank=4, device=q.device)
    if v.shape[0] != B or v.shape[1] != S or v.shape[2] not in (1, H):
        raise InputError(f"dsc.ops.mla_prefill: v must have shape [{B}, {S}, {H} or 1, Dv], got {list(v.shape)}")
    check("mla_prefill", "seqlens", seqlens, dtypes=(torch.int32,), shape=(B,), device=q.device)


@torch.library.custom_op("dsc::mla_prefill", mutates_args=())
def mla_prefill(q: Tensor, k: Tensor, v: Tensor, seqlens: Tensor, softmax_scale: float,
                validate: bool = True, backend: str = "triton") -> tuple[Tensor, Tensor]:
    """Causal attention of T new tokens over each row's keys and values (MLA prefill in
    the naive form: keys [nope ; rope] 192 wide and values 128 for DeepSeek-V3).

    q [B, T, H, Dk]; k [B, S, H or 1, Dk]; v [B, S, H or 1, Dv] (any strides with a unit
    last stride); seqlens [B] int32: the tokens row b holds in k and v, its T queries
    last, so query t sees keys 0 .. seqlens[b] - T + t. Returns (out [B, T, H, Dv] in q's
    dtype, lse [B, H, T] float32). validate checks T <= seqlens <= S on the host.
    backend: whose kernels run it, "triton" (the default) or "tvm" (llvm on a CPU).
    """
    _mla_prefill_checks(q, k, v, seqlens)
    if validate:
        _check_range("mla_prefill", "seqlens", seqlens, q.shape[1], k.shape[1],
                       "each row holds its query tokens and at most k's length")
    kernels = _kernels("mla_prefill", backend)
    return kernels.attention(q, k, v, seqlens, softmax_scale, len_offset=0)


@mla_prefill.register_fake
def _(q, k, v, seqlens, softmax_scale, validate=True, backend="triton"):
    _mla_prefill_checks(q, k, v, seqlens)
    B, T, H, _ = q.shape
    return q.new_empty(B, T, H, v.shape[3]), q.new_empty(B, H, T, dtype=torch.float32)


# -- MoE routing: DeepSeek's gate after its logits -----------------------------------------------

def _moe_route_checks(router_logits, e_score_correction_bias, top_k, n_group, topk_group, topk_method,
                      scoring_func):
    check("moe_route", "router_logits", router_logits, dtypes=(torch.float32,), rank=2)
    E = router_logits.shape[1]
    if e_score_correction_bias is not None:
        check("moe_route", "e_score_correction_bias", e_score_correction_bias, dtypes=(torch.float32,),
              shape=(E,), device=router_logits.device)
    if topk_method not in TOPK_METHODS:
        raise InputError(f"dsc.ops.moe_route: topk_method must be one of {', '.join(TOPK_METHODS)}, "
                         f"got {topk_method!r}")
    if scoring_func not in SCORING_FUNCS:
        raise InputError(f"dsc.ops.moe_route: scoring_func must be softmax or sigmoid, got {scoring_func!r}")
    if (topk_method == "noaux_tc") != (e_score_correction_bias is not None):
        raise InputError("dsc.ops.moe_route: e_score_correction_bias is needed by noaux_tc, and only by it")
    broken = broken_routing_rule(E, top_k, n_group, topk_group, topk_method)
    if broken:
        raise InputError(f"dsc.ops.moe_route: {broken[0]}: {broken[1]}, got {broken[2]}")


@torch.library.custom_op("dsc::moe_route", mutates_args=())
def moe_route(router_logits: Tensor, e_score_correction_bias: Optional[Tensor], top_k: int, n_group: int = 1,
              topk_group: int = 1, topk_method: str = "greedy", scoring_func: str = "softmax",
              norm_topk_prob: bool = False, routed_scaling_factor: float = 1.0,
              backend: str = "triton") -> tuple[Tensor, Tensor]:
    """DeepSeek's MoE gate on router_logits [N, E] float32 (x @ gate.weightᵀ in float32):
    scores (softmax or sigmoid), top-k selection (greedy, group-limited, or noaux_tc with
    e_score_correction_bias [E] used for selection only), weights from the unbiased
    scores, renormalised when norm_topk_prob and top_k > 1, times routed_scaling_factor.

    Returns (topk_ids [N, top_k] int64, topk_weights [N, top_k] float32), in one fused
    kernel of `backend` ("triton" or "tvm").
    """
    _moe_route_checks(router_logits, e_score_correction_bias, top_k, n_group, topk_group, topk_method,
                      scoring_func)
    kernels = _kernels("moe_route", backend)
    from dsc.codegen.groups.router import RouterSpec

    spec = RouterSpec(func=scoring_func, method=topk_method, top_k=top_k, n_group=n_group, topk_group=topk_group,
                      normalize=norm_topk_prob and top_k > 1, eps=1e-20, scale=routed_scaling_factor, extra=0,
                      extra_start=0, extra_w=0.0)
    return kernels.route(router_logits, e_score_correction_bias, spec)


@moe_route.register_fake
def _(router_logits, e_score_correction_bias, top_k, n_group=1, topk_group=1, topk_method="greedy",
      scoring_func="softmax", norm_topk_prob=False, routed_scaling_factor=1.0, backend="triton"):
    _moe_route_checks(router_logits, e_score_correction_bias, top_k, n_group, topk_group, topk_method,
                      scoring_func)
    N = router_logits.shape[0]
    return (router_logits.new_empty(N, top_k, dtype=torch.int64),
            router_logits.new_empty(N, top_k, dtype=torch.float32))


# -- fused MoE: vLLM's fused_experts ---------------------------------------------------------------

def _scale_shape(rows: int, cols: int, block: int) -> tuple[int, int]:
    return -(-rows // block), -(-cols // block)


def _check_block(op: str, block_size: int) -> None:
    """The scale block is a K step of the GEMM kernels: a power of two, 16 or more."""
    if block_size < 16 or block_size & (block_size - 1):
        raise InputError(f"dsc.ops.{op}: block_size must be a power of two >= 16, got {block_size}")


def _fused_moe_checks(hidden_states, w13, w2, topk_weights, topk_ids, w13_scale, w2_scale, block_size):
    op = "fused_moe"
    check(op, "hidden_states", hidden_states, dtypes=FLOATS, rank=2)
    M, H = hidden_states.shape
    dev = hidden_states.device
    fp8 = w13_scale is not None or w2_scale is not None
    wdt = (E4M3,) if fp8 else (hidden_states.dtype,)
    check(op, "w13", w13, dtypes=wdt, rank=3, device=dev)
    E, I2 = w13.shape[0], w13.shape[1]
    if w13.shape[2] != H or I2 % 2:
        raise InputError(f"dsc.ops.fused_moe: w13 must have shape [E, 2 * intermediate, {H}] (gate rows, then up), "
                         f"got {list(w13.shape)}")
    check(op, "w2", w2, dtypes=wdt, shape=(E, H, I2 // 2), device=dev)
    check(op, "topk_ids", topk_ids, dtypes=(torch.int32, torch.int64), rank=2, device=dev)
    if topk_ids.shape[0] != M:
        raise InputError(f"dsc.ops.fused_moe: topk_ids must have shape [{M}, top_k], got {list(topk_ids.shape)}")
    check(op, "topk_weights", topk_weights, dtypes=(torch.float32,), shape=tuple(topk_ids.shape), device=dev)
    if fp8:
        _check_block(op, block_size)
        if w13_scale is None or w2_scale is None:
            raise InputError("dsc.ops.fused_moe: FP8 experts need both w13_scale and w2_scale")
        check(op, "w13_scale", w13_scale, dtypes=(torch.float32,), shape=(E, *_scale_shape(I2, H, block_size)),
              device=dev)
        check(op, "w2_scale", w2_scale, dtypes=(torch.float32,), shape=(E, *_scale_shape(H, I2 // 2, block_size)),
              device=dev)


@torch.library.custom_op("dsc::fused_moe", mutates_args=())
def fused_moe(hidden_states: Tensor, w13: Tensor, w2: Tensor, topk_weights: Tensor, topk_ids: Tensor,
              w13_scale: Optional[Tensor] = None, w2_scale: Optional[Tensor] = None, block_size: int = 128,
              act_quant: bool = True, validate: bool = True, backend: str = "triton") -> Tensor:
    """The routed experts of a DeepSeekMoE layer (vLLM's fused_experts contract):
    sum over k of topk_weights[:, k] * down(silu(gate(x)) * up(x)) for expert
    topk_ids[:, k].

    hidden_states [M, H]; w13 [E, 2I, H] (each expert's gate rows, then its up rows,
    transformers 5's gate_up_proj); w2 [E, H, I]; topk_weights [M, K] float32; topk_ids
    [M, K] int32 or int64. FP8 experts: w13 and w2 in float8_e4m3fn with block scales
    w13_scale [E, ceil(2I/b), ceil(H/b)] and w2_scale [E, ceil(H/b), ceil(I/b)], b =
    block_size; act_quant also quantizes the activations per token per b channels (FP8
    tensor cores on sm_89+; off for weight-only FP8 on A100). Returns [M, H] in
    hidden_states' dtype. Tokens are sorted by expert, run as grouped GEMMs with SiLU*up
    fused, and combined in a fixed order (deterministic). validate checks on the host that
    every id names an expert; with validate=False a slot whose id names none (expert
    parallelism's -1, an expert another rank holds) adds nothing. backend: whose
    kernels run it, "triton" (the default) or "tvm" (llvm on a CPU).
    """
    _fused_moe_checks(hidden_states, w13, w2, topk_weights, topk_ids, w13_scale, w2_scale, block_size)
    if validate:
        _check_range("fused_moe", "topk_ids", topk_ids, 0, w13.shape[0] - 1, "expert indices")
    kernels = _kernels("fused_moe", backend)
    from dsc.codegen.groups.moe import routed_experts

    return routed_experts(kernels, hidden_states, topk_ids.to(torch.int64), topk_weights, w13, w2, EXPERT_BLOCK,
                          w13_scale=w13_scale, w2_scale=w2_scale, act_quant=act_quant and w13_scale is not None,
                          scale_block=block_size)


@fused_moe.register_fake
def _(hidden_states, w13, w2, topk_weights, topk_ids, w13_scale=None, w2_scale=None, block_size=128,
      act_quant=True, validate=True, backend="triton"):
    _fused_moe_checks(hidden_states, w13, w2, topk_weights, topk_ids, w13_scale, w2_scale, block_size)
    return torch.empty_like(hidden_states)


# -- FP8: block quantization and the block-scaled GEMM ---------------------------------------------

def _fp8_quant_checks(x, block_n, block_k):
    check("fp8_quant", "x", x, dtypes=FLOATS)
    if x.dim() < 2:
        raise InputError(f"dsc.ops.fp8_quant: x must have at least 2 dims [..., N, K], got shape {list(x.shape)}")
    if block_n < 1 or block_k < 1:
        raise InputError(f"dsc.ops.fp8_quant: block_n and block_k must be positive, got {block_n}, {block_k}")


@torch.library.custom_op("dsc::fp8_quant", mutates_args=())
def fp8_quant(x: Tensor, block_n: int = 128, block_k: int = 128) -> tuple[Tensor, Tensor]:
    """x [..., N, K] -> (q float8_e4m3fn [..., N, K], scale float32 [..., ceil(N/block_n),
    ceil(K/block_k)]) with x ≈ q * scale tile by tile: DeepSeek-V3's scheme, each scale
    mapping its tile's largest magnitude to 448. Weights use 128 x 128 tiles;
    activations (per token per 128 channels) block_n=1, block_k=128.

    PyTorch tensor ops (dsc.ir.ops.fp8, the IR's reference), on any device: a
    quantization is a memory-bound pass that torch already does at bandwidth.
    """
    _fp8_quant_checks(x, block_n, block_k)
    from dsc.ir.ops.fp8 import quantize, tile_scales

    s = tile_scales(x, (block_n, block_k))
    return quantize(x, s, (block_n, block_k)), s


@fp8_quant.register_fake
def _(x, block_n=128, block_k=128):
    _fp8_quant_checks(x, block_n, block_k)
    *lead, n, k = x.shape
    return (x.new_empty(x.shape, dtype=E4M3),
            x.new_empty(*lead, -(-n // block_n), -(-k // block_k), dtype=torch.float32))


def _fp8_gemm_checks(x, weight, weight_scale, block_size):
    check("fp8_gemm", "x", x, dtypes=FLOATS)
    _check_block("fp8_gemm", block_size)
    if x.dim() < 1:
        raise InputError("dsc.ops.fp8_gemm: x must have at least one dim [..., K]")
    check("fp8_gemm", "weight", weight, dtypes=(E4M3,), rank=2, device=x.device)
    N, K = weight.shape
    if x.shape[-1] != K:
        raise InputError(f"dsc.ops.fp8_gemm: x's last dim {x.shape[-1]} must equal weight's in features {K}")
    check("fp8_gemm", "weight_scale", weight_scale, dtypes=(torch.float32,), shape=_scale_shape(N, K, block_size),
          device=x.device)


@torch.library.custom_op("dsc::fp8_gemm", mutates_args=())
def fp8_gemm(x: Tensor, weight: Tensor, weight_scale: Tensor, act_quant: bool = True,
             block_size: int = 128, backend: str = "triton") -> Tensor:
    """x [..., K] @ dequant(weight [N, K] float8_e4m3fn, weight_scale [ceil(N/b), ceil(K/b)])ᵀ
    with b = block_size, accumulated in float32, returned in x's dtype. act_quant
    quantizes x per token per b channels in the GEMM's prologue (DeepSeek-V3's FP8
    inference, FP8 tensor cores); without it the weights are upcast (weight-only FP8).
    backend: whose kernels run it, "triton" (the default) or "tvm" (llvm on a CPU).
    """
    _fp8_gemm_checks(x, weight, weight_scale, block_size)
    kernels = _kernels("fp8_gemm", backend)
    return kernels.fp8_linear(x, weight, weight_scale, act_quant=act_quant, block=block_size)


@fp8_gemm.register_fake
def _(x, weight, weight_scale, act_quant=True, block_size=128, backend="triton"):
    _fp8_gemm_checks(x, weight, weight_scale, block_size)
    return x.new_empty(*x.shape[:-1], weight.shape[0])


OPS = (mla_decode, mla_prefill, moe_route, fused_moe, fp8_quant, fp8_gemm)
