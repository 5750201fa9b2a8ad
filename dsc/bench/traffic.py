"""The traffic model: for each Triton kernel a layer launches, from the tiles a launch
on the card's arch chooses (dsc.executor.launches.launch_jobs), the bytes it moves from
HBM and from L2, the shared-memory bytes its dots read, its FLOPs, and the bound those
put on its time on a named card (dsc.bench.cards): the largest of bytes / bandwidth and
FLOPs / peak, over the fraction of the SMs its grid occupies.

What the model assumes, so its figures can be argued with:
- HBM is read once per distinct byte (the paged cache rows of a batch row, an expert's
  weights, a GEMM's operands); every re-read (the other query-row blocks over the same
  cache rows, the other row blocks of an expert over its weights, the other column tiles
  over the same activation rows) is an L2 read.
- A dot's operands are read from shared memory by each warp (mma.sync) or warpgroup
  (wgmma) that needs them: warps are laid along the rows first (16 rows each for
  mma.sync, 64 per warpgroup for wgmma), the rest along the columns; an operand already in
  registers (attention's probabilities) is not read. The tile written into shared memory
  from global memory counts once.
- The instruction is the one the kernel's design names for its tiles
  (dsc.codegen.triton.resources.expected_tensor_core; the resource gate checks the PTX
  has it); FP8 x FP8 dots run at the FP8 peak only as wgmma, on a card with FP8.
- MoE routing is balanced: each of the N*K routed slots picks an expert independently
  and evenly, so one expert's load is Binomial(N*K, 1/E) (the expected number of
  distinct experts touched, and of row tiles their loads cut into, follow from it).
  Where the launch order is known (the grouped GEMM's GROUP_M groups), a re-read is an
  L2 hit only within one wave of programs or within half the L2's bytes of the first
  read (reread_hits_l2); otherwise it is read from HBM again.
Kernels without a model here (row kernels, the router, the alignment) are listed
without a bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dsc.bench.cards import Card
from dsc.codegen.triton.paged_attention import schedule_reference
from dsc.codegen.triton.resources import expected_tensor_core


@dataclass
class Traffic:
    hbm: float  # bytes
    l2: float  # bytes read from L2 beyond the HBM bytes
    smem: float  # bytes
    flops: float  # executed (padding rows included)
    fp8: bool = False  # FP8 x FP8 dots


def _warps_along(rows: int, warps: int, instr: str) -> tuple[int, int]:
    """(along the rows, along the columns) of a dot's warps (mma.sync) or warpgroups (wgmma)."""
    if instr == "wgmma":
        groups = max(1, warps // 4)
        along_m = max(1, min(groups, rows // 64))
        return along_m, groups // along_m
    along_m = max(1, min(warps, rows // 16))
    return along_m, warps // along_m


def _dot_smem(a_bytes: float, b_bytes: float, rows: int, warps: int, instr: str, a_in_registers: bool = False) -> float:
    """Shared-memory bytes one step of a dot reads: A by every column warp, B by every row warp."""
    along_m, along_n = _warps_along(rows, warps, instr)
    return (0 if a_in_registers else along_n * a_bytes) + along_m * b_bytes


def _size(t) -> int:
    return t.element_size()


def batched_gemm(args, c, grid, warps, instr, card: Card) -> Traffic:
    a, b, out = args[0], args[4], args[8]
    m, n, k = args[13], args[14], args[15]
    batch, split = grid[1], c.get("SPLIT_K", 1)
    bm, bn, bk = c["BLOCK_M"], c["BLOCK_N"], c["BLOCK_K"]
    tiles_m, tiles_n = math.ceil(m / bm), math.ceil(n / bn)
    item = _size(a)
    a_bytes, b_bytes = batch * m * k * item, (batch if args[5] else 1) * k * n * _size(b)
    # split-K writes float32 partials (gemm_split_reduce reads them back) instead of the output
    hbm = a_bytes + b_bytes + batch * m * n * (_size(out) if split == 1 else 4 * split)
    l2 = a_bytes * (tiles_n - 1) + b_bytes * (tiles_m - 1)
    steps = batch * tiles_m * tiles_n * math.ceil(k / bk)
    smem = steps * (_dot_smem(bm * bk * item, bk * bn * item, bm, warps, instr) + (bm + bn) * bk * item)
    return Traffic(hbm, l2, smem, 2.0 * batch * tiles_m * bm * n * k)


def gemm_split_reduce(args, c, grid, warps, instr, card: Card) -> Traffic:
    out, m, n = args[1], args[5], args[6]
    size = grid[1] * m * n
    return Traffic(size * (4 * c["SPLIT_K"] + _size(out)), 0, 0, size * c["SPLIT_K"])


def fp8_gemm(args, c, grid, warps, instr, card: Card) -> Traffic:
    a, w, out = args[0], args[2], args[4]
    m, n, k = args[6], args[7], args[8]
    bm, bn, bk, split = c["BLOCK_M"], c["BLOCK_N"], c["BLOCK_K"], c.get("SPLIT_K", 1)
    tiles_m, tiles_n = math.ceil(m / bm), math.ceil(n / bn)
    a_bytes, w_bytes = m * k * _size(a), n * k
    steps = tiles_m * tiles_n * math.ceil(k / bk)
    a_item = 1 if c["ACT_QUANT"] else _size(a)  # quantized in registers, then to shared memory
    b_item = 1 if c["ACT_QUANT"] else _size(a)  # weight-only: decoded to the activation dtype
    smem = steps * (_dot_smem(bm * bk * a_item, bk * bn * b_item, bm, warps, instr) + (bm * _size(a) + bn) * bk)
    writes = m * n * (_size(out) if split == 1 else 4 * split)
    return Traffic(a_bytes + w_bytes + writes, a_bytes * (tiles_n - 1) + w_bytes * (tiles_m - 1), smem,
                   2.0 * tiles_m * bm * n * k, fp8=bool(c["ACT_QUANT"]))


def paged_mla_split(args, c, grid, warps, instr, card: Card) -> Traffic:
    q, cache, table = args[0], args[4], args[5]
    tokens, heads = args[15], args[16]
    items, row_blocks = grid
    batch = q.shape[0]
    dk, dv, bm, bn = c["DK"], c["DV"], c["BLOCK_M"], c["BLOCK_N"]
    context = table.shape[1] * c["PAGE"]  # the block table's capacity (the cache a decode row can hold)
    _, shares = schedule_reference([context] * batch, items - batch + 1)  # (the grid holds batch + parts - 1)
    row_bytes = c["ROW_BYTES"] if c.get("FP8_KV") else dk * _size(cache)
    cache_bytes = batch * context * row_bytes
    rows = tokens * heads
    q_bytes = batch * rows * dk * _size(q)
    # a row held whole is written once, in q's dtype; each share of a shared row as float32 with its LSE
    shared = sum(n for n in shares if n > 1)
    writes = sum(n == 1 for n in shares) * rows * dv * _size(q) + shared * rows * (dv + 1) * 4
    item = _size(q)  # FP8 rows are dequantized to q's dtype in registers before the dots
    steps = batch * row_blocks * math.ceil(context / bn)
    per_step = (_dot_smem(bm * dk * item, bn * dk * item, bm, warps, instr)  # S = q k^T, q from shared memory
                + _dot_smem(0, bn * dv * item, bm, warps, instr, a_in_registers=True)  # O += p v, p in registers
                + bn * row_bytes)  # the cache tile into shared memory
    q_again = q_bytes * (sum(shares) / batch - 1)  # each share loads its rows' q
    return Traffic(cache_bytes + q_bytes + writes, cache_bytes * (row_blocks - 1) + q_again,
                   steps * per_step, 2.0 * batch * row_blocks * bm * context * (dk + dv))


def paged_mla_combine(args, c, grid, warps, instr, card: Card) -> Traffic:
    """At most: every share the buffer can hold (one per schedule item, as when every cut
    falls inside a row: nearly so for rows of one length) read once."""
    mid_o, out, tokens, heads = args[0], args[3], args[5], args[6]
    batch, rows = grid[0], tokens * heads
    shares = mid_o.numel() // (rows * c["DV"])
    return Traffic(shares * rows * (c["DV"] + 1) * 4 + batch * rows * c["DV"] * _size(out), 0, 0,
                   3.0 * shares * rows * c["DV"])


def flash_attention(args, c, grid, warps, instr, card: Card) -> Traffic:
    q, k, v, out = args[0], args[4], args[8], args[14]
    batch, tokens, heads, dk = q.shape
    keys, dv = k.shape[1], c["DV"]
    bm, bn = c["BLOCK_M"], c["BLOCK_N"]
    q_blocks = grid[0]
    item = _size(q)
    kv_bytes = batch * keys * (k.shape[2] * dk + v.shape[2] * dv) * item
    visible = 0.5  # causal: a query block sees on average half of the keys
    hbm = batch * tokens * heads * (dk + dv) * item + kv_bytes
    l2 = kv_bytes * max(0.0, q_blocks * visible - 1) * (heads if k.shape[2] == 1 else 1)
    steps = grid[0] * grid[1] * math.ceil(keys / bn) * visible
    per_step = (_dot_smem(bm * c["BLOCK_DK"] * item, bn * c["BLOCK_DK"] * item, bm, warps, instr)
                + _dot_smem(0, bn * c["BLOCK_DV"] * item, bm, warps, instr, a_in_registers=True)
                + bn * (dk + dv) * item)
    return Traffic(hbm, l2, steps * per_step, 2.0 * grid[0] * grid[1] * bm * keys * visible * (dk + dv))


def expert_loads(experts: int, slots: int) -> list[tuple[int, float]]:
    """(slots, probability) of one expert's load when `slots` routed slots choose among
    `experts` independently and evenly: Binomial(slots, 1 / experts), its mass within 12
    standard deviations of the mean."""
    if experts <= 1:
        return [(slots, 1.0)]
    p = 1 / experts
    mean, sd = slots * p, math.sqrt(slots * p * (1 - p))
    lo, hi = max(0, math.floor(mean - 12 * sd - 1)), min(slots, math.ceil(mean + 12 * sd + 1))
    log_norm = math.lgamma(slots + 1)
    return [(x, math.exp(log_norm - math.lgamma(x + 1) - math.lgamma(slots - x + 1) + x * math.log(p)
                         + (slots - x) * math.log1p(-p))) for x in range(lo, hi + 1)]


def expected_experts(experts: int, slots: int) -> float:
    """How many of `experts` a batch of `slots` balanced, independent choices touches."""
    return experts * (1 - (1 - 1 / experts) ** slots) if experts else 0.0


def expected_tiles(experts: int, slots: int, rows: int) -> float:
    """Row tiles of `rows` the experts' loads cut into (each expert's run its own tiles)."""
    return experts * sum(w * math.ceil(x / rows) for x, w in expert_loads(experts, slots)) if experts else 0.0


def reread_hits_l2(distance: float, footprint: float, card: Card) -> bool:
    """A re-read `distance` programs after the first read (in launch order) hits L2 when
    both run in the same wave (one program per SM: these tiles fill one), or when the
    bytes the programs in between bring in fit in half of the L2."""
    return distance < card.sms or distance * footprint <= card.l2_mb * 1e6 / 2


def grouped_gemm(args, c, grid, warps, instr, card: Card) -> Traffic:
    """HBM: each touched expert's weights once, the activations once, the layout's rows
    written. L2 or HBM, by reuse distance in the GROUP_M launch order: the activation rows
    re-read by the row tile's other column tiles (GROUP_M programs apart), and the weights
    re-read by an expert's further tiles (the next program within a group; a group's
    whole width of programs apart for the 1 in GROUP_M that starts a new group). Masked
    rows of a partial tile read nothing but are computed."""
    a, ids, w, out = args[0], args[4], args[5], args[15]
    nk, rows, n, k = args[16], args[17], args[18], args[19]
    experts = w.shape[0]
    bm, bn, bk, group = c["BLOCK_M"], c["BLOCK_N"], c["BLOCK_K"], c["GROUP_M"]
    mats = 2 if c["SWIGLU"] else 1
    w_item, a_item = _size(w), _size(a)
    active = expected_experts(experts, nk)
    tiles = expected_tiles(experts, nk, bm)
    tiles_n = math.ceil(n / bn)
    expert_bytes = mats * n * k * w_item
    footprint = bm * k * a_item + mats * bn * k * w_item  # one program's operands
    a_hbm = (ids.shape[0] if c["GATHER"] else nk) * k * a_item
    a_again = nk * k * a_item * tiles_n - a_hbm  # real rows only: masked rows load nothing
    w_again = (tiles - active) * expert_bytes  # an expert's tiles after its first
    w_far = w_again / group  # a tile that starts a new group: a group's width of programs after
    l2 = w_again - w_far
    hbm = active * expert_bytes + a_hbm + rows * n * _size(out)  # every layout row written
    l2, hbm = (l2 + w_far, hbm) if reread_hits_l2(group * tiles_n, footprint, card) else (l2, hbm + w_far)
    l2, hbm = (l2 + a_again, hbm) if reread_hits_l2(min(group, tiles), footprint, card) else (l2, hbm + a_again)
    steps = tiles * tiles_n * math.ceil(k / bk)
    fp8 = bool(c["WFP8"] and c["ACT_QUANT"])
    b_item = 1 if fp8 else a_item
    smem = steps * (_dot_smem(bm * bk * (1 if fp8 else a_item), mats * bk * bn * b_item, bm, warps, instr)
                    + (bm * a_item + mats * bn * w_item) * bk)
    return Traffic(hbm, l2, smem, 2.0 * tiles * bm * mats * n * k, fp8=fp8)


def moe_combine(args, c, grid, warps, instr, card: Card) -> Traffic:
    y, out = args[0], args[2]
    tokens, h = grid[0], args[3]
    return Traffic(tokens * c["TOPK"] * h * _size(y) + tokens * h * _size(out), 0, 0, tokens * c["TOPK"] * h)


MODELS = {"batched_gemm": batched_gemm, "gemm_split_reduce": gemm_split_reduce, "fp8_gemm": fp8_gemm,
          "paged_mla_split": paged_mla_split,
          "paged_mla_combine": paged_mla_combine, "flash_attention": flash_attention, "grouped_gemm": grouped_gemm,
          "moe_combine": moe_combine}


def bound(t: Traffic, card: Card, programs: int) -> dict:
    """Seconds each resource needs on card, the bound (the largest, over the SMs' share the
    grid occupies) and which resource sets it."""
    peak = card.fp8_tflops if t.fp8 and card.fp8_tflops else card.bf16_tflops
    times = {"hbm": t.hbm / (card.hbm_gbps * 1e9), "l2": t.l2 / (card.l2_gbps * 1e9),
             "smem": t.smem / (card.smem_gbps * 1e9), "tensor": t.flops / (peak * 1e12)}
    share = min(1.0, programs / card.sms)
    limiter = max(times, key=times.get)
    return {"seconds": times[limiter] / share, "limiter": limiter + (" (grid)" if share < 1 else ""),
            "sm_share": share, **{f"{k}_s": v for k, v in times.items()}}


def model(labelled: list[tuple[str, list[tuple]]], card: Card) -> list[dict]:
    """One row per launch of the labelled launch_jobs lists (recorded for card.arch): its
    traffic, bound and the throughput the bound means; None fields where no model."""
    arch = int(card.arch.removeprefix("sm"))
    rows = []
    for label, jobs in labelled:
        for spec, _, _, options in jobs:
            consts, warps, grid = options["kwargs"], options.get("num_warps", 4), options["grid"]
            instr = expected_tensor_core(spec.dot_rows, consts, warps, arch) or "none"
            programs = math.prod(grid)
            row = {"where": label, "group": options["group"], "kernel": spec.name, "programs": programs,
                   "num_warps": warps, "instruction": instr,
                   "tiles": {k: v for k, v in consts.items() if k.startswith("BLOCK") or k in ("GROUP_M", "SPLIT_K")}}
            fn = MODELS.get(spec.name)
            if fn is not None:
                t = fn(options["args"], consts, grid, warps, instr, card)
                b = bound(t, card, programs)
                row.update(hbm_bytes=t.hbm, l2_bytes=t.l2, smem_bytes=t.smem, flops=t.flops, fp8=t.fp8,
                           bound_us=b["seconds"] * 1e6, limiter=b["limiter"],
                           hbm_tbps_at_bound=t.hbm / b["seconds"] / 1e12,
                           tflops_at_bound=t.flops / b["seconds"] / 1e12)
            rows.append(row)
    return rows
