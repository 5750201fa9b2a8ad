"""Config -> naive IR graphs of the DeepSeek layers (the input of every pass)."""

from dsc.builders.mla import PAGE_SIZE, build_mla
from dsc.builders.moe import build_moe

__all__ = ["build_mla", "build_moe", "PAGE_SIZE"]
