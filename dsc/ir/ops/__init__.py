"""Every op of the IR, one file per family. Importing this package registers them."""

from dsc.ir.ops import attention, control, fp8, grouped, leaf, linalg, moe, paged_cache, rope, tensor  # noqa: F401
