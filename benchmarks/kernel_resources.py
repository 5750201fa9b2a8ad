"""What every kernel in a Triton cache compiled to, read without a GPU: registers, spilled
bytes and stack (from the ptxas Triton compiles with, run on the cached PTX), shared
memory, warps and stages (the cache's metadata), and the tensor-core instruction its
PTX uses (wgmma, mma.sync or none).

    python benchmarks/kernel_resources.py CACHE_DIR --out FILE.json

CACHE_DIR is a TRITON_CACHE_DIR a run filled (benchmarks/device_check.sh sets one). Each
record: name, arch, num_warps, num_stages, shared_bytes, registers, spill_store_bytes,
spill_load_bytes, stack_bytes, tensor_core.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

from dsc.codegen.triton.resources import ptx_usage, tensor_core


def scan(cache_dir: str) -> list[dict]:
    records = []
    for meta_path in sorted(glob.glob(os.path.join(cache_dir, "*", "*.json"))):
        if os.path.basename(meta_path).startswith("__grp__"):
            continue
        ptx_path = meta_path[: -len(".json")] + ".ptx"
        if not os.path.exists(ptx_path):
            continue
        with open(meta_path) as f:
            meta = json.load(f)
        arch = int(meta["target"]["arch"])
        with open(ptx_path) as f:
            ptx = f.read()
        usage = ptx_usage(ptx, arch)
        records.append({"name": meta["name"], "arch": arch, "num_warps": meta.get("num_warps"),
                         "num_stages": meta.get("num_stages"), "shared_bytes": meta.get("shared"), **usage,
                         "tensor_core": tensor_core(ptx), "triton": meta.get("triton_version")})
    return records


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cache_dir")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    records = scan(args.cache_dir)
    with open(args.out, "w") as f:
        json.dump({"kernels": records}, f, indent=1)
    for r in records:
        print(f"{r['name']:28s} sm_{r['arch']} warps {r['num_warps']} stages {r['num_stages']} "
              f"regs {r['registers']} spills {r['spill_store_bytes']} B smem {r['shared_bytes']} B {r['tensor_core']}")
    print(f"{len(records)} compiled kernels -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
