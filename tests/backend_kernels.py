"""The compiled backends' kernels behind one calling convention (dsc.codegen.lowering's),
for tests that hold both to the same reference."""


def backend_kernels(backend: str):
    if backend == "triton":
        import dsc.codegen.triton  # noqa: F401  (before triton: enables its interpreter without CUDA)
        from dsc.codegen.triton.lower import KERNELS
    else:
        from dsc.codegen.tvm.lower import KERNELS
    return KERNELS
