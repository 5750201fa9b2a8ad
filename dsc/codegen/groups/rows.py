"""Row regions: elementwise ops, casts, RMSNorm, RoPE and last-axis concats fused into
one generated row kernel (rowwise); the same region written straight into a paged cache
(paged_append, the MLA "RMSNorm + RoPE + latent-cache write"); a paged gather, with the
FP8 cache's dequantization when it has one (paged_gather). The scheduler matches the
regions; each backend's row kernel generator takes the whole group.

Kernel: rows(group) -> launch(values, env, out=None)."""

from dsc.codegen.groups import GroupKind


def _rows(group, k):
    return k.rows(group)


KINDS = (GroupKind("rowwise", rows=True, calls=("rows",), launch=_rows),
         GroupKind("paged_append", in_place=True, rows=True, calls=("rows",), launch=_rows),
         GroupKind("paged_gather", rows=True, calls=("rows",), launch=_rows))
