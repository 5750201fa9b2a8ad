"""Attention: dense flash attention over materialized K and V (attention), and MLA's
attention straight over the paged latent cache, dequantizing an FP8 cache as it reads
(paged_attention, matched by the scheduler when K is one gathered latent head and V
its prefix).

Kernels (dsc.ops.mla_prefill and mla_decode call them too):
attention(q, k, v, lengths, scale, *, len_offset, out=None) -> (out, lse);
paged_attention(q, cache, table, lengths, scale, v_dim, *, len_offset, causal=True, num_splits=None,
schedule=None, fp8_group=None, out=None) -> (out, lse) (schedule: a decode schedule built once
for a step's layers, dsc.codegen.triton.paged_attention.DecodeSchedule). lengths + len_offset are each row's tokens, its T
queries last; lse [B, H, T] float32, +inf (and out 0) where a query sees no position."""

from dsc.codegen.groups import GroupKind
from dsc.errors import DscError


def _attention(group, k):
    scale = group.root.attrs["scale"]
    q, key, value, lens = group.inputs
    # the IR's lengths count the cached tokens before the T new ones
    return lambda v, env, out=None: k.attention(v[id(q)], v[id(key)], v[id(value)], v[id(lens)], scale,
                                                len_offset=v[id(q)].shape[1], out=out)[0]


def _paged_attention(group, k):
    n = group.root
    dv = n.shape[-1]
    unpack = next((m for m in group.nodes if m.op == "kv_unpack_fp8"), None)
    if unpack is not None and unpack.attrs["rank"] != dv:
        raise DscError(f"paged attention over an FP8 cache reads V as the rank {unpack.attrs['rank']} latent, "
                       f"got a V of width {dv}")
    fp8_group = unpack.attrs["group"] if unpack else None

    def run(v, env, out=None):
        q, cache, table, lens = (v[id(s)] for s in group.inputs)
        return k.paged_attention(q, cache, table, lens, n.attrs["scale"], dv, len_offset=q.shape[1], out=out,
                                 fp8_group=fp8_group)[0]
    return run


KINDS = (GroupKind("attention", calls=("attention",), launch=_attention),
         GroupKind("paged_attention", calls=("paged_attention",), launch=_paged_attention))
