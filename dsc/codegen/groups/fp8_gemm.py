"""A block-scaled FP8 linear (DeepSeek-V3's 128x128 weight blocks; with act_quant the
activations are quantized per 1x128 group as they are read).

Kernel: fp8_linear(x, wq, ws, *, act_quant, block, out=None)."""

from dsc.codegen.groups import GroupKind


def _fp8_gemm(group, k):
    n = group.root
    x, wq, ws = n.srcs
    return lambda v, env, out=None: k.fp8_linear(v[id(x)], v[id(wq)], v[id(ws)], act_quant=n.attrs["act_quant"],
                                                 block=n.attrs["block"], out=out)


KINDS = (GroupKind("fp8_gemm", ops=("fp8_linear",), calls=("fp8_linear",), launch=_fp8_gemm),)
