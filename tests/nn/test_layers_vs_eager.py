"""The modules (graph + interpreter) against the independent eager implementation, on
drawn configs, shapes, context lengths and weights."""

import torch
from hypothesis import given
from hypothesis import strategies as st

from dsc.eager import EagerMLA, eager_moe
from dsc.nn import MLA, MoE, random_checkpoint
from strategies import configs, mla_calls, seeds
from util import BF16_TOL, F32_TOL, assert_close


def _inputs(cfg, b, t, start, gen, dtype=torch.float32):
    x = torch.randn(b, t, cfg.hidden_size, generator=gen).to(dtype)
    pos = (start[:, None] + torch.arange(t)[None]).to(torch.int64)
    return x, pos


@given(configs(), mla_calls(), seeds)
def test_mla_prefill_then_decode_matches_eager(cfg, calls, seed):
    batch, prefill, chunks = calls
    sd = random_checkpoint(cfg, "mla", seed=seed)
    mla = MLA(cfg)
    mla.load_state_dict(sd)
    eager = EagerMLA(cfg, sd)
    total = prefill + sum(chunks)
    cache, rows = mla.new_cache(batch, total), eager.new_state(batch)
    gen = torch.Generator().manual_seed(seed)
    start = torch.zeros(batch, dtype=torch.int64)
    for t in [prefill, *chunks]:
        x, pos = _inputs(cfg, batch, t, start, gen)
        assert_close(mla(x, pos, cache), eager(x, pos, rows), F32_TOL, f"MLA chunk of {t}")
        start += t
    assert cache.lengths() == [total] * batch


@given(configs(), st.integers(1, 3), st.integers(2, 10), seeds)
def test_decode_after_prefill_equals_one_longer_prefill(cfg, batch, length, seed):
    sd = random_checkpoint(cfg, "mla", seed=seed)
    mla = MLA(cfg)
    mla.load_state_dict(sd)
    gen = torch.Generator().manual_seed(seed)
    x, pos = _inputs(cfg, batch, length, torch.zeros(batch, dtype=torch.int64), gen)
    whole = mla(x, pos, mla.new_cache(batch, length))
    cache = mla.new_cache(batch, length)
    split = length // 2
    parts = [mla(x[:, :split], pos[:, :split], cache)]
    for t in range(split, length):
        parts.append(mla(x[:, t:t + 1], pos[:, t:t + 1], cache))
    assert_close(torch.cat(parts, dim=1), whole, F32_TOL, "decode vs prefill")


@given(configs(), seeds, st.data())
def test_rows_of_different_lengths(cfg, seed, data):
    """Rows rolled back to different lengths attend only to what each still holds."""
    batch = 3
    prefill = data.draw(st.integers(2, 8))
    keep = data.draw(st.lists(st.integers(0, prefill), min_size=batch, max_size=batch))
    sd = random_checkpoint(cfg, "mla", seed=seed)
    mla = MLA(cfg)
    mla.load_state_dict(sd)
    eager = EagerMLA(cfg, sd)
    gen = torch.Generator().manual_seed(seed)
    cache = mla.new_cache(batch, prefill + 2)
    x, pos = _inputs(cfg, batch, prefill, torch.zeros(batch, dtype=torch.int64), gen)
    mla(x, pos, cache)
    cache.truncate(keep)
    rows = []
    for b in range(batch):
        row = eager.new_state(1)
        if keep[b]:
            eager(x[b:b + 1, :keep[b]], pos[b:b + 1, :keep[b]], row)
        rows.append(row)
    x2, pos2 = _inputs(cfg, batch, 2, torch.tensor(keep), gen)
    out = mla(x2, pos2, cache)
    ref = torch.cat([eager(x2[b:b + 1], pos2[b:b + 1], rows[b]) for b in range(batch)])
    assert_close(out, ref, F32_TOL, "ragged rows")
    assert cache.lengths() == [k + 2 for k in keep]


@given(configs(), st.integers(1, 40), seeds)
def test_moe_matches_eager(cfg, tokens, seed):
    sd = random_checkpoint(cfg, "moe", seed=seed)
    moe = MoE(cfg)
    moe.load_state_dict(sd)
    x = torch.randn(tokens, cfg.hidden_size, generator=torch.Generator().manual_seed(seed))
    assert_close(moe(x), eager_moe(cfg, sd, x), F32_TOL, "MoE")


@given(configs(), seeds)
def test_bf16_modules_stay_near_the_float32_reference(cfg, seed):
    sd = random_checkpoint(cfg, "mla", seed=seed)
    mla = MLA(cfg, dtype=torch.bfloat16)
    mla.load_state_dict(sd)
    gen = torch.Generator().manual_seed(seed)
    x, pos = _inputs(cfg, 2, 5, torch.zeros(2, dtype=torch.int64), gen)
    ref = EagerMLA(cfg, sd)(x, pos, [None, None])
    out = mla(x.bfloat16(), pos, mla.new_cache(2, 5))
    assert out.dtype == torch.bfloat16
    assert_close(out, ref, BF16_TOL, "bf16 MLA")
    sdm = random_checkpoint(cfg, "moe", seed=seed)
    moe = MoE(cfg, dtype=torch.bfloat16)
    moe.load_state_dict(sdm)
    xm = torch.randn(16, cfg.hidden_size, generator=gen)
    # Routing near-ties may flip in bf16; route on the bf16-rounded input in both.
    xm = xm.bfloat16().float()
    assert_close(moe(xm.bfloat16()), eager_moe(cfg, {k: v.bfloat16().float() if "bias" not in k else v
                                                    for k, v in sdm.items()}, xm), BF16_TOL, "bf16 MoE")


def test_eager_reference_shares_nothing_with_the_ir():
    import subprocess
    import sys

    code = "import sys, dsc.eager; print(sorted(m for m in sys.modules if m.startswith('dsc.')))"
    mods = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "dsc.eager" in mods
    for stage in ("dsc.ir", "dsc.builders", "dsc.nn", "dsc.passes", "dsc.runtime"):
        assert f"'{stage}" not in mods, f"dsc.eager imports {stage}"
