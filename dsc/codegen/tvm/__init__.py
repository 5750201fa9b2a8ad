"""IR kernel groups -> TVM TensorIR -> llvm (CPU) (issue 5, in progress: row fusion,
GEMM and paged MLA attention so far). TVM is an optional dependency: `pip install 'dsc-compiler[tvm]'`."""
