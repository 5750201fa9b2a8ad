"""dsc.nn.MLA: Multi-head Latent Attention over a paged latent cache."""

from __future__ import annotations

import torch

from dsc.builders.mla import PAGE_SIZE
from dsc.config import Config
from dsc.errors import ConfigError, InputError
from dsc.ir.types import to_torch
from dsc.nn import layer_op
from dsc.nn.graph_module import GraphModule
from dsc.nn.latent_cache import LatentCache

MAX_PAGE_SIZE = 4096  # FlashMLA and vLLM use 64; a page is one block-table entry's worth of tokens


class MLA(GraphModule):
    """One DeepSeek attention layer (`self_attn` of a checkpoint layer).

    Weights (load_state_dict): q_a_proj, q_a_layernorm, q_b_proj (or q_proj when
    q_lora_rank is null), kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj, o_proj, each
    `.weight`.

    `mla(x, positions, cache)` with x [B, T, hidden] and positions [B, T] int64 runs T
    new tokens per row: they attend causally among themselves and to every token the
    row already holds in `cache`, and their latents are appended. The same call serves
    prefill (T > 1) and decode (T = 1).

    passes: "default" (absorb, fuse_experts, fold, cse, dce), "none", or a list of pass
    names (add "fp8" and "fp8_kv" for FP8 weights and an FP8 latent cache). target:
    "sm90", "sm80" or "cpu", the machine the passes compile for (absorb's crossover,
    fp8's mode); by default the CUDA device's, else sm90.
    """

    def __init__(self, cfg: Config, backend: str = "reference", passes="default", dtype=torch.float32,
                 device="cpu", target: str | None = None, page_size: int = PAGE_SIZE):
        # before the graph: absorb's cost model would divide by it
        if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ConfigError(f"page_size: must be an int in 1..{MAX_PAGE_SIZE} (tokens per cache page), "
                              f"got {page_size!r}")
        super().__init__(cfg, "mla", backend, passes, dtype, device, target, page_size)
        self.page_size = page_size

    def new_cache(self, batch_size: int, max_seq_len: int) -> LatentCache:
        """A paged cache in the layout the compiled graph keeps: latent rows in the
        module's dtype, or packed FP8 rows (uint8) after the fp8_kv pass."""
        row = self.graph.input("cache")
        return LatentCache.allocate(batch_size, max_seq_len, self.page_size, int(row.shape[-1]),
                                    to_torch(row.dtype), self.device)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, cache: LatentCache) -> torch.Tensor:
        self._check_activation(x, "x", 3, self.cfg.hidden_size)
        B, T = x.shape[0], x.shape[1]
        if T == 0 or B == 0:
            raise InputError(f"x: needs at least one row and one token, got shape {list(x.shape)}")
        if not isinstance(positions, torch.Tensor) or positions.shape != (B, T) or positions.dtype != torch.int64 \
                or positions.device.type != self.device.type:
            got = f"{positions.dtype}{list(positions.shape)} on {positions.device}" \
                if isinstance(positions, torch.Tensor) else type(positions).__name__
            raise InputError(f"positions: expected torch.int64 of shape [{B}, {T}] on {self.device}, got {got}")
        if not isinstance(cache, LatentCache):
            raise InputError(f"cache: expected a LatentCache from new_cache(), got {type(cache).__name__}")
        if cache.batch_size != B:
            raise InputError(f"cache: holds {cache.batch_size} rows, x has {B}")
        row = self.graph.input("cache")
        want = (int(row.shape[-1]), to_torch(row.dtype), self.page_size, self.device.type)
        if (cache.row_width, cache.pages.dtype, cache.page_size, cache.pages.device.type) != want:
            raise InputError(f"cache: built for rows of {cache.row_width} x {cache.pages.dtype} in pages of "
                             f"{cache.page_size} on {cache.pages.device}; this module needs "
                             f"{want[0]} x {want[1]} in pages of {self.page_size} on {self.device}")
        self._check_loaded()
        # one opaque op (see layer_op.py): checks the cache's room, appends, advances the lengths
        call = layer_op.mla_layer if torch.compiler.is_compiling() else layer_op.run_mla
        return call(x, positions, cache.pages, cache.block_table, cache.seqlens, self._weight_list(), self._op_key,
                    cache.max_seq_len)
