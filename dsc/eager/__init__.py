"""An independent plain-PyTorch implementation of the DeepSeek layers.

It follows DeepSeek's own modeling code and shares nothing with the IR: no graph, no
paged cache (each row keeps a contiguous latent history), its own YaRN and rotary
code, checkpoint weight names as stored. Tests and `dsc run` compare every backend
against it; it lives in the package (not only in tests/) so `dsc run` can report
that error on any machine.
"""

from dsc.eager.mla import EagerMLA
from dsc.eager.moe import eager_moe

__all__ = ["EagerMLA", "eager_moe"]
