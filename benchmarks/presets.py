"""Run `dsc run` on every preset and keep the reports, with the device they ran on.

    python benchmarks/presets.py [--device cpu] [--dtype float32] [--passes default] [PRESET ...]

Writes benchmarks/results/<device>/dsc-run-<dtype>[-<passes>].json: per preset, the
relative errors against the eager reference, the times, KV-cache bytes per token
against MHA, weight bytes, and the cost model's figures after every pass (layers too
large for the machine are reported as not executed).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def device_name(device: str) -> str:
    from dsc.runtime.device import detect

    return detect(device).name


def slug(text: str) -> str:
    """A device (or label) as a folder name: benchmarks/results/<slug(device)>/."""
    from dsc.runtime.device import slug as device_slug

    return device_slug(text)


def main() -> int:
    from dsc.presets import PRESET_NAMES

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("presets", nargs="*", default=list(PRESET_NAMES))
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--passes", default="default")
    args = p.parse_args()

    name = device_name(args.device)
    results = {"device": name, "torch": torch.__version__, "threads": torch.get_num_threads(),
               "date": datetime.date.today().isoformat(), "dtype": args.dtype, "passes": args.passes, "presets": {}}
    for preset in args.presets:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "report.json")
            r = subprocess.run([sys.executable, "-m", "dsc", "run", preset, "--device", args.device, "--dtype",
                                args.dtype, "--passes", args.passes, "--json", out], capture_output=True, text=True)
            sys.stdout.write(r.stdout)
            if r.returncode not in (0, 1):
                sys.stderr.write(r.stderr)
                return r.returncode
            with open(out) as f:
                results["presets"][preset] = json.load(f)
    label = "" if args.passes == "default" else "-" + slug(args.passes)
    path = os.path.join(HERE, "results", slug(name), f"dsc-run-{args.dtype}{label}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(results, f, indent=2, default=str)
    print(f"wrote {os.path.relpath(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
