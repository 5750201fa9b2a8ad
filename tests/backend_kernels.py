"""The compiled backends' kernels behind one calling convention, for tests that hold
both to the same reference."""


class Kernels:
    """One backend's MoE kernels behind one calling convention."""

    def __init__(self, backend: str):
        if backend == "triton":
            from dsc.codegen.triton import fp8_gemm, fused_moe, router

            self.fp8_linear = fp8_gemm.fp8_linear
        else:
            from dsc.codegen.tvm import fused_moe, router

            self.fp8_linear = fused_moe.fp8_linear  # a grouped GEMM with one expert
        self.backend, self.fused_moe, self.route = backend, fused_moe, router.route
        self.align, self.combine = fused_moe.align, fused_moe.combine

    def grouped(self, a, slots, ids, w, route, *, gather, swiglu, block=16, scales=None, act_quant=False):
        """grouped_gemm (grouped_gemm_fp8 with scales) with w [E, N, K], gate rows first under swiglu."""
        if self.backend == "tvm":
            return self.fused_moe.grouped_gemm(a, slots, ids, w, route, gather=gather, swiglu=swiglu, block=block,
                                               scales=scales, act_quant=act_quant)
        half = w.shape[1] // 2 if swiglu else 0
        gate, up = (w[:, :half], w[:, half:]) if swiglu else (w, None)
        return self.fused_moe.grouped_gemm(a, slots, ids, gate, up, route, gather=gather, block=block, scales=scales,
                                           up_offset=half, act_quant=act_quant)
