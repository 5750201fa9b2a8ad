"""IR kernel groups -> TVM TensorIR -> llvm (CPU) or CUDA source (launched through NVRTC).
TVM is an optional dependency: `pip install 'dsc-compiler[tvm]'`."""
