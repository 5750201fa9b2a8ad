"""The static resource report: what every Triton kernel dsc launches at DeepSeek-V3's
shapes compiles to for sm_90 and sm_80, without a GPU (dsc.bench.resources).

    python benchmarks/resource_report.py [--arch sm90 sm80] [--out-dir benchmarks/results/resources]

Writes one JSON per arch, named by the arch and the Triton version, and prints a table
and the gate's problems (spills; dots not on the tensor-core instruction their tiles
call for). Exit status 1 where there is a problem. The committed files are the ones
made with the GPU machines' Triton 3.6 (CI's gate: tests/codegen/triton/test_resource_gate.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from dsc.bench.resources import report
from dsc.cli import write_atomic

HERE = os.path.dirname(os.path.abspath(__file__))


def table(found: dict) -> str:
    lines = [f"{found['arch']} (triton {found['triton']}): {len(found['kernels'])} distinct kernels"]
    for k in found["kernels"]:
        spills = f"{k['spill_store_bytes']}/{k['spill_load_bytes']} B" if k["spill_store_bytes"] else "none"
        want = f" (design: {k['expected_tensor_core']})" if k["expected_tensor_core"] else ""
        lines.append(f"  {k['name'][:40]:40s} {k['variant'][:66]:66s} regs {k['registers']:>3} spills {spills:>12} "
                     f"smem {k['shared_bytes'] // 1024:>3} KiB {k['tensor_core']}{want}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=["sm90", "sm80"], choices=["sm90", "sm80"])
    parser.add_argument("--out-dir", default=os.path.join(HERE, "results", "resources"))
    args = parser.parse_args(argv)
    problems = []
    for arch in args.arch:
        found = report(arch)
        path = os.path.join(args.out_dir, f"{arch}-triton-{found['triton']}.json")
        write_atomic(path, json.dumps(found, indent=1))
        print(table(found))
        print(f"  -> {path}")
        problems += found["problems"]
    print("\n".join(["problems:"] + problems) if problems else "no problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
