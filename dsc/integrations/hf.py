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

Left-padded batches (a tokenizer's padding_side="left") run each row's real tokens on
its own: dsc's rows hold different lengths, so the padding is never cached or attended
to, and each row's count of padding tokens is kept to line its length up with
transformers'. Refused with a message: padding anywhere else, and caches other than a
DynamicCache without offloading.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

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
    calls = CallMask()  # the current call's 2-D attention mask, shared by the patched layers
    swaps = []
    for layer in layers:
        weight = layer.self_attn.kv_b_proj.weight
        if weight.is_meta:
            raise ConfigError(f"dsc.integrations.hf.patch: layer {layer.self_attn.layer_idx}'s weights are on the "
                              f"meta device (offloaded); load them first. The model is unchanged")
        dtype, device = weight.dtype, weight.device
        mla = MLA(cfg, backend=backend, passes=passes, dtype=dtype, device=device, target=target)
        mla.load_state_dict(layer.self_attn.state_dict())
        swaps.append((layer, "self_attn", PatchedAttention(mla, layer.self_attn.layer_idx, calls)))
        if type(layer.mlp).__name__ in ("DeepseekV2Moe", "DeepseekV3MoE"):
            moe = MoE(cfg, backend=backend, passes=passes, dtype=dtype, device=device, target=target)
            moe.load_state_dict(layer.mlp.state_dict())
            swaps.append((layer, "mlp", moe))
    for layer, name, module in swaps:
        setattr(layer, name, module)
    # on the module that runs the layers, so calling the inner model directly is checked too
    runner = next(m for m in model.modules() if any(child is layers[0] for child in getattr(m, "layers", ())))
    runner.register_forward_pre_hook(calls.capture, with_kwargs=True)
    return model


def hf_divergences(cfg: Config) -> list[str]:
    """Where transformers' DeepSeek modules ignore this config (measured against transformers 5.23)."""
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


class CallMask:
    """The 2-D attention mask of the model call in flight ([batch, past + new] of 1s and
    0s), read by every patched layer: transformers hands its layers a 4-D additive mask,
    from which the padding is not cheap to read back."""

    def __init__(self):
        self.mask: torch.Tensor | None = None

    def capture(self, module, args, kwargs):
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        if not isinstance(mask, torch.Tensor) or mask.dim() != 2 or bool(mask.all()):
            self.mask = None
            return
        # left padding only: each row's zeros, then its ones (a tokenizer's padding_side="left")
        if bool((mask[:, 1:].int() < mask[:, :-1].int()).any()):
            raise InputError("dsc-patched model: attention_mask has zeros after a row's tokens; only left padding "
                             "is supported (padding_side='left')")
        self.mask = mask.bool()


@dataclass
class DscRows:
    """One layer's dsc latent cache beside a transformers cache layer, and each dsc row's
    left-padding tokens (held by transformers' cache, never by dsc's)."""
    latent: LatentCache
    pads: torch.Tensor  # [batch] int64


def _row_marks(batch: int, tokens: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Placeholder keys and values [batch, 1, tokens, 1] int32: each token's dsc row."""
    rows = torch.arange(batch, dtype=torch.int32, device=device).view(batch, 1, 1, 1)
    marks = rows.expand(batch, 1, tokens, 1).contiguous()
    return marks, marks.clone()


class PatchedAttention(torch.nn.Module):
    """A transformers DeepSeek attention layer's interface over dsc.nn.MLA. It returns no
    attention weights (output_attentions gives none for these layers)."""

    def __init__(self, mla: MLA, layer_idx: int, calls: CallMask | None = None):
        super().__init__()
        self.mla = mla
        self.layer_idx = layer_idx
        self.calls = calls or CallMask()

    def forward(self, hidden_states: torch.Tensor, position_embeddings=None, attention_mask=None,
                past_key_values=None, position_ids: torch.Tensor | None = None, **kwargs):
        B, T = hidden_states.shape[:2]
        if past_key_values is None:  # no cache: the call's tokens only
            rows = self._fresh(B, T)
        else:
            rows = self._synced(past_key_values, B, T)
        latent = rows.latent
        if position_ids is None:
            positions = latent.seqlens.to(torch.int64)[:, None] + torch.arange(T, device=latent.seqlens.device)
        else:
            positions = position_ids.to(torch.int64).expand(B, T)
        positions = positions.to(hidden_states.device)
        mask = self.calls.mask
        real = None if mask is None or mask.shape[0] != B else mask[:, -T:]
        if real is None or bool(real.all()):
            out = self.mla(hidden_states, positions.contiguous(), latent)
        else:
            out = self._left_padded(hidden_states, positions, rows, real)
        if past_key_values is not None:
            past_key_values.update(*_row_marks(B, T, hidden_states.device), self.layer_idx)
            # dsc's cache rides on transformers' layer: a deepcopy of the Cache (a reused
            # prompt cache) copies it too
            past_key_values.layers[self.layer_idx].dsc_rows = rows
        return out, None

    def _left_padded(self, x: torch.Tensor, positions: torch.Tensor, rows: DscRows, real: torch.Tensor):
        """Each row's real tokens (the last ones of the call) run alone on a one-row view
        of the cache; padding positions output zeros and are never cached."""
        B, T = x.shape[:2]
        latent = rows.latent
        counts = real.sum(1).tolist()
        started = latent.seqlens.tolist()
        out = x.new_zeros(x.shape[0], T, x.shape[2])
        for b, (n, held) in enumerate(zip(counts, started)):
            if n < T and held:
                raise InputError("dsc-patched model: padding after a row's tokens; only left padding is supported")
            if n:
                view = LatentCache(latent.pages, latent.block_table[b:b + 1], latent.seqlens[b:b + 1],
                                   latent.max_seq_len)  # the lengths are a view: advancing it advances the row
                out[b:b + 1, T - n:] = self.mla(x[b:b + 1, T - n:], positions[b:b + 1, T - n:].contiguous(), view)
        rows.pads = rows.pads + torch.tensor([T - n for n in counts], dtype=torch.int64, device=rows.pads.device)
        return out

    def _fresh(self, batch: int, capacity: int) -> DscRows:
        return DscRows(self.mla.new_cache(batch, capacity), torch.zeros(batch, dtype=torch.int64))

    def _synced(self, cache, B: int, T: int) -> DscRows:
        """This layer's dsc cache for transformers' `cache`, its rows rearranged and
        lengths cut to match what transformers did to its own since the last call."""
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        layers = cache.layers if isinstance(cache, DynamicCache) else None
        offloading = getattr(cache, "offloading", False)
        if layers is None or offloading or (
                self.layer_idx < len(layers) and type(layers[self.layer_idx]) is not DynamicLayer):
            raise DscError(f"dsc-patched attention: supports transformers' DynamicCache without offloading, got "
                           f"{type(cache).__name__}{' with offloading' if offloading else ''}")
        held = cache.get_seq_length(self.layer_idx)
        rows = getattr(layers[self.layer_idx], "dsc_rows", None) if held else None
        if held and rows is None:
            raise DscError("dsc-patched attention: this cache was filled by unpatched attention; start a new one")
        if rows is None:
            return self._fresh(B, max(MIN_CAPACITY, T))
        layer, latent, pads = layers[self.layer_idx], rows.latent, rows.pads
        source = layer.keys[:, 0, -1, 0].long().to(latent.seqlens.device)  # each row's dsc row
        if source.shape[0] != latent.batch_size or not bool(
                (source == torch.arange(latent.batch_size, device=source.device)).all()):
            latent, pads = latent.resized(source, latent.max_seq_len), pads[source.to(pads.device)]
            # every placeholder now names the new rows, so a later crop reads them right
            layer.keys, layer.values = _row_marks(source.shape[0], held, layer.keys.device)
        want = held - pads.to(latent.seqlens.device)
        if bool((want < 0).any()):
            raise DscError("dsc-patched attention: the cache was cropped into a row's left padding")
        if bool((latent.seqlens < want).any()):
            raise DscError("dsc-patched attention: the cache holds tokens dsc never saw; start a new one")
        if bool((latent.seqlens != want).any()):
            latent.truncate(want)
        if held + T > latent.max_seq_len:
            latent = latent.resized(torch.arange(B, device=latent.seqlens.device),
                                    max(2 * latent.max_seq_len, held + T))
        return DscRows(latent, pads)

    def extra_repr(self) -> str:
        return f"layer_idx={self.layer_idx}"
