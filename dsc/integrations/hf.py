"""dsc as a drop-in for Hugging Face transformers' DeepSeek-V2/V3 models.

    model = transformers.AutoModelForCausalLM.from_pretrained(...)
    dsc.integrations.hf.patch(model, backend="triton")
    model.generate(...)

`patch` swaps each decoder layer's attention for a dsc.nn.MLA and each DeepSeekMoE
`mlp` for a dsc.nn.MoE, carrying the weights over; the embeddings, norms, dense MLPs
and LM head stay transformers'.

The cache. dsc keeps each layer's latents in its own paged LatentCache, held beside
the transformers Cache the model is given (a DynamicCache, as generate makes). So that
transformers' bookkeeping (sequence lengths, masks, cropping, beam reordering) keeps
working, the patched attention writes one int32 placeholder per token into that Cache:
the index of the dsc cache row the token lives in. Whatever transformers does to its
cache's batch rows (beam search's reorder, repeat_interleave for several return
sequences, selecting rows) moves those indices too, and the next call rearranges dsc's
rows to match; a crop shortens dsc's rows. The placeholders cost 4 bytes per token per
layer, beside the latent's (kv_lora_rank + rope) values.

Not supported (refused with a message): padded batches (an attention_mask with zeros;
dsc's MLA attends to every cached token of a row) and caches other than DynamicCache.
"""

from __future__ import annotations

import logging
import weakref

import torch

from dsc.config import Config
from dsc.errors import ConfigError, DscError, InputError
from dsc.nn.latent_cache import LatentCache
from dsc.nn.mla import MLA
from dsc.nn.moe import MoE

log = logging.getLogger("dsc")

MODEL_TYPES = ("deepseek_v2", "deepseek_v3")
MIN_CAPACITY = 256  # tokens per row a layer's latent cache starts with; it doubles when full


def patch(model: torch.nn.Module, backend: str = "reference", passes="default", *, target: str | None = None):
    """Swap the attention and MoE modules of a transformers DeepseekV2/DeepseekV3 model
    (ForCausalLM, the bare Model, or any module holding its decoder layers) for dsc's,
    in place, in the model's dtype and on its device. Returns the model.

    backend and passes: as for dsc.nn.MLA. Anything that is not a DeepSeek model, or a
    config dsc cannot run, is refused with a DscError and the model left unchanged.
    """
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if not isinstance(model, torch.nn.Module) or model_type not in MODEL_TYPES:
        raise ConfigError(f"dsc.integrations.hf.patch: expected a transformers DeepSeek-V2/V3 model, got "
                          f"{type(model).__name__} (model_type {model_type!r}); the model is unchanged")
    layers = [m for m in model.modules() if type(m).__name__ in ("DeepseekV2DecoderLayer", "DeepseekV3DecoderLayer")]
    if any(isinstance(layer.self_attn, PatchedAttention) for layer in layers):
        raise ConfigError("dsc.integrations.hf.patch: the model is already patched")
    if not layers:
        raise ConfigError(f"dsc.integrations.hf.patch: {type(model).__name__} holds no DeepSeek decoder layers; "
                          f"the model is unchanged")
    cfg = Config.from_hf(config.to_dict())
    for why in hf_divergences(cfg):
        log.warning("dsc.integrations.hf.patch: %s; dsc follows DeepSeek's modeling code, so the patched model "
                    "differs from the unpatched one here", why)
    weight = next(model.parameters())
    dtype, device = weight.dtype, weight.device

    # build every replacement first: a failure leaves the model as it was
    swaps = []
    for layer in layers:
        mla = MLA(cfg, backend=backend, passes=passes, dtype=dtype, device=device, target=target)
        mla.load_state_dict(layer.self_attn.state_dict())
        swaps.append((layer, "self_attn", PatchedAttention(mla, layer.self_attn.layer_idx)))
        if type(layer.mlp).__name__ in ("DeepseekV2Moe", "DeepseekV3MoE"):
            moe = MoE(cfg, backend=backend, passes=passes, dtype=dtype, device=device, target=target)
            moe.load_state_dict(layer.mlp.state_dict())
            swaps.append((layer, "mlp", moe))
    for layer, name, module in swaps:
        setattr(layer, name, module)
    model.register_forward_pre_hook(_refuse_padding, with_kwargs=True)
    return model


def hf_divergences(cfg: Config) -> list[str]:
    """Where transformers' DeepSeek modules ignore this config (shared/NOTES.md's table)."""
    out = []
    if cfg.model_type == "deepseek_v2":
        if cfg.scoring_func != "softmax":
            out.append(f"transformers' V2 MoE always scores with softmax (config: {cfg.scoring_func})")
        if cfg.topk_method == "noaux_tc":
            out.append("transformers' V2 MoE cannot route noaux_tc")
        if cfg.norm_topk_prob:
            out.append("transformers' V2 MoE never renormalises the top-k weights (config: norm_topk_prob)")
        if not cfg.rope_interleave:
            out.append("transformers' V2 attention always rotates adjacent pairs (config: rope_interleave false)")
    else:
        if cfg.scoring_func != "sigmoid":
            out.append(f"transformers' V3 MoE always scores with sigmoid (config: {cfg.scoring_func})")
        if cfg.topk_method != "noaux_tc":
            out.append(f"transformers' V3 MoE always routes noaux_tc (config: {cfg.topk_method})")
        if cfg.num_experts_per_tok == 1 and cfg.norm_topk_prob:
            out.append("transformers' V3 MoE renormalises a single expert's weight to 1")
    return out


def _refuse_padding(module, args, kwargs):
    mask = kwargs.get("attention_mask")
    if isinstance(mask, torch.Tensor) and mask.dim() == 2 and bool((mask == 0).any()):
        raise InputError("dsc-patched model: padded batches (an attention_mask with zeros) are not supported: "
                         "dsc's MLA attends to every token a row holds; run rows of equal length, or one at a time")


class PatchedAttention(torch.nn.Module):
    """A transformers DeepSeek attention layer's interface over dsc.nn.MLA."""

    def __init__(self, mla: MLA, layer_idx: int):
        super().__init__()
        self.mla = mla
        self.layer_idx = layer_idx
        # one dsc latent cache per transformers Cache object this layer has seen
        self._latents: "weakref.WeakKeyDictionary[object, LatentCache]" = weakref.WeakKeyDictionary()

    def forward(self, hidden_states: torch.Tensor, position_embeddings=None, attention_mask=None,
                past_key_values=None, position_ids: torch.Tensor | None = None, **kwargs):
        B, T = hidden_states.shape[:2]
        if past_key_values is None:  # no cache: the call's tokens only
            latent = self.mla.new_cache(B, T)
        else:
            latent = self._synced(past_key_values, B, T)
        if position_ids is None:
            positions = latent.seqlens.to(torch.int64)[:, None] + torch.arange(T, device=latent.seqlens.device)
        else:
            positions = position_ids.to(torch.int64).expand(B, T)
        out = self.mla(hidden_states, positions.to(hidden_states.device).contiguous(), latent)
        if past_key_values is not None:
            rows = torch.arange(B, dtype=torch.int32, device=hidden_states.device)
            mark = rows.view(B, 1, 1, 1).expand(B, 1, T, 1).contiguous()
            past_key_values.update(mark, mark, self.layer_idx)
        return out, None

    def _synced(self, cache, B: int, T: int) -> LatentCache:
        """This layer's dsc cache for transformers' `cache`, its rows rearranged and
        lengths cut to match what transformers did to its own since the last call."""
        layers = getattr(cache, "layers", None)
        if layers is None or (self.layer_idx < len(layers) and not hasattr(layers[self.layer_idx], "keys")):
            raise DscError(f"dsc-patched attention: supports transformers' DynamicCache, got {type(cache).__name__}")
        held = cache.get_seq_length(self.layer_idx)
        latent = self._latents.get(cache)
        if held == 0:
            latent = None
        elif latent is None:
            raise DscError("dsc-patched attention: this cache was filled by unpatched attention; start a new one")
        else:
            keys = layers[self.layer_idx].keys
            source = keys[:, 0, -1, 0].long().to(latent.seqlens.device)
            lengths = latent.seqlens.index_select(0, source)
            if bool((lengths < held).any()):
                raise DscError("dsc-patched attention: the cache holds tokens dsc never saw; start a new one")
            identity = source.shape[0] == latent.batch_size and bool(
                (source == torch.arange(latent.batch_size, device=source.device)).all())
            if not identity:
                latent = latent.resized(source, latent.max_seq_len)
            if bool((latent.seqlens != held).any()):
                latent.truncate([held] * latent.batch_size)
        need = held + T
        if latent is None:
            latent = self.mla.new_cache(B, max(MIN_CAPACITY, need))
        elif need > latent.max_seq_len:
            latent = latent.resized(torch.arange(B, device=latent.seqlens.device), max(2 * latent.max_seq_len, need))
        self._latents[cache] = latent
        return latent

    def extra_repr(self) -> str:
        return f"layer_idx={self.layer_idx}"
