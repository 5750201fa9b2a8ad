"""The tvm backend's kernels: each kernel file registers its kernels and kernel
definitions here (dsc.codegen.kernel_set), under the names the group kinds call them by."""

from __future__ import annotations

import inspect

from dsc.codegen.kernel_set import KernelSet
from dsc.codegen.tvm.build import kernel_key

KERNELS = KernelSet("tvm", "dsc.codegen.tvm")


def kernel_defs(group, target: str = "llvm") -> list[tuple[str, object]]:
    """(key, definition) of every kernel a group may launch, from the IR alone (static
    dtypes, widths and attributes): what `dsc compile --backend tvm` emits, under the
    keys the launchers ask for (build.kernel_key). An einsum lists both GEMM layouts
    (the launcher picks by its operand's layout). Each kind's listing is
    listing(group, d), d(define, *args) -> (key, definition)."""
    def d(define, *args):
        made = define(*args, target=target) if "target" in inspect.signature(define).parameters else define(*args)
        return kernel_key(define, args), made

    return KERNELS.listing(group, d)
