"""The examples/ scripts run with every backend they offer, each in a fresh interpreter
started as a user starts it (no TRITON_INTERPRET from this test run: an import-order
defect must show here). Each script checks its own results and fails loudly when wrong."""

import os

import pytest

from util import installed, run_clean

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples")
BACKENDS = ("reference", "triton", "tvm")


def _example(script, backend=None, needs=()):
    marks = [pytest.mark.skipif(not installed(n), reason=f"{script} needs {n}") for n in needs]
    return pytest.param(script, backend, marks=marks, id=f"{script}-{backend}" if backend else script)


@pytest.mark.parametrize("script, backend", [
    *[_example("custom_ops.py", b, needs=("triton", "tvm") if b == "tvm" else ("triton",)) for b in ("triton", "tvm")],
    *[_example("torch_compile.py", b, needs=("tvm",) if b == "tvm" else ()) for b in BACKENDS],
    *[_example("hf_drop_in.py", b, needs=("transformers", "tvm") if b == "tvm" else ("transformers",))
      for b in BACKENDS],
])
def test_example_runs(script, backend):
    done = run_clean([os.path.join(EXAMPLES, script), *(["--backend", backend] if backend else [])])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rel err" in done.stdout
