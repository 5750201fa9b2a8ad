"""The framework-facing contract: weight loading in every layout, clear errors on bad
input, and a cache that is left as it was when a call is refused."""

import pytest
import torch

import dsc
from dsc import CacheError, Config, ConfigError, InputError, WeightError
from dsc.nn import MLA, MoE, random_checkpoint
from util import F32_TOL, assert_close

CFG = Config.preset("tiny-v3")


@pytest.fixture
def mla():
    m = dsc.nn.MLA(CFG)
    m.load_state_dict(random_checkpoint(CFG, "mla", seed=3))
    return m


def test_weights_are_parameters_under_checkpoint_names(mla):
    names = set(mla.state_dict())
    assert names == set(random_checkpoint(CFG, "mla"))
    assert all(not p.requires_grad for p in mla.parameters())


def test_unloaded_module_refuses_to_run():
    m = MLA(CFG)
    assert not m.loaded
    with pytest.raises(WeightError, match="call load_state_dict first"):
        m(torch.randn(1, 1, CFG.hidden_size), torch.zeros(1, 1, dtype=torch.int64), m.new_cache(1, 4))


def test_load_state_dict_lists_missing_and_unexpected_by_name():
    sd = random_checkpoint(CFG, "mla")
    sd.pop("kv_b_proj.weight")
    sd.pop("o_proj.weight")
    sd["q_proj.weight"] = torch.zeros(1)
    with pytest.raises(WeightError, match=r"missing: kv_b_proj.weight, o_proj.weight; unexpected: q_proj.weight"):
        MLA(CFG).load_state_dict(sd)
    result = MLA(CFG).load_state_dict(sd, strict=False)
    assert result.missing_keys == ["kv_b_proj.weight", "o_proj.weight"] and result.unexpected_keys == ["q_proj.weight"]


def test_load_state_dict_names_mis_shaped_weights():
    sd = random_checkpoint(CFG, "mla")
    sd["o_proj.weight"] = sd["o_proj.weight"][:, :-1]
    with pytest.raises(WeightError, match=r"o_proj.weight \[64, 63\] \(expected \[64, 64\]\)"):
        MLA(CFG).load_state_dict(sd)


def test_moe_loads_every_expert_layout_to_the_same_function():
    sd = random_checkpoint(CFG, "moe", seed=4)
    E = CFG.n_routed_experts
    hf5 = {k: v for k, v in sd.items() if not k.startswith("experts.")}
    hf5["experts.gate_up_proj"] = torch.stack(
        [torch.cat([sd[f"experts.{i}.gate_proj.weight"], sd[f"experts.{i}.up_proj.weight"]]) for i in range(E)])
    hf5["experts.down_proj"] = torch.stack([sd[f"experts.{i}.down_proj.weight"] for i in range(E)])
    x = torch.randn(7, CFG.hidden_size)
    a, b, c = MoE(CFG), MoE(CFG), MoE(CFG)
    a.load_state_dict(sd)
    b.load_state_dict(hf5)
    c.load_state_dict(a.state_dict())  # dsc's own stacked layout loads back
    assert torch.equal(a(x), b(x)) and torch.equal(a(x), c(x))


def test_moe_names_a_missing_expert():
    sd = random_checkpoint(CFG, "moe")
    sd.pop("experts.5.up_proj.weight")
    sd["experts.99.up_proj.weight"] = torch.zeros(1)
    with pytest.raises(WeightError, match=r"missing: experts.5.up_proj.weight; unexpected: experts.99.up_proj.weight"):
        MoE(CFG).load_state_dict(sd)


def test_moe_refuses_two_layouts_at_once():
    sd = random_checkpoint(CFG, "moe")
    sd["experts.gate_up_proj"] = torch.zeros(CFG.n_routed_experts, 2 * CFG.moe_intermediate_size, CFG.hidden_size)
    with pytest.raises(WeightError, match="more than one layout"):
        MoE(CFG).load_state_dict(sd)


def test_moe_keeps_the_input_shape():
    moe = MoE(CFG)
    moe.load_state_dict(random_checkpoint(CFG, "moe"))
    x = torch.randn(2, 3, 5, CFG.hidden_size)
    flat = moe(x.reshape(-1, CFG.hidden_size))
    assert_close(moe(x).reshape(-1, CFG.hidden_size), flat, F32_TOL)


@pytest.mark.parametrize("x,pos,message", [
    (torch.randn(1, 2, 32), None, r"x: expected last dim hidden_size=64, got shape \[1, 2, 32\]"),
    (torch.randn(2, 64), None, r"x: expected rank 3 \[batch, tokens, hidden\], got shape \[2, 64\]"),
    (torch.randn(1, 2, 64, dtype=torch.float64), None, "x: expected dtype torch.float32 .*, got torch.float64"),
    (torch.randn(1, 2, 64), torch.zeros(1, 2, dtype=torch.int32), r"positions: expected torch.int64 of shape \[1, 2\]"),
    (torch.randn(1, 2, 64), torch.zeros(1, 3, dtype=torch.int64), "positions: expected"),
    (torch.randn(1, 0, 64), torch.zeros(1, 0, dtype=torch.int64), "needs at least one row and one token"),
])
def test_bad_calls_name_expected_and_got(mla, x, pos, message):
    pos = torch.zeros(x.shape[0], x.shape[1], dtype=torch.int64) if pos is None and x.dim() == 3 else pos
    with pytest.raises(InputError, match=message):
        mla(x, pos if pos is not None else torch.zeros(1, 1, dtype=torch.int64), mla.new_cache(1, 8))


def test_cache_of_another_shape_is_refused(mla):
    x, pos = torch.randn(2, 1, 64), torch.zeros(2, 1, dtype=torch.int64)
    with pytest.raises(InputError, match="cache: holds 1 rows, x has 2"):
        mla(x, pos, mla.new_cache(1, 8))
    other = MLA(Config.preset("tiny-v2-lite").replace(kv_lora_rank=16))
    with pytest.raises(InputError, match="cache: built for rows of 24"):
        mla(x, pos, other.new_cache(2, 8))


def test_appending_past_capacity_raises_and_leaves_the_cache_as_it_was(mla):
    cache = mla.new_cache(2, 5)
    x = torch.randn(2, 4, 64)
    mla(x, torch.arange(4).repeat(2, 1), cache)
    pages, lens = cache.pages.clone(), cache.seqlens.clone()
    full = r"cache full: appending 2 token\(s\) would pass max_seq_len 5 .*row 0 holds 4"
    with pytest.raises(CacheError, match=full):
        mla(torch.randn(2, 2, 64), torch.arange(4, 6).repeat(2, 1), cache)
    assert torch.equal(cache.pages, pages) and torch.equal(cache.seqlens, lens)
    mla(torch.randn(2, 1, 64), torch.full((2, 1), 4), cache)  # exactly to capacity is fine
    assert cache.lengths() == [5, 5]


def test_truncate_refuses_to_grow_a_row(mla):
    cache = mla.new_cache(2, 8)
    mla(torch.randn(2, 3, 64), torch.arange(3).repeat(2, 1), cache)
    with pytest.raises(CacheError, match="must lie in"):
        cache.truncate([4, 1])
    cache.truncate([1, 3])
    assert cache.lengths() == [1, 3]


@pytest.mark.parametrize("page_size", [0, -1, 1.5, True, "16", 10 ** 6])
def test_page_size_is_validated_before_anything_is_built(page_size):
    with pytest.raises(ConfigError, match=r"page_size: must be an int in 1\.\.4096"):
        MLA(CFG, page_size=page_size)


@pytest.mark.parametrize("backend", ["reference", "triton", "tvm"])
@pytest.mark.parametrize("entry", ["one past the pool", -1, 10 ** 6])
def test_a_block_table_naming_no_page_is_refused_and_the_cache_left_as_it_was(backend, entry):
    if backend != "reference":
        pytest.importorskip(backend)
    m = MLA(CFG, backend=backend, page_size=4)
    m.load_state_dict(random_checkpoint(CFG, "mla", seed=3))
    cache = m.new_cache(2, 12)
    m(torch.randn(2, 3, 64), torch.arange(3).repeat(2, 1), cache)
    # row 1 holds 3 tokens in its first page; the next 2 tokens reach its second page
    cache.block_table[1, 1] = cache.pages.shape[0] if entry == "one past the pool" else entry
    pages, lens = cache.pages.clone(), cache.seqlens.clone()
    bad = cache.pages.shape[0] if entry == "one past the pool" else entry
    with pytest.raises(CacheError, match=rf"LatentCache.block_table\[1, 1\] = {bad} names no page"):
        m(torch.randn(2, 2, 64), torch.arange(3, 5).repeat(2, 1), cache)
    assert torch.equal(cache.pages, pages) and torch.equal(cache.seqlens, lens)


def test_negative_cache_lengths_are_refused(mla):
    cache = mla.new_cache(1, 8)
    cache.seqlens.fill_(-3)
    with pytest.raises(CacheError, match="seqlens must be >= 0"):
        mla(torch.randn(1, 1, 64), torch.zeros(1, 1, dtype=torch.int64), cache)


@pytest.mark.parametrize("layer", ["mla", "moe"])
@pytest.mark.parametrize("where", ["first", "last"])
def test_a_refused_load_leaves_the_module_exactly_as_it_was(layer, where):
    """Loading is all or nothing: a meta tensor anywhere in the dict is refused by name
    and the module keeps every old weight and every weight folded from them."""
    m = MLA(CFG) if layer == "mla" else MoE(CFG)
    m.load_state_dict(random_checkpoint(CFG, layer, seed=1))
    assert m.graph.folds  # the default passes fold (absorb's and fuse_experts' weights)
    before = {k: v.clone() for k, v in [*m.named_parameters(), *m.named_buffers()]}
    fresh = random_checkpoint(CFG, layer, seed=2)
    name = list(fresh)[0 if where == "first" else -1]
    fresh[name] = fresh[name].to("meta")
    with pytest.raises(WeightError, match=rf"{name}: a tensor on the meta device holds no values"):
        m.load_state_dict(fresh)
    after = dict([*m.named_parameters(), *m.named_buffers()])
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], v) for k, v in before.items())


@pytest.mark.parametrize("kwargs,message", [
    (dict(dtype=torch.float64), "dtype: dsc modules run in"),
    (dict(dtype=torch.int8), "dtype: dsc modules run in"),
    (dict(device="tpu"), "device: "),
    (dict(backend="cuda-graphs"), "backend: unknown backend 'cuda-graphs'"),
    (dict(passes="absorb,bogus"), "passes: unknown pass 'bogus'; known: default, none, absorb"),
])
def test_bad_module_arguments(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        MLA(CFG, **kwargs)


def test_cuda_device_without_cuda_is_refused():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        MoE(CFG, device="cuda")


def test_modules_for_huge_models_build_without_memory():
    m = MoE(Config.preset("deepseek-v3"))  # 42 GiB of float32 weights, on the meta device
    assert m.weight_bytes == 256 * 3 * 7168 * 2048 * 4 + 256 * 7168 * 4 + 256 * 4 + 3 * 7168 * 2048 * 4
    assert not m.loaded


def test_folded_weights_follow_the_module_and_stay_out_of_state_dict():
    m = MoE(CFG)  # default passes: fused expert weights are folded at load
    sd = random_checkpoint(CFG, "moe")
    m.load_state_dict(sd)
    assert m.graph.folds and all(name not in m.state_dict() for name, _ in m.graph.folds)
    buffers = dict(m.named_buffers())
    assert all(name in buffers for name, _ in m.graph.folds)
    x = torch.randn(5, CFG.hidden_size)
    before = m(x)
    m.to("cpu")
    assert torch.equal(m(x), before) and m.device.type == "cpu"
