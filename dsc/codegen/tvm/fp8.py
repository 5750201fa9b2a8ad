"""FP8 (e4m3) and bf16 bytes as TIR expressions on integers, the TVM twins of the Triton
helpers in codegen/triton/build.py.

TVM's own fp8 casts decode wrongly on llvm (apache/tvm#20315) and CUDA has no
fp8 arithmetic, so FP8 weights and cache rows travel as uint8 bytes and are decoded
and encoded here bit by bit, exactly as torch's casts do (round to nearest even,
saturating to +-448).
"""

from __future__ import annotations

from dsc.codegen.tvm.build import require_tvm

E4M3_MAX = 448.0
MIN_AMAX = 1e-12  # dsc.ir.ops.fp8.MIN_AMAX: all-zero groups keep a finite scale


def _u32(v: int):
    return require_tvm().tirx.const(v, "uint32")


def decode_e4m3(byte):
    """An e4m3 byte (any integer expression) -> its float32 value."""
    tir = require_tvm().tirx
    b = byte.astype("uint32")
    exp, man = (b >> _u32(3)) & _u32(15), b & _u32(7)
    normal = tir.reinterpret("float32", ((exp + _u32(120)) << _u32(23)) | (man << _u32(20)))
    subnormal = man.astype("float32") * (1.0 / 512.0)
    mag = tir.Select(exp == _u32(0), subnormal, normal)
    return tir.Select((b & _u32(0x80)) != _u32(0), -mag, mag)


def round_e4m3(x):
    """float32 x saturated to +-448 and rounded to nearest even on e4m3's grid (still float32)."""
    tir = require_tvm().tirx
    x = tir.max(tir.min(x, tir.const(E4M3_MAX, "float32")), tir.const(-E4M3_MAX, "float32"))
    a = tir.abs(x)
    bits = tir.reinterpret("uint32", a)
    normal = tir.reinterpret("float32", (bits + _u32(0x7FFFF) + ((bits >> _u32(20)) & _u32(1))) & _u32(0xFFF00000))
    subnormal = tir.nearbyint(a * 512.0) * (1.0 / 512.0)  # multiples of 2^-9 below 2^-6
    r = tir.Select(a < 0.015625, subnormal, normal)
    return tir.Select((tir.reinterpret("uint32", x) >> _u32(31)) != _u32(0), -r, r)  # -0.0 stays -0.0


def encode_e4m3(r):
    """float32 values on e4m3's grid (round_e4m3's output) -> their bytes (uint8)."""
    tir = require_tvm().tirx
    a = tir.abs(r)
    bits = tir.reinterpret("uint32", a)
    normal = (((bits >> _u32(23)) - _u32(120)) << _u32(3)) | ((bits >> _u32(20)) & _u32(7))
    subnormal = (a * 512.0).astype("uint32")
    byte = tir.Select(a < 0.015625, subnormal, normal)
    sign = (tir.reinterpret("uint32", r) >> _u32(31)) << _u32(7)
    return (byte | sign).astype("uint8")


def fake_quant(x, amax):
    """x after a round trip through e4m3 with the scale of its group's largest |x|
    (DeepSeek-V3's per-token activation quantization, fake_quant_rows in the IR)."""
    tir = require_tvm().tirx
    s = tir.max(amax, tir.const(MIN_AMAX, "float32")) / E4M3_MAX
    return round_e4m3(x / s) * s


def f32_from_bytes(load, at):
    """The little-endian float32 whose four bytes load(at), .., load(at + 3) returns."""
    tir = require_tvm().tirx
    word = load(at).astype("uint32")
    for i in (1, 2, 3):
        word = word | (load(at + i).astype("uint32") << _u32(8 * i))
    return tir.reinterpret("float32", word)


def bf16_from_bytes(load, at):
    """The little-endian bf16 at bytes load(at), load(at + 1), as float32 (exact)."""
    tir = require_tvm().tirx
    word = (load(at).astype("uint32") << _u32(16)) | (load(at + 1).astype("uint32") << _u32(24))
    return tir.reinterpret("float32", word)


def byte_of_f32(x, i):
    """Byte i (an integer expression, 0..3, little-endian) of float32 x, as uint8."""
    return ((require_tvm().tirx.reinterpret("uint32", x) >> (i.astype("uint32") * _u32(8))) & _u32(255)).astype(
        "uint8")


def unpack_latent(load, d, rank: int, group: int):
    """Column d (float32) of a kv_pack_fp8 row whose byte j is load(j): rank e4m3 values
    times their group's float32 scale, then the rope part in bf16."""
    tir = require_tvm().tirx
    n_scales = rank // group
    c = tir.min(d, rank - 1)  # both branches are evaluated: keep each one's address in its part
    q = decode_e4m3(load(c)) * f32_from_bytes(load, rank + 4 * (c // group))
    r = tir.max(d - rank, 0)
    rope = bf16_from_bytes(load, rank + 4 * n_scales + 2 * r)
    return tir.Select(d < rank, q, rope)
