"""Hypothesis strategies shared by every test: valid configs, call shapes, seeds."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st

from dsc.ir.build import inp, op, param
from dsc.config import Config, Yarn
from dsc.ir import Graph, sym


@st.composite
def yarns(draw):
    if draw(st.booleans()):
        return None
    return Yarn(
        factor=draw(st.sampled_from([1.0, 4.0, 40.0])),
        original_max_position_embeddings=draw(st.sampled_from([16, 64, 4096])),
        beta_fast=draw(st.sampled_from([32.0, 16.0])),
        beta_slow=draw(st.sampled_from([1.0, 2.0])),
        mscale=draw(st.sampled_from([1.0, 0.707, 0.0])),
        mscale_all_dim=draw(st.sampled_from([1.0, 0.707, 0.0])),
    )


@st.composite
def configs(draw, model_type=None):
    """A small valid config: every feature of the real models at CPU-test sizes."""
    n_group = draw(st.sampled_from([1, 2, 4]))
    method = draw(st.sampled_from(["greedy", "group_limited_greedy", "noaux_tc"]))
    per_group = draw(st.integers(2 if method == "noaux_tc" else 1, 4))
    experts = n_group * per_group
    topk_group = draw(st.integers(1, n_group))
    reachable = experts if method == "greedy" else topk_group * per_group
    return Config(
        model_type=model_type or draw(st.sampled_from(["deepseek_v2", "deepseek_v3"])),
        hidden_size=draw(st.sampled_from([16, 32, 48])),
        num_attention_heads=draw(st.integers(1, 4)),
        q_lora_rank=draw(st.sampled_from([None, 8, 24])),
        kv_lora_rank=draw(st.sampled_from([8, 16, 32])),
        qk_nope_head_dim=draw(st.sampled_from([4, 8, 16])),
        qk_rope_head_dim=draw(st.sampled_from([2, 4, 8])),
        v_head_dim=draw(st.sampled_from([4, 8, 16])),
        rope_theta=draw(st.sampled_from([10000.0, 1e6])),
        rope_scaling=draw(yarns()),
        rope_interleave=draw(st.booleans()),
        rms_norm_eps=draw(st.sampled_from([1e-6, 1e-5])),
        n_routed_experts=experts,
        n_shared_experts=draw(st.integers(0, 2)),
        num_experts_per_tok=draw(st.integers(1, reachable)),
        moe_intermediate_size=draw(st.sampled_from([8, 16])),
        n_group=n_group,
        topk_group=topk_group,
        topk_method=method,
        scoring_func=draw(st.sampled_from(["softmax", "sigmoid"])),
        norm_topk_prob=draw(st.booleans()),
        routed_scaling_factor=draw(st.sampled_from([1.0, 2.5, 16.0])),
    )


@st.composite
def hf_configs(draw, version):
    """Configs inside HF's valid region, YaRN included (both mscales given, as HF needs)."""
    yarn = None
    if draw(st.booleans()):
        m = draw(st.sampled_from([0.707, 1.0]))
        yarn = Yarn(factor=draw(st.sampled_from([4.0, 40.0])), original_max_position_embeddings=64,
                    mscale=m, mscale_all_dim=draw(st.sampled_from([m, 0.5])))
    n_group = draw(st.sampled_from([1, 2, 4]))
    per_group = draw(st.integers(2, 4))
    if version == 2:
        method = draw(st.sampled_from(["greedy", "group_limited_greedy"]))
        router = dict(scoring_func="softmax", topk_method=method, norm_topk_prob=False)
        interleave = True
    else:
        method = "noaux_tc"
        router = dict(scoring_func="sigmoid", topk_method=method, norm_topk_prob=draw(st.booleans()))
        interleave = draw(st.booleans())
    topk_group = draw(st.integers(1, n_group))
    reachable = n_group * per_group if method == "greedy" else topk_group * per_group
    top_k = draw(st.integers(2 if router["norm_topk_prob"] else 1, max(2, reachable)))
    top_k = min(top_k, reachable)
    if router["norm_topk_prob"] and top_k == 1:
        router["norm_topk_prob"] = False
    return Config(
        model_type=f"deepseek_v{version}", hidden_size=draw(st.sampled_from([32, 64])),
        num_attention_heads=draw(st.sampled_from([1, 2, 4])),  # HF V2 wants hidden % heads == 0
        q_lora_rank=draw(st.sampled_from([None, 16])),
        kv_lora_rank=draw(st.sampled_from([16, 32])), qk_nope_head_dim=draw(st.sampled_from([8, 16])),
        qk_rope_head_dim=draw(st.sampled_from([4, 8])), v_head_dim=draw(st.sampled_from([8, 16])),
        rope_scaling=yarn, rope_interleave=interleave, n_routed_experts=n_group * per_group,
        n_shared_experts=draw(st.integers(1, 2)), num_experts_per_tok=top_k, moe_intermediate_size=16,
        n_group=n_group, topk_group=topk_group, routed_scaling_factor=draw(st.sampled_from([1.0, 2.5])), **router)


seeds = st.integers(0, 2**31 - 1)

# Cheap properties (pure Python, the IR, the reference interpreter on tiny graphs, host
# checks) draw many examples; those that launch kernels keep the profile's 25. The
# conftest prints how many a run drew.
LOTS = settings(max_examples=2500)  # microseconds an example: host checks, config validation
MANY = settings(max_examples=1000)
SOME = settings(max_examples=250)

# Values of every kind a config field may be handed from a JSON file or by mistake.
junk_values = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                        st.text(max_size=5), st.lists(st.integers(), max_size=2),
                        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@st.composite
def block_tables(draw):
    """(block_table [B, P] int32, lengths [B] int32, page_size, num_pages) as a serving
    framework may hand them over: pages in any order, lengths from 0 to the table's
    capacity, and now and then an entry past the pool or negative, used or not."""
    import torch

    page = draw(st.sampled_from([1, 2, 16, 64, 3]))
    batch, per_row = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    pages = draw(st.integers(1, batch * per_row + 2))
    entries = st.one_of(st.integers(0, pages - 1), st.sampled_from([-1, pages, pages + 7, 10 ** 6, -(2 ** 31)]))
    table = draw(st.lists(st.lists(entries, min_size=per_row, max_size=per_row), min_size=batch, max_size=batch))
    lens = draw(st.lists(st.integers(0, per_row * page), min_size=batch, max_size=batch))
    return torch.tensor(table, dtype=torch.int32), torch.tensor(lens, dtype=torch.int32), page, pages

# Tensors as users hand them over: contiguous; at an element offset inside a larger
# buffer (what safetensors and from_pretrained give: not 64-byte aligned); with the last
# two dims stored transposed (a .T of a weight); with gaps between rows (a slice).
LAYOUTS = ("contiguous", "offset1", "offset4", "transposed", "gapped")
layouts = st.sampled_from(LAYOUTS)


@st.composite
def poisoned_rows(draw, rows: int, width: int):
    """{row: [(column, value)]}: which rows of a [rows, width] tensor get non-finite values
    (NaN, +inf, -inf) where, some rows whole; at least one row is left clean."""
    bad = draw(st.lists(st.integers(0, rows - 1), unique=True, max_size=max(0, rows - 1)))
    out = {}
    for r in bad:
        value = draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]))
        if draw(st.booleans()):
            out[r] = [(c, value) for c in range(width)]
        else:
            cols = draw(st.lists(st.integers(0, width - 1), min_size=1, max_size=3, unique=True))
            out[r] = [(c, draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]))) for c in cols]
    return out


def poison(t, rows: dict):
    """t with poisoned_rows' values written in (a copy)."""
    t = t.clone()
    for r, cells in rows.items():
        for c, v in cells:
            t[r, c] = v
    return t


def as_layout(t, layout: str):
    """t's values in the given memory layout (same shape, dtype and device)."""
    import torch

    if layout == "contiguous":
        return t.contiguous()
    if layout.startswith("offset"):
        skip = int(layout.removeprefix("offset"))
        buf = torch.empty(t.numel() + skip, dtype=t.dtype, device=t.device)
        buf[skip:].copy_(t.reshape(-1))
        return buf[skip:].view(t.shape)
    if layout == "transposed":
        return t.transpose(-1, -2).contiguous().transpose(-1, -2) if t.dim() >= 2 else t.contiguous()
    if layout == "gapped":
        buf = torch.empty(*t.shape[:-1], t.shape[-1] + 3, dtype=t.dtype, device=t.device)
        view = buf[..., 1:1 + t.shape[-1]]
        view.copy_(t)
        return view
    raise ValueError(layout)


@st.composite
def mla_calls(draw):
    """A call sequence: batch size, prefill length, then decode/prefill chunk lengths."""
    batch = draw(st.integers(1, 3))
    prefill = draw(st.integers(1, 12))
    chunks = draw(st.lists(st.integers(1, 4), min_size=0, max_size=3))
    return batch, prefill, chunks


@st.composite
def fp8_configs(draw, base=None):
    """Configs at the widths FP8 is meant for. The FP8 error bound is statistical: it
    assumes outputs mix several heads and sums run over at least 32 terms, as in every
    DeepSeek model. A one-head layer with 8-wide values, decoding over three keys, hangs
    its whole output on a single rounded softmax and exceeds it (hypothesis found 4.3x
    the estimate there)."""
    cfg = draw(base if base is not None else configs())
    return cfg.replace(hidden_size=draw(st.sampled_from([64, 128])), num_attention_heads=draw(st.sampled_from([2, 4])),
                       q_lora_rank=draw(st.sampled_from([None, 32])), kv_lora_rank=draw(st.sampled_from([32, 64])),
                       qk_nope_head_dim=draw(st.sampled_from([16, 32])), v_head_dim=draw(st.sampled_from([16, 32])),
                       moe_intermediate_size=draw(st.sampled_from([32, 64])))


B, T = sym("B"), sym("T")


@st.composite
def row_graphs(draw):
    """A graph over x [B, T, H, W] (a strided slice of a wider input), a per-channel param
    and positions, built from a random sequence of row ops."""
    dt = draw(st.sampled_from(["f32", "bf16"]))
    heads = draw(st.integers(1, 3))
    width = draw(st.sampled_from([4, 8, 12]))
    wide = inp("wide", [B, T, heads, width + 3], dt)
    pos = inp("positions", [B, T], "i64")
    x = op("slice", wide, axis=-1, start=1, stop=1 + width)  # a view with a row stride != width
    w = param("w", [width], dt)
    values = [x]
    for _ in range(draw(st.integers(1, 8))):
        # mostly extend the chain (fusion), sometimes branch from an earlier value (a second user)
        a = values[-1] if draw(st.integers(0, 3)) else draw(st.sampled_from(values))
        kind = draw(st.sampled_from(["add", "mul", "scale", "silu", "rms_norm", "rope", "cast", "normalize_sum",
                                     "concat_slice"]))
        if kind in ("add", "mul"):
            b = draw(st.sampled_from(values + [op("reshape", w, shape=[1, 1, 1, width])]))
            if b.shape[-1] != a.shape[-1]:
                continue
            v = op(kind, a, op("expand", b, shape=list(a.shape)) if b.shape[0] == 1 else b)
        elif kind == "scale":
            v = op("scale", a, factor=draw(st.sampled_from([0.5, -2.0, 3.25])))
        elif kind == "silu":
            v = op("silu", a)
        elif kind == "rms_norm":
            if a.shape[-1] != width:
                continue
            v = op("rms_norm", a, w, eps=1e-6)
        elif kind == "rope":
            v = op("rope", a, pos, theta=10000.0, interleave=draw(st.booleans()))
        elif kind == "cast":
            v = op("cast", op("cast", a, dtype="f32"), dtype=dt)
        elif kind == "normalize_sum":
            v = op("normalize_sum", op("mul", a, a), eps=1e-6)  # positive rows: a well-conditioned sum
        else:  # rotate the row: a concat of two slices of one value
            cut = draw(st.integers(1, a.shape[-1] - 1))
            v = op("concat", op("slice", a, axis=-1, start=cut, stop=a.shape[-1]),
                   op("slice", a, axis=-1, start=0, stop=cut), axis=-1)
        values.append(v)
    return Graph("rows", [wide, pos], {"out": values[-1]}), dt, heads, width
