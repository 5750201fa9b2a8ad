"""Matrix ops as GEMMs: linear (x @ w.T) and two-operand einsums.

Kernels: linear(x, w, out=None); einsum(spec, x, y, out=None)."""

from dsc.codegen.groups import GroupKind
from dsc.errors import DscError


def _gemm(group, k):
    n = group.root
    if n.op == "linear":
        x, w = n.srcs
        return lambda v, env, out=None: k.linear(v[id(x)], v[id(w)], out=out)
    if len(n.srcs) != 2:
        raise DscError(f"einsum {n.attrs['spec']!r}: only two-operand contractions have a GEMM form")
    x, y = n.srcs
    return lambda v, env, out=None: k.einsum(n.attrs["spec"], v[id(x)], v[id(y)], out=out)


KINDS = (GroupKind("gemm", ops=("linear", "einsum"), calls=("linear", "einsum"), launch=_gemm),)
