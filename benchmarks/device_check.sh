#!/usr/bin/env bash
# The repository's one-call GPU check: on a GPU machine (H100/H200, Python 3.12, torch,
# triton 3.6, no TVM, no network) it installs dsc offline, runs tests/gpu, times the kernel
# groups at DeepSeek-V3 shapes (benchmarks/kernels.py) and records what every kernel
# compiled to (benchmarks/kernel_resources.py over this run's Triton cache), writing each
# stage's result as it finishes, inside 8 minutes (the stages' limits add up to 480 s; a stage
# that runs out is recorded with rc 124 and the next one still runs).
#
#   bash benchmarks/device_check.sh --prepare   # here, once: wheels and TVM's CUDA kernels into .device/
#   bash benchmarks/device_check.sh             # there: one `run` call with carry [".device"]
#   bash benchmarks/device_check.sh --smoke     # here: every stage at tiny sizes (no GPU needed)
#
# Results go to $OUT (the device tool's folder that comes back; else
# benchmarks/results/device-check): status.jsonl (one line per stage: name, rc, seconds),
# env.json, gpu-tests.log, kernels.json, resources.json.
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-gpu}
PY=${PYTHON:-python3}
OUT=${OUT:-$PWD/benchmarks/results/device-check}
export PY OUT
mkdir -p "$OUT"
: > "$OUT/status.jsonl"

if [ "$MODE" = "--prepare" ]; then
  mkdir -p .device/wheels
  cp ../shared/device/wheels-py312/*.whl .device/wheels/
  for p in default fp8; do for d in float32 bfloat16; do
    passes=default; [ $p = fp8 ] && passes=absorb,fuse_experts,fp8,fp8_kv,fold,cse,dce
    $PY -m dsc compile tiny-v3 --backend tvm --target sm90 --dtype $d --passes $passes \
      --out .device/tvm-artifacts/$d-$p || exit 1
  done; done
  echo "prepared .device/ ($(du -sh .device | cut -f1)); carry it: run(..., carry=[\".device\"])"
  exit 0
fi

stage() {  # stage NAME SECONDS COMMAND...: run it under a time limit and record its outcome at once
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  if declare -F "$1" > /dev/null; then  # a function of this script: timeout runs it in a child bash
    timeout "$limit" bash -c "$(declare -f "$1"); $*"
  else
    timeout "$limit" "$@"
  fi
  local rc=$?
  echo "{\"stage\": \"$name\", \"rc\": $rc, \"seconds\": $((SECONDS - start))}" >> "$OUT/status.jsonl"
  echo "== $name: rc $rc in $((SECONDS - start)) s"
  return 0
}

install() {
  # dsc's small dependencies from the carried wheels (Python 3.12), where the machine lacks them
  if ! $PY -c "import numpy, sympy, rich, pytest, hypothesis" 2>/dev/null; then
    $PY -m pip install -q --no-index --no-deps --target /tmp/dsc-site .device/wheels/*.whl || return 1
  fi
  $PY -c "import dsc" 2>/dev/null || $PY -m pip install -q --no-index --no-deps --no-build-isolation -e . \
    || echo "pip install -e failed: dsc runs from the tree (PYTHONPATH)"
  $PY -c "import dsc, torch, triton, sympy, numpy, hypothesis"
}

environment() {
  $PY - "$OUT/env.json" <<'PY'
import json, platform, sys, torch, triton
info = {"python": platform.python_version(), "torch": torch.__version__, "triton": triton.__version__,
        "cuda": torch.version.cuda, "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}
json.dump(info, open(sys.argv[1], "w"), indent=1)
print(info)
PY
}

export PYTHONPATH="/tmp/dsc-site:$PWD:${PYTHONPATH:-}"
export TRITON_CACHE_DIR=$(mktemp -d)  # this run's kernels only: what the resources stage reads
BENCH=$(mktemp -d)
[ -d .device/tvm-artifacts ] && export DSC_TVM_ARTIFACTS=$PWD/.device/tvm-artifacts
SMOKE=(); [ "$MODE" = "--smoke" ] && SMOKE=(--smoke)

stage install 60 install
stage environment 30 environment
stage gpu-tests 180 bash -c "$PY -m pytest -q -p no:cacheprovider tests/gpu > '$OUT/gpu-tests.log' 2>&1"
stage kernels 150 $PY benchmarks/kernels.py "${SMOKE[@]}" --out "$BENCH"
find "$BENCH" -name 'kernels*.json' -exec cp {} "$OUT/kernels.json" \; 2>/dev/null
if [ "$MODE" = "--smoke" ]; then  # the interpreter compiles nothing: compile one kernel for sm_90 to scan
  stage compile-sample 120 $PY -c "
from dsc.codegen.triton import gemm
from dsc.codegen.triton.build import compile_for
compile_for(*gemm.signature('bf16')[0], 90)"
fi
stage resources 60 $PY benchmarks/kernel_resources.py "$TRITON_CACHE_DIR" --out "$OUT/resources.json"
if grep -q '"rc": [1-9]' "$OUT/status.jsonl"; then
  echo "device check: a stage failed (see $OUT/status.jsonl)"; exit 1
fi
echo "device check: every stage passed -> $OUT"
