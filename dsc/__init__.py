"""dsc: a compiler for DeepSeek's Multi-head Latent Attention and DeepSeekMoE layers."""

from dsc.config import Config, Yarn
from dsc.errors import CacheError, ConfigError, DscError, InputError, IRError, ParseError, WeightError
from dsc.presets import PRESET_NAMES
from dsc.version import __version__

__all__ = ["Config", "Yarn", "ConfigError", "DscError", "InputError", "IRError", "ParseError", "WeightError",
           "CacheError", "PRESET_NAMES", "nn", "ops", "integrations", "__version__"]


# Subpackages that pull in torch (and, for some, triton or transformers) are imported on
# first use, so `import dsc; dsc.integrations.hf.patch(...)` works as written while
# `import dsc` alone stays light.
_LAZY_SUBMODULES = ("nn", "ops", "integrations", "eager", "ir", "passes", "builders", "codegen", "runtime", "executor",
                    "tune", "bench", "cli")


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"dsc.{name}")
    raise AttributeError(f"module 'dsc' has no attribute {name!r}")
