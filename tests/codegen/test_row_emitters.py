"""The row kernels' emitters are tables: every op the scheduler fuses into a row region has
exactly one entry per backend, so a new row op cannot reach a kernel without one."""

from dsc.codegen.row_emitter import REGION_READS
from dsc.codegen.schedule import ROW_OPS
from dsc.ir.opdef import OPS


def test_row_ops_are_declared_by_their_ops():
    assert ROW_OPS == {name for name, opdef in OPS.items() if opdef.row_wise}
    assert {"add", "mul", "cast", "rms_norm", "rope", "concat"} <= ROW_OPS


def test_every_row_op_has_an_emitter_on_triton_and_tvm():
    from dsc.codegen.triton.rowwise import _Emitter
    from dsc.codegen.tvm.rowwise import _Expr

    for emitter in (_Emitter, _Expr):
        assert set(emitter.EMIT) == ROW_OPS | REGION_READS, emitter.backend
