"""The codegen's dispatch is tables: every op the scheduler fuses into a row region has
one emitter per backend, and every kernel-group kind has one launcher maker (the
lowering, shared by the backends) and one compile listing per backend. A new op or kind
cannot reach a kernel without its entries."""

from dsc.codegen.kinds import GROUP_KINDS
from dsc.codegen.lowering import LAUNCHERS
from dsc.codegen.row_emitter import REGION_READS
from dsc.codegen.schedule import ROW_OPS
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


def test_every_kernel_kind_has_a_launcher_maker():
    assert set(LAUNCHERS) == KERNEL_KINDS


def test_every_kernel_kind_has_triton_compile_jobs():
    from dsc.codegen.triton.lower import JOBS

    assert set(JOBS) == KERNEL_KINDS


def test_every_kernel_kind_has_tvm_definitions():
    from dsc.codegen.tvm.lower import DEFS

    assert set(DEFS) == KERNEL_KINDS
