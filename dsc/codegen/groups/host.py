"""Host kinds: no kernel. A view aliases its source (the kernels that read it take
strides); a dispatch picks a branch at run time (the executor runs only that branch)."""

from dsc.codegen.groups import GroupKind

KINDS = (GroupKind("view", host=True, in_place=True), GroupKind("dispatch", host=True, in_place=True))
