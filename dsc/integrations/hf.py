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
    (a ForCausalLM or the bare Model: a module with a DeepSeek `config`) for dsc's, in
    place, each in its layer's dtype and on its layer's device (so a model split across
    GPUs by device_map stays split). Returns the model.

    backend and passes: as for dsc.nn.MLA. Anything that is not a DeepSeek model, a
    config dsc cannot run, weights still on the meta device (offloaded) or in a layout
    dsc does not load (FP8 checkpoints with weight_scale_inv) are refused with a DscError
    and the model left unchanged.
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
    # build every replacement first: a failure leaves the model as it was
    swaps = []
    for layer in layers:
        weight = layer.self_attn.kv_b_proj.weight
        if weight.is_meta:
            raise ConfigError(f"dsc.integrations.hf.patch: layer {layer.self_attn.layer_idx}'s weights are on the "
                              f"meta device (offloaded); load them first. The model is unchanged")
        dtype, device = weight.dtype, weight.device
        mla = MLA(cfg, backend=backend, passes=passes, dtype=dtype, device=device, target=target)
        mla.load_state_dict(layer.self_attn.state_dict())
        swaps.append((layer, "self_attn", PatchedAttention(mla, layer.self_attn.layer_idx)))
        if type(layer.mlp).__name__ in ("DeepseekV2Moe", "DeepseekV3MoE"):
            moe = MoE(cfg, backend=backend, passes=passes, dtype=dtype, device=device, target=target)
            moe.load_state_dict(layer.mlp.state_dict())
            swaps.append((layer, "mlp", moe))
    for layer, name, module in swaps:
        setattr(layer, name, module)
    # on the module that runs the layers, so calling the inner model directly is checked too
    runner = next(m for m in model.modules() if any(child is layers[0] for child in getattr(m, "layers", ())))
    runner.register_forward_pre_hook(_refuse_padding, with_kwargs=True)
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
    mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
    if isinstance(mask, torch.Tensor) and mask.dim() == 2 and bool((mask == 0).any()):
        raise InputError("dsc-patched model: padded batches (an attention_mask with zeros) are not supported: "
                         "dsc's MLA attends to every token a row holds; run rows of equal length, or one at a time")


def _row_marks(batch: int, tokens: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Placeholder keys and values [batch, 1, tokens, 1] int32: each token's dsc row."""
    rows = torch.arange(batch, dtype=torch.int32, device=device).view(batch, 1, 1, 1)
    marks = rows.expand(batch, 1, tokens, 1).contiguous()
    return marks, marks.clone()


class PatchedAttention(torch.nn.Module):
    """A transformers DeepSeek attention layer's interface over dsc.nn.MLA. It returns no
    attention weights (output_attentions gives none for these layers)."""

    def __init__(self, mla: MLA, layer_idx: int):
        super().__init__()
        self.mla = mla
        self.layer_idx = layer_idx

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
            past_key_values.update(*_row_marks(B, T, hidden_states.device), self.layer_idx)
            # the dsc cache rides on transformers' layer: a deepcopy of the Cache (a reused
            # prompt cache) copies it too
            past_key_values.layers[self.layer_idx].dsc_latent = latent
        return out, None

    def _synced(self, cache, B: int, T: int) -> LatentCache:
        """This layer's dsc cache for transformers' `cache`, its rows rearranged and
        lengths cut to match what transformers did to its own since the last call."""
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        layers = cache.layers if isinstance(cache, DynamicCache) else None
        if layers is None or getattr(cache, "offloading", False) or (
                self.layer_idx < len(layers) and type(layers[self.layer_idx]) is not DynamicLayer):
            raise DscError(f"dsc-patched attention: supports transformers' DynamicCache without offloading, got "
                           f"{type(cache).__name__}" + (" with offloading" if getattr(cache, "offloading", False)
                                                          else ""))
        held = cache.get_seq_length(self.layer_idx)
        latent = getattr(layers[self.layer_idx], "dsc_latent", None) if held else None
        if held and latent is None:
            raise DscError("dsc-patched attention: this cache was filled by unpatched attention; start a new one")
        if latent is not None:
            layer = layers[self.layer_idx]
            source = layer.keys[:, 0, -1, 0].long().to(latent.seqlens.device)  # each row's dsc row
            if bool((latent.seqlens.index_select(0, source) < held).any()):
                raise DscError("dsc-patched attention: the cache holds tokens dsc never saw; start a new one")
            if source.shape[0] != latent.batch_size or not bool(
                    (source == torch.arange(latent.batch_size, device=source.device)).all()):
                latent = latent.resized(source, latent.max_seq_len)
                # every placeholder now names the new rows, so a later crop reads them right
                layer.keys, layer.values = _row_marks(source.shape[0], held, layer.keys.device)
            if bool((latent.seqlens != held).any()):
                latent.truncate([held] * latent.batch_size)
        need = held + T
        if latent is None:
            latent = self.mla.new_cache(B, max(MIN_CAPACITY, need))
        elif need > latent.max_seq_len:
            latent = latent.resized(torch.arange(B, device=latent.seqlens.device), max(2 * latent.max_seq_len, need))
        return latent

    def extra_repr(self) -> str:
        return f"layer_idx={self.layer_idx}"
