"""What a run will need of memory, and the check that refuses flags before anything is
allocated (an out-of-memory crash halfway helps nobody): shared by dsc run, bench and tune."""

from __future__ import annotations

import math

import torch

from dsc.config import Config
from dsc.errors import InputError

# Running and checking a layer holds its checkpoint tensors, the module's copy (experts
# stacked), and the float32 reference's view: about three times the checkpoint; plus
# the folded weights; plus float32 working copies of the largest weight while folds
# (FP8 quantisation) run over it.
CHECKPOINT_COPIES = 3
FOLD_WORKSPACE_BYTES_PER_VALUE = 8


def memory_needed(module) -> int:
    largest = max((math.prod(int(d) for d in p.shape) for p in module.graph.params()), default=0)
    return (CHECKPOINT_COPIES * module.checkpoint_bytes + module.weight_bytes
            + (FOLD_WORKSPACE_BYTES_PER_VALUE * largest if module.graph.folds else 0))


# Where free memory cannot be read (no /proc/meminfo), the working memory a run's flags
# ask for is held to this instead.
UNKNOWN_MEMORY_BOUND = 64 << 30
FLOAT32_BYTES = 4


def mla_working_bytes(cfg: Config, batch: int, new: int, context: int) -> int:
    """About the activation memory of one MLA call over `batch` rows of `new` tokens
    with `context` tokens in the cache (new ones included), in float32 as the
    reference holds it: inputs and outputs, the latent caches, the queries, keys and
    values expanded per head, and the attention scores (a few copies of each)."""
    H = cfg.num_attention_heads
    per_token = 4 * cfg.hidden_size + 2 * cfg.latent_dim + H * (2 * cfg.qk_head_dim + cfg.v_head_dim)
    return FLOAT32_BYTES * (batch * context * per_token + 3 * batch * H * new * context)


def moe_working_bytes(cfg: Config, tokens: int) -> int:
    """About the activation memory of one MoE call on `tokens` tokens (float32): inputs
    and outputs, router scores, and each routed and shared expert's hidden rows."""
    experts = cfg.num_experts_per_tok + cfg.n_shared_experts
    per_token = 4 * cfg.hidden_size + 3 * cfg.n_routed_experts + experts * (2 * cfg.hidden_size
                                                                              + 3 * cfg.moe_intermediate_size)
    return FLOAT32_BYTES * tokens * per_token


def check_working_memory(asks: list[tuple[str, str, int]], device: torch.device) -> None:
    """Refuse flags whose activations alone would not fit (asks: (flags, what, bytes)),
    before anything is allocated: an out-of-memory crash halfway helps nobody."""
    have = available_bytes(device)
    bound = int(0.8 * have) if have is not None else UNKNOWN_MEMORY_BOUND
    for flags, what, need in asks:
        if need > bound:
            raise InputError(f"{flags}: {what} would need about {human_bytes(need)} of working memory, above the "
                             f"{human_bytes(bound)} this machine can give it" + (
                                 " (80% of its free memory)" if have is not None else ""))


def available_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return ""
