"""Graph -> graph optimisation passes and the manager that runs them."""

from dsc.passes.manager import (DEFAULT_PIPELINE, PASSES, PassContext, PassManager, all_passes, register_pass,
                                resolve_pipeline)

__all__ = ["PassManager", "PassContext", "register_pass", "resolve_pipeline", "PASSES", "DEFAULT_PIPELINE", "all_passes"]
