"""The triton backend's kernels: each kernel file registers its kernels and compile jobs
here (dsc.codegen.kernel_set), under the names the group kinds call them by."""

from dsc.codegen.kernel_set import KernelSet

KERNELS = KernelSet("triton", "dsc.codegen.triton")
