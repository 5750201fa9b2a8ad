"""The framework-facing modules: dsc.nn.MLA and dsc.nn.MoE."""

from dsc.nn.checkpoint import random_checkpoint
from dsc.nn.latent_cache import LatentCache
from dsc.nn.mla import MLA
from dsc.nn.moe import MoE

__all__ = ["MLA", "MoE", "LatentCache", "random_checkpoint"]
