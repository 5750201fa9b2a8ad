"""torch.compile(fullgraph=True) over dsc.nn.MLA and dsc.nn.MoE: no graph break (fullgraph
raises on one), and prefill then decode give what the independent eager layers give, on
every backend. Inductor must also update the latent cache in place (no per-step copy)."""

import pytest
import torch

import dsc
from dsc.eager import EagerMLA, eager_moe
from dsc.errors import CacheError
from dsc.nn import MLA, MoE, random_checkpoint
from util import COMPILED_BACKENDS, F32_TOL, assert_close

BACKENDS = ["reference", *COMPILED_BACKENDS]


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _steps(cfg, batch, prefill, decode, seed):
    g = torch.Generator().manual_seed(seed)
    pos = torch.arange(prefill).expand(batch, prefill).contiguous()
    yield torch.randn(batch, prefill, cfg.hidden_size, generator=g), pos
    for s in range(decode):
        yield torch.randn(batch, 1, cfg.hidden_size, generator=g), torch.full((batch, 1), prefill + s)


def loaded(cls, preset, backend, seed):
    """(cfg, weights, module with them loaded, torch.compile(module, fullgraph=True))."""
    cfg = dsc.Config.preset(preset)
    sd = random_checkpoint(cfg, "mla" if cls is MLA else "moe", seed=seed)
    module = cls(cfg, backend=backend)
    module.load_state_dict(sd)
    return cfg, sd, module, torch.compile(module, fullgraph=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("preset", ["tiny-v2", "tiny-v3"])
def test_compiled_mla_prefill_and_decode_match_eager(preset, backend):
    cfg, sd, mla, compiled = loaded(MLA, preset, backend, seed=3)
    eager = EagerMLA(cfg, sd)
    cache, rows = mla.new_cache(2, 16), eager.new_state(2)
    for i, (x, pos) in enumerate(_steps(cfg, 2, 5, 3, seed=4)):
        out = compiled(x, pos, cache)
        assert_close(out, eager(x, pos, rows), F32_TOL, f"compiled MLA step {i} ({backend})")
    assert cache.lengths() == [8, 8]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("preset", ["tiny-v2", "tiny-v3"])
def test_compiled_moe_matches_eager(preset, backend):
    cfg, sd, _, compiled = loaded(MoE, preset, backend, seed=5)
    g = torch.Generator().manual_seed(6)
    for shape in [(2, 7, cfg.hidden_size), (2, 1, cfg.hidden_size), (3, cfg.hidden_size)]:  # prefill, decode
        x = torch.randn(*shape, generator=g)
        assert_close(compiled(x), eager_moe(cfg, sd, x), F32_TOL, f"compiled MoE {list(shape)} ({backend})")


def test_inductor_appends_to_the_cache_in_place():
    """The layer op declares the cache mutated; inductor re-inplaces it, so the kernels
    write the caller's pages (a copy of the cache per step would cost its whole size)."""
    cfg = dsc.Config.preset("tiny-v3")
    mla = MLA(cfg)
    mla.load_state_dict(random_checkpoint(cfg, "mla", seed=1))
    seen = []
    execute = mla._execute

    def spy(inputs, weights):
        seen.append(inputs["cache"].data_ptr())
        return execute(inputs, weights)

    mla._execute = spy
    cache = mla.new_cache(2, 8)
    before = cache.pages.clone()
    x, pos = next(_steps(cfg, 2, 3, 0, seed=2))
    torch.compile(mla, fullgraph=True)(x, pos, cache)
    assert seen == [cache.pages.data_ptr()]
    assert not torch.equal(cache.pages, before) and cache.lengths() == [3, 3]


def test_a_full_cache_is_refused_under_compile_and_left_unchanged():
    cfg = dsc.Config.preset("tiny-v3")
    mla = MLA(cfg)
    mla.load_state_dict(random_checkpoint(cfg, "mla", seed=1))
    compiled = torch.compile(mla, fullgraph=True)
    cache = mla.new_cache(1, 4)
    x, pos = next(_steps(cfg, 1, 3, 0, seed=2))
    compiled(x, pos, cache)
    pages = cache.pages.clone()
    with pytest.raises(CacheError, match="cache full"):
        compiled(x, pos + 3, cache)
    assert torch.equal(cache.pages, pages) and cache.lengths() == [3]


@pytest.mark.parametrize("backend", BACKENDS)
def test_layer_ops_pass_opcheck(backend):
    """The layer ops declare what they mutate (the cache's pages and lengths) and alias
    nothing: opcheck's schema test would catch an undeclared write."""
    cfg = dsc.Config.preset("tiny-v3")
    mla = MLA(cfg, backend=backend)
    mla.load_state_dict(random_checkpoint(cfg, "mla", seed=0))
    cache = mla.new_cache(2, 16)
    x, pos = next(_steps(cfg, 2, 3, 0, seed=1))
    args = (x, pos, cache.pages, cache.block_table, cache.seqlens, mla._weight_list(), mla._op_key, 16)
    assert set(torch.library.opcheck(torch.ops.dsc.mla_layer, args).values()) == {"SUCCESS"}
    moe = MoE(cfg, backend=backend)
    moe.load_state_dict(random_checkpoint(cfg, "moe", seed=0))
    args = (torch.randn(5, cfg.hidden_size), moe._weight_list(), moe._op_key)
    assert set(torch.library.opcheck(torch.ops.dsc.moe_layer, args).values()) == {"SUCCESS"}
