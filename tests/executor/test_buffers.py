"""Intermediate buffers planned once per shape: the placement never lets two live values
share bytes, the workspace is reused call after call, and what the caller gets back is
never overwritten by the next call."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from dsc.config import Config
from dsc.nn import MLA, MoE, random_checkpoint
from dsc.executor.buffers import ALIGN, place


@given(st.lists(st.tuples(st.integers(1, 5000), st.integers(0, 20), st.integers(0, 6)), min_size=1, max_size=30))
def test_buffers_alive_together_never_overlap(specs):
    sizes = [s for s, _, _ in specs]
    lifetimes = [(a, a + d) for _, a, d in specs]
    offsets, total = place(sizes, lifetimes)
    for i in range(len(sizes)):
        assert offsets[i] % ALIGN == 0 and offsets[i] + sizes[i] <= total
        for j in range(i):
            together = not (lifetimes[i][1] < lifetimes[j][0] or lifetimes[j][1] < lifetimes[i][0])
            apart = offsets[i] + sizes[i] <= offsets[j] or offsets[j] + sizes[j] <= offsets[i]
            assert apart or not together, (i, j)
    # never worse than giving every buffer its own aligned slot
    assert total <= sum(-(-s // ALIGN) * ALIGN for s in sizes)


@pytest.mark.parametrize("layer", ["mla", "moe"])
def test_the_workspace_is_planned_once_and_reused(layer):
    pytest.importorskip("triton")
    cfg = Config.preset("tiny-v3")
    module = (MLA if layer == "mla" else MoE)(cfg, backend="triton")
    module.load_state_dict(random_checkpoint(cfg, layer, seed=1))
    executor = module._runner
    gen = torch.Generator().manual_seed(1)
    if layer == "mla":
        cache = module.new_cache(2, 8)
        x = torch.randn(2, 3, cfg.hidden_size, generator=gen)
        pos = torch.arange(3).repeat(2, 1)
        first = module(x, pos, cache)
        kept = first.clone()
        cache.truncate([0, 0])
        second = module(torch.randn(2, 3, cfg.hidden_size, generator=gen), pos, cache)
    else:
        first = module(torch.randn(5, cfg.hidden_size, generator=gen))
        kept = first.clone()
        second = module(torch.randn(5, cfg.hidden_size, generator=gen))
    assert len(executor._plans) == 1  # one shape, one plan
    (order, arena), = executor._plans.values()
    assert len(arena._storage) == 1 and arena.slots  # one workspace, allocated once
    assert torch.equal(first, kept) and not torch.equal(first, second)  # outputs are the caller's
    planned = sum(slot.nbytes for slot in arena.slots.values())
    assert arena.total < planned  # values that are never alive together share bytes

