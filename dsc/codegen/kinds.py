"""The kernel-group kinds, collected from their declarations (one per kind, in
dsc/codegen/groups/): what the scheduler makes, what the executor and the crosscheck ask
of a group, and what each backend's kernels must provide (dsc.codegen.kernel_set)."""

from __future__ import annotations

from dsc.codegen.groups import GroupKind, declared

__all__ = ["GroupKind", "GROUP_KINDS", "ROW_KINDS", "IN_PLACE", "KIND_OF_OP"]

GROUP_KINDS: dict[str, GroupKind] = declared()
ROW_KINDS = frozenset(name for name, k in GROUP_KINDS.items() if k.rows)
IN_PLACE = frozenset(name for name, k in GROUP_KINDS.items() if k.in_place)
# op -> the kind of the one-node group the scheduler makes of it
KIND_OF_OP: dict[str, str] = {op: name for name, k in GROUP_KINDS.items() for op in k.ops}
