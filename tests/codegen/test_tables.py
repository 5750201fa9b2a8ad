"""The codegen's dispatch is tables: every op the scheduler fuses into a row region has
one emitter per backend; every kernel-group kind is declared once (dsc/codegen/groups/)
with its launcher and the kernels it calls, and every backend registers those kernels
and a compile listing for it. A new op or kind cannot reach a kernel without its entries."""

import pytest

from dsc.codegen.backend import CODEGEN_BACKENDS, get_backend
from dsc.codegen.kernel_set import KernelSet
from dsc.codegen.kinds import GROUP_KINDS, KIND_OF_OP
from dsc.codegen.row_emitter import REGION_READS
from dsc.codegen.schedule import ROW_OPS
from dsc.errors import DscError
from dsc.ir.opdef import OPS

KERNEL_KINDS = {name for name, kind in GROUP_KINDS.items() if not kind.host}


def test_row_ops_are_declared_by_their_ops():
    assert ROW_OPS == {name for name, opdef in OPS.items() if opdef.row_wise}
    assert {"add", "mul", "cast", "rms_norm", "rope", "concat"} <= ROW_OPS


def test_every_row_op_has_an_emitter_on_triton_and_tvm():
    from dsc.codegen.triton.rowwise import _Emitter
    from dsc.codegen.tvm.rowwise import _Expr

    for emitter in (_Emitter, _Expr):
        assert set(emitter.EMIT) == ROW_OPS | REGION_READS, emitter.backend


def test_the_kinds_are_collected_from_their_declarations():
    assert {"view", "dispatch", "rowwise", "paged_append", "gemm", "paged_attention", "router", "moe_experts",
            "fp8_gemm"} <= set(GROUP_KINDS)
    assert {name for name, k in GROUP_KINDS.items() if k.host} == {"view", "dispatch"}
    assert KIND_OF_OP["linear"] == KIND_OF_OP["einsum"] == "gemm" and KIND_OF_OP["fp8_linear"] == "fp8_gemm"
    assert all(op in OPS for op in KIND_OF_OP)  # a kind only claims ops the IR declares
    for kind in KERNEL_KINDS:
        assert GROUP_KINDS[kind].launch is not None and GROUP_KINDS[kind].calls, kind


@pytest.mark.parametrize("backend", CODEGEN_BACKENDS)
def test_every_backend_registers_every_kind(backend):
    kernels = get_backend(backend).kernels
    for name in KERNEL_KINDS:
        assert set(GROUP_KINDS[name].calls) <= kernels.calls, (backend, name)
    assert kernels.kinds == set(GROUP_KINDS)


def test_a_kind_without_its_kernels_is_not_covered():
    """KernelSet.kinds is computed, not declared: a kind is covered only once its calls
    and its compile listing are registered."""
    ks = KernelSet("probe", "dsc.codegen.groups")  # a package that registers nothing
    assert ks.kinds == {"view", "dispatch"}
    ks.provides("linear")(lambda x, w, out=None: x @ w.T)
    ks.provides("einsum")(lambda spec, x, y, out=None: None)
    assert "gemm" not in ks.kinds  # no listing yet
    ks.lists("gemm")(lambda group: [])
    assert "gemm" in ks.kinds and "fp8_gemm" not in ks.kinds
    with pytest.raises(DscError, match="twice"):
        ks.provides("linear")(lambda x, w, out=None: None)
    with pytest.raises(DscError, match="not declared"):
        ks.lists("no_such_kind")(lambda group: [])

