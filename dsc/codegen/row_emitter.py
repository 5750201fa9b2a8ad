"""The row kernels' shared emitter base: every node inside a fused row region is emitted
by its op's entry in the backend's table, tinygrad's `code_for_op` in small. The
backends differ in what a value is (a Triton source expression of the column index; a
TVM function of the index tuple), not in how an op finds its emitter, so a new row op
(an OpDef with row_wise = True) is one table entry per backend, and a test holds each
table against the ops the scheduler fuses."""

from __future__ import annotations

from typing import Callable, ClassVar

from dsc.errors import DscError
from dsc.ir.node import Node

# The ops a row region holds besides the row-wise ones: the paged cache's gather (and its
# FP8 decode), read through the block table as the region's loads.
REGION_READS = frozenset({"paged_gather", "kv_unpack_fp8"})


class RowEmitter:
    backend: ClassVar[str]
    EMIT: ClassVar[dict[str, Callable]]  # op name -> emit(emitter, node, *backend arguments) -> value

    def emit(self, n: Node, *args):
        fn = self.EMIT.get(n.op)
        if fn is None:
            raise DscError(f"{self.backend} row kernels have no expression for op {n.op!r}")
        return fn(self, n, *args)
