"""IR kernel groups -> TVM TensorIR -> llvm (CPU) (issue 5, in progress: the row-fusion
and GEMM groups so far). TVM is an optional dependency: `pip install dsc[tvm]`."""
