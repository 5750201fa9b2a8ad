"""The examples/ scripts run (each checks its own results and fails loudly when wrong)."""

import os
import subprocess
import sys

import pytest

from util import installed

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples")


@pytest.mark.parametrize("script, needs", [("custom_ops.py", "triton"), ("torch_compile.py", None),
                                           ("hf_drop_in.py", "transformers")])
def test_example_runs(script, needs):
    if needs and not installed(needs):
        pytest.skip(f"{script} needs {needs}")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, os.path.join(EXAMPLES, script)], capture_output=True, text=True,
                          timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rel err" in done.stdout
