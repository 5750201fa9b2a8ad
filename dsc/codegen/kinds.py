"""The kernel-group kinds, declared once: what the scheduler makes, what each backend's
tables are keyed by (the lowering's launchers, the Triton compile jobs, the TVM kernel
definitions) and what the executor and the crosscheck ask of a group. A test holds every
backend's tables against this list."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GroupKind:
    name: str
    host: bool = False  # run on the host (a view, a branch choice): no kernel
    in_place: bool = False  # writes no fresh buffer (aliases its source, or writes a cache in place)
    rows: bool = False  # a fused row region: the backends' row kernels (dsc/codegen/*/rowwise.py)


_DECLARED = (
    GroupKind("view", host=True, in_place=True),
    GroupKind("dispatch", host=True, in_place=True),
    GroupKind("rowwise", rows=True),
    GroupKind("paged_append", in_place=True, rows=True),
    GroupKind("paged_gather", rows=True),
    GroupKind("gemm"),
    GroupKind("attention"),
    GroupKind("paged_attention"),
    GroupKind("router"),
    GroupKind("moe_align"),
    GroupKind("grouped_gemm"),
    GroupKind("grouped_gemm_fp8"),
    GroupKind("moe_combine"),
    GroupKind("moe_experts"),
    GroupKind("fp8_gemm"),
)
GROUP_KINDS: dict[str, GroupKind] = {k.name: k for k in _DECLARED}
ROW_KINDS = frozenset(name for name, k in GROUP_KINDS.items() if k.rows)
IN_PLACE = frozenset(name for name, k in GROUP_KINDS.items() if k.in_place)
