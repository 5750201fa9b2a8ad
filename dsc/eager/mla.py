"""MLA the way DeepSeek's modeling_deepseek.py computes it, one batch row at a time."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dsc.config import Config


def _yarn_get_mscale(scale: float, mscale: float) -> float:
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


def _cos_sin(cfg: Config, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [T, rope_dim] as DeepSeek's (Yarn)RotaryEmbedding builds them."""
    dim, base = cfg.qk_rope_head_dim, cfg.rope_theta
    freq_extra = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    mscale = 1.0
    y = cfg.rope_scaling
    if y is None:
        inv_freq = freq_extra
    else:
        freq_inter = 1.0 / (y.factor * base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))

        def find_dim(num_rotations):
            return (dim * math.log(y.original_max_position_embeddings / (num_rotations * 2 * math.pi))) / (
                2 * math.log(base))

        low = max(math.floor(find_dim(y.beta_fast)), 0)
        high = min(math.ceil(find_dim(y.beta_slow)), dim - 1)
        if low == high:
            high += 0.001
        linear = (torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)
        inv_freq_mask = 1.0 - torch.clamp(linear, 0, 1)
        inv_freq = freq_inter * (1 - inv_freq_mask) + freq_extra * inv_freq_mask
        mscale = _yarn_get_mscale(y.factor, y.mscale) / _yarn_get_mscale(y.factor, y.mscale_all_dim)
    freqs = torch.outer(positions.to(torch.float32), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos() * mscale, emb.sin() * mscale


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def _apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleave: bool) -> torch.Tensor:
    """x [..., T, d] (T second to last). Interleaved pairs are first de-interleaved, as
    DeepSeek's apply_rotary_pos_emb does, then rotated as halves."""
    if interleave:
        *lead, d = x.shape
        x = x.view(*lead, d // 2, 2).transpose(-1, -2).reshape(*lead, d)
    xf = x.float()
    return (xf * cos + _rotate_half(xf) * sin).to(x.dtype)


def _rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return w * h.to(x.dtype)


class EagerMLA:
    """MLA over per-row latent histories: `rows[b]` holds (c_kv [L, rank], k_pe [L, rope])."""

    def __init__(self, cfg: Config, weights: dict[str, torch.Tensor]):
        self.cfg = cfg
        self.w = weights

    def new_state(self, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor] | None]:
        return [None] * batch_size

    def __call__(self, x: torch.Tensor, positions: torch.Tensor, rows: list) -> torch.Tensor:
        outs = []
        for b in range(x.shape[0]):
            out, rows[b] = self._row(x[b], positions[b], rows[b])
            outs.append(out)
        return torch.stack(outs)

    def _row(self, x: torch.Tensor, pos: torch.Tensor, past):
        cfg, w = self.cfg, self.w
        T = x.shape[0]
        H, nope, rope, vdim = cfg.num_attention_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim
        if cfg.q_lora_rank is None:
            q = F.linear(x, w["q_proj.weight"])
        else:
            q = F.linear(_rms_norm(F.linear(x, w["q_a_proj.weight"]), w["q_a_layernorm.weight"], cfg.rms_norm_eps),
                         w["q_b_proj.weight"])
        q = q.view(T, H, nope + rope).transpose(0, 1)  # [H, T, qk]
        q_nope, q_pe = torch.split(q, [nope, rope], dim=-1)

        compressed = F.linear(x, w["kv_a_proj_with_mqa.weight"])
        c_kv, k_pe = torch.split(compressed, [cfg.kv_lora_rank, rope], dim=-1)
        c_kv = _rms_norm(c_kv, w["kv_a_layernorm.weight"], cfg.rms_norm_eps)
        cos, sin = _cos_sin(cfg, pos)
        q_pe = _apply_rope(q_pe, cos.to(x.dtype), sin.to(x.dtype), cfg.rope_interleave)
        k_pe = _apply_rope(k_pe, cos.to(x.dtype), sin.to(x.dtype), cfg.rope_interleave)

        if past is not None:
            c_kv = torch.cat([past[0], c_kv])
            k_pe = torch.cat([past[1], k_pe])
        L = c_kv.shape[0]
        kv = F.linear(c_kv, w["kv_b_proj.weight"]).view(L, H, nope + vdim).transpose(0, 1)
        k_nope, value = torch.split(kv, [nope, vdim], dim=-1)
        query = torch.cat([q_nope, q_pe], dim=-1)
        key = torch.cat([k_nope, k_pe[None].expand(H, L, rope)], dim=-1)

        scores = torch.matmul(query.float(), key.float().transpose(1, 2)) * cfg.softmax_scale  # [H, T, L]
        past_len = L - T
        causal = torch.ones(T, L, dtype=torch.bool).tril(diagonal=past_len)
        scores = scores.masked_fill(~causal, float("-inf"))
        probs = scores.softmax(dim=-1)
        attn = torch.matmul(probs, value.float()).to(x.dtype)  # [H, T, v]
        out = F.linear(attn.transpose(0, 1).reshape(T, H * vdim), w["o_proj.weight"])
        return out, (c_kv, k_pe)
