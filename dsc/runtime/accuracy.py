"""The one relative error every check in dsc reports: ‖out − ref‖ / ‖ref‖ in float64.

NaN never passes: an output that holds a NaN or an inf, or has another shape, is inf
away. Integer outputs (ids, slots) must match exactly (0 or inf). An all-zero reference
has no scale, so the error is the output's absolute distance from it.
"""

from __future__ import annotations

import math

import torch


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    if out.shape != ref.shape:
        return math.inf
    if not (out.dtype.is_floating_point or out.dtype.is_complex):
        return 0.0 if torch.equal(out.cpu(), ref.cpu()) else math.inf
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    if not torch.isfinite(out).all():
        return math.inf
    distance, scale = (out - ref).norm(), ref.norm()
    return float(distance / scale) if scale > 0 else float(distance)
