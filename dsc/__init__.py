"""dsc: a compiler for DeepSeek's Multi-head Latent Attention and DeepSeekMoE layers."""

from dsc.config import Config, Yarn
from dsc.errors import CacheError, ConfigError, DscError, InputError, IRError, ParseError, WeightError
from dsc.presets import PRESET_NAMES

__version__ = "0.1.0"

__all__ = ["Config", "Yarn", "ConfigError", "DscError", "InputError", "IRError", "ParseError", "WeightError",
           "CacheError", "PRESET_NAMES", "nn", "__version__"]


def __getattr__(name):  # dsc.nn pulls in torch; import it only when asked for
    if name == "nn":
        import dsc.nn as nn

        return nn
    raise AttributeError(f"module 'dsc' has no attribute {name!r}")
