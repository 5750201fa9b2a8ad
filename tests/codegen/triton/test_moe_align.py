"""Triton's parallel moe_align: its chunking (programs of `chunk` slots, placed `sub` at a
time) drawn small so several programs and several placement steps run under the
interpreter, against the reference layout; ids outside 0..E-1 are never placed. Both
backends at the default tiles: tests/codegen/test_moe_kernels.py."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import dsc.codegen.triton  # noqa: F401  (before triton: enables its interpreter without CUDA)

pytest.importorskip("triton")
from dsc.codegen.triton.fused_moe import align  # noqa: E402
from dsc.ir.opdef import get_op  # noqa: E402
from strategies import seeds  # noqa: E402


def reference(ids, experts, block):
    return get_op("moe_align").reference([ids], {"experts": experts, "block": block})


@given(tokens=st.integers(1, 60), topk=st.integers(1, 4), experts=st.integers(4, 40), block=st.sampled_from([1, 4, 16]),
       chunk=st.sampled_from([4, 16, 64, 1024]), sub=st.sampled_from([4, 16, 64]), seed=seeds,
       skewed=st.booleans())
def test_every_chunking_gives_the_reference_layout(tokens, topk, experts, block, chunk, sub, seed, skewed):
    topk = min(topk, experts)
    g = torch.Generator().manual_seed(seed)
    pool = topk + 1 if skewed else experts  # skewed: most experts get no token, a few get them all
    ids = torch.stack([torch.randperm(max(pool, topk), generator=g)[:topk] for _ in range(tokens)])
    got = align(ids, experts, block, chunk=chunk, sub=min(sub, chunk))
    assert torch.equal(got, reference(ids, experts, block))


def test_ids_outside_the_experts_are_never_placed():
    ids = torch.tensor([[0, 5], [2, 0], [7, -1]])  # 5 and 7 and -1 are not among 4 experts
    got = align(ids, 4, 4, chunk=4, sub=4)
    nk = ids.numel()
    placed = sorted(got[got < nk].tolist())
    assert placed == [0, 2, 3]  # the slots of ids 0, 2, 0
    assert got.shape[0] == nk + 4 * 3 and got[:4].tolist()[:2] == [0, 3]
