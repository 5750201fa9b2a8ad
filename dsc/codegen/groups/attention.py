"""Attention: dense flash attention over materialized K and V (attention), and MLA's
attention straight over the paged latent cache, dequantizing an FP8 cache as it reads
(paged_attention, matched by the scheduler when K is one gathered latent head and V
its prefix).

Kernels: attention(q, k, v, lengths, scale, out=None) -> out;
paged_attention(q, cache, table, lengths, scale, v_dim, len_offset, out=None, fp8_group=None) -> out."""

from dsc.codegen.groups import GroupKind
from dsc.errors import DscError


def _attention(group, k):
    scale = group.root.attrs["scale"]
    q, key, value, lens = group.inputs
    return lambda v, env, out=None: k.attention(v[id(q)], v[id(key)], v[id(value)], v[id(lens)], scale, out=out)


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
        return k.paged_attention(q, cache, table, lens, n.attrs["scale"], dv, q.shape[1], out=out,
                                 fp8_group=fp8_group)
    return run


KINDS = (GroupKind("attention", calls=("attention",), launch=_attention),
         GroupKind("paged_attention", calls=("paged_attention",), launch=_paged_attention))
