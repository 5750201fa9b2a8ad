"""Kernels whose loop bounds are kernel scalars (an argument, a loaded value) run under every
Triton the project allows: Triton 3.6's interpreter turned such a bound into an int with
int(1-element array), which numpy 2.4 refuses (triton#9171); dsc's interpreter set-up
squeezes it as Triton 3.9 does."""

import torch

from dsc.codegen.triton.build import KernelSpec, load_kernel

SOURCE = '''
import triton
import triton.language as tl


@triton.jit
def bounded_sums(x_ptr, n_ptr, out_ptr, N, BLOCK: tl.constexpr):
    i = tl.arange(0, BLOCK)
    acc = tl.zeros([BLOCK], tl.float32)
    for k0 in range(0, N, BLOCK):  # a bound from an argument
        acc += tl.load(x_ptr + k0 + i, mask=k0 + i < N, other=0.0)
    tl.store(out_ptr + i, acc)
    stop = tl.load(n_ptr)
    acc = tl.zeros([BLOCK], tl.float32)
    for k0 in range(0, stop, BLOCK):  # a bound read from memory
        acc += tl.load(x_ptr + k0 + i, mask=k0 + i < stop, other=0.0)
    tl.store(out_ptr + BLOCK + i, acc)
'''

SPEC = KernelSpec("bounded_sums", SOURCE)


def test_loop_bounds_from_arguments_and_memory():
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.arange(40, dtype=torch.float32, device=device)
    out = torch.zeros(2, 16, device=device)
    load_kernel(SPEC, device)[(1,)](x, torch.tensor([24], dtype=torch.int32, device=device), out, 40, BLOCK=16)
    want = torch.zeros(2, 16)
    for k0 in range(0, 40, 16):
        want[0, : min(16, 40 - k0)] += torch.arange(k0, min(k0 + 16, 40))
    for k0 in range(0, 24, 16):
        want[1, : min(16, 24 - k0)] += torch.arange(k0, min(k0 + 16, 24))
    assert torch.equal(out.cpu(), want)
