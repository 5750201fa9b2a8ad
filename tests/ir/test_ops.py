"""Each op's reference implementation against a brute-force computation of its
definition, and each op's cost against a hand count."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from dsc.ir.build import inp, op, param
from dsc.ir import Graph, graph_cost, interpret, sym
from strategies import SOME, MANY, seeds
from util import F32_TOL, assert_close

B, T, N = sym("B"), sym("T"), sym("N")


def run1(node, **tensors):
    leaves = [n for n in node.toposort() if n.op in ("input", "param")]
    g = Graph("t", [n for n in leaves if n.op == "input"], {"out": node})
    return interpret(g, {k: v for k, v in tensors.items() if k in {n.name for n in g.inputs}},
                     {k: v for k, v in tensors.items() if k not in {n.name for n in g.inputs}})["out"]


@SOME
@given(seeds, st.integers(1, 3), st.integers(1, 5), st.integers(0, 6), st.integers(1, 3),
       st.sampled_from([1, None]))
def test_attention_matches_a_loop_over_tokens(seed, b, t, past, h, kv_heads):
    g = torch.Generator().manual_seed(seed)
    hk = h if kv_heads is None else 1
    lens = torch.randint(0, past + 1, (b,), generator=g, dtype=torch.int32)
    s = past + t + 2  # room past every row's length: those slots must never be read
    q = torch.randn(b, t, h, 8, generator=g)
    k = torch.randn(b, s, hk, 8, generator=g)
    v = torch.randn(b, s, hk, 5, generator=g)
    node = op("attention", inp("q", [B, T, h, 8], "f32"), inp("k", [B, sym("S"), hk, 8], "f32"),
              inp("v", [B, sym("S"), hk, 5], "f32"), inp("lens", [B], "i32"), scale=0.3)
    out = run1(node, q=q, k=k, v=v, lens=lens)
    ref = torch.empty(b, t, h, 5)
    for bi in range(b):
        for ti in range(t):
            last = int(lens[bi]) + ti
            for hi in range(h):
                kh = 0 if hk == 1 else hi
                w = torch.softmax(0.3 * k[bi, : last + 1, kh] @ q[bi, ti, hi], dim=0)
                ref[bi, ti, hi] = w @ v[bi, : last + 1, kh]
    assert_close(out, ref, F32_TOL, "attention")
    k2 = k.clone()
    k2[:, past + t:] = float("nan")  # slots past every row's length are never read
    assert torch.equal(run1(node, q=q, k=k2, v=v, lens=lens), out)


def brute_select(scores, bias, method, top_k, n_group, topk_group):
    chosen = []
    for srow in scores:
        choice = srow + (bias if bias is not None else 0)
        allowed = list(range(len(choice)))
        if method != "greedy":
            per = len(choice) // n_group
            groups = [choice[i * per:(i + 1) * per] for i in range(n_group)]
            if method == "group_limited_greedy":
                gscore = [float(gr.max()) for gr in groups]
            else:
                gscore = [float(gr.sort(descending=True).values[:2].sum()) for gr in groups]
            keep = sorted(range(n_group), key=lambda i: -gscore[i])[:topk_group]
            allowed = [e for e in allowed if e // per in keep]
        chosen.append(set(sorted(allowed, key=lambda e: -float(choice[e]))[:top_k]))
    return chosen


@MANY
@given(seeds, st.sampled_from(["greedy", "group_limited_greedy", "noaux_tc"]), st.sampled_from([1, 2, 4]),
       st.integers(2, 4), st.data())
def test_select_experts_matches_brute_force(seed, method, n_group, per, data):
    e = n_group * per
    topk_group = data.draw(st.integers(1, n_group))
    top_k = data.draw(st.integers(1, e if method == "greedy" else topk_group * per))
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(5, e, generator=g)
    bias = 0.1 * torch.randn(e, generator=g) if method == "noaux_tc" else None
    s_node = inp("s", [N, e], "f32")
    srcs = (s_node, param("bias", [e], "f32")) if bias is not None else (s_node,)
    node = op("select_experts", *srcs, method=method, top_k=top_k, n_group=n_group, topk_group=topk_group)
    tensors = {"s": scores} | ({"bias": bias} if bias is not None else {})
    ids = run1(node, **tensors)
    assert [set(r.tolist()) for r in ids] == brute_select(scores, bias, method, top_k, n_group, topk_group)


@SOME
@given(seeds, st.booleans(), st.sampled_from([1.0, 8.0, 40.0]))
def test_rope_rotates_each_pair_by_its_frequency(seed, interleave, factor):
    g = torch.Generator().manual_seed(seed)
    d = 8
    x = torch.randn(2, 3, 2, d, generator=g)
    pos = torch.randint(0, 500, (2, 3), generator=g)
    node = op("rope", inp("x", [B, T, 2, d], "f32"), inp("p", [B, T], "i64"), theta=10000.0,
              interleave=interleave, factor=factor, original_max=64, mscale=1.0, mscale_all_dim=0.5)
    out = run1(node, x=x, p=pos)
    from dsc.ir.ops.rope import rope_inv_freq

    inv = rope_inv_freq(d, 10000.0, factor, 64, 32.0, 1.0)
    m = 1.0 if factor <= 1 else (0.1 * math.log(factor) + 1) / (0.1 * 0.5 * math.log(factor) + 1)
    for i in range(d // 2):  # pair i: (x[2i], x[2i+1]) or (x[i], x[i + d/2]); result in halves
        a, b = (x[..., 2 * i], x[..., 2 * i + 1]) if interleave else (x[..., i], x[..., i + d // 2])
        ang = pos[..., None].float() * inv[i]
        c, s = torch.cos(ang) * m, torch.sin(ang) * m
        assert_close(out[..., i], a * c - b * s, 1e-6)
        assert_close(out[..., i + d // 2], b * c + a * s, 1e-6)
    if factor == 1.0:  # plain rope keeps norms
        assert_close(out.norm(dim=-1), x.norm(dim=-1), 1e-6)


def test_yarn_frequencies_interpolate_only_the_low_ones():
    from dsc.ir.ops.rope import rope_inv_freq

    plain = rope_inv_freq(64, 10000.0, 1.0, 4096, 32.0, 1.0)
    yarn = rope_inv_freq(64, 10000.0, 40.0, 4096, 32.0, 1.0)
    assert torch.allclose(yarn[:8], plain[:8])  # high frequencies kept
    assert torch.allclose(yarn[-4:], plain[-4:] / 40)  # low ones divided by the factor


def test_paged_append_and_gather_place_tokens_by_block_table():
    cache = torch.zeros(6, 4, 3)
    table = torch.tensor([[5, 1], [0, 3]], dtype=torch.int32)
    lens = torch.tensor([2, 5], dtype=torch.int32)
    new = torch.arange(1, 1 + 2 * 3 * 3, dtype=torch.float32).view(2, 3, 3)
    c_in = inp("cache", [sym("NB"), 4, 3], "f32")
    t_in = inp("table", [B, sym("P")], "i32")
    appended = op("paged_append", c_in, t_in, inp("lens", [B], "i32"), inp("new", [B, 3, 3], "f32"))
    gathered = op("paged_gather", appended, t_in)
    out = run1(gathered, cache=cache, table=table, lens=lens, new=new)
    assert torch.equal(out[0, 2:5], new[0]) and torch.equal(out[1, 5:8], new[1])
    assert torch.equal(cache[5, 2:4], new[0, :2]) and torch.equal(cache[1, 0], new[0, 2])  # page boundary
    assert torch.equal(cache[0, 1:4].abs().sum(), torch.tensor(0.0)) and torch.equal(cache[3, 1:4], new[1])


def test_moe_experts_matches_a_dense_loop():
    g = torch.Generator().manual_seed(0)
    E, H, I, n, k = 5, 6, 4, 7, 2
    x = torch.randn(n, H, generator=g)
    ids = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(n)])
    w = torch.rand(n, k, generator=g)
    gate, up = torch.randn(E, I, H, generator=g), torch.randn(E, I, H, generator=g)
    down = torch.randn(E, H, I, generator=g)
    node = op("moe_experts", inp("x", [N, H], "f32"), inp("ids", [N, k], "i64"), inp("w", [N, k], "f32"),
              param("g", [E, I, H], "f32"), param("u", [E, I, H], "f32"), param("d", [E, H, I], "f32"))
    out = run1(node, x=x, ids=ids, w=w, g=gate, u=up, d=down)
    ref = torch.zeros(n, H)
    for t in range(n):
        for j in range(k):
            e = int(ids[t, j])
            ref[t] += w[t, j] * (down[e] @ (torch.nn.functional.silu(gate[e] @ x[t]) * (up[e] @ x[t])))
    assert_close(out, ref, F32_TOL, "moe_experts")


def test_costs_count_what_the_ops_do():
    x = inp("x", [N, 16], "bf16")
    lin = op("linear", x, param("w", [32, 16], "bf16"))
    c = graph_cost(Graph("c", [x], {"out": lin}))
    assert c.flops == 2 * N * 32 * 16
    assert c.bytes == 2 * (N * 16 + 32 * 16 + N * 32)
    ids = inp("ids", [N, 2], "i64")
    moe = op("moe_experts", inp("x2", [N, 16], "f32"), ids, inp("w", [N, 2], "f32"),
             param("g", [8, 4, 16], "f32"), param("u", [8, 4, 16], "f32"), param("d", [8, 16, 4], "f32"))
    cost = graph_cost(Graph("m", [moe.srcs[0], ids, moe.srcs[2]], {"out": moe}))
    assert cost.flops == 6 * 2 * N * 4 * 16
    # a single token reads two experts' weights, a large batch all eight
    per_expert = 3 * 4 * 16 * 4
    assert cost.bytes.subs(N, 1) == 16 * 4 + 2 * 8 + 2 * 4 + 16 * 4 + 2 * per_expert
    assert cost.bytes.subs(N, 100) == 100 * (16 * 4 + 2 * 8 + 2 * 4 + 16 * 4) + 8 * per_expert


def test_einsum_infers_shapes_and_matches_torch():
    a = inp("a", [B, 3, 4], "f32")
    b = param("b", [3, 4, 5], "f32")
    node = op("einsum", a, b, spec="bhd,hdc->bhc")
    assert node.shape == (B, 3, 5)
    ta, tb = torch.randn(2, 3, 4), torch.randn(3, 4, 5)
    assert_close(run1(node, a=ta, b=tb), torch.einsum("bhd,hdc->bhc", ta, tb), 1e-6)
    with pytest.raises(Exception, match="index 'd' is 4 in one operand and 5"):
        op("einsum", a, param("c", [3, 5, 5], "f32"), spec="bhd,hdc->bhc")
