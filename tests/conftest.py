import os
import sys
import tempfile

import pytest
import torch
from hypothesis import HealthCheck, settings

sys.path.insert(0, os.path.dirname(__file__))
# compiled kernels go to a private cache, never the user's
os.environ.setdefault("DSC_CACHE_DIR", tempfile.mkdtemp(prefix="dsc-test-cache-"))
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9's default, stated to silence its warning
# before any test module imports triton: without CUDA this switches on Triton's interpreter
import dsc.codegen.triton  # noqa: E402,F401

# the default profile draws the same examples on every run (CI is reproducible); the
# thorough one explores afresh each time
settings.register_profile("dsc", deadline=None, max_examples=25, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("thorough", deadline=None, max_examples=300,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("DSC_HYPOTHESIS_PROFILE", "dsc"))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


# -- how many examples hypothesis drew in this run (printed at its end; summed over xdist workers)

_EXAMPLES = {"drawn": 0}


def _count_example(observation):
    if observation.type == "test_case" and observation.status != "gave_up":  # ran the test body
        _EXAMPLES["drawn"] += 1


def pytest_configure(config):
    from hypothesis.internal import observability

    # counting needs no coverage: tracing every line would slow each example several fold (Python 3.11)
    observability.OBSERVABILITY_COLLECT_COVERAGE = False
    observability.add_observability_callback(_count_example)


def pytest_sessionfinish(session):
    if hasattr(session.config, "workeroutput"):  # an xdist worker: report to the controller
        session.config.workeroutput["hypothesis_examples"] = _EXAMPLES["drawn"]


@pytest.hookimpl(optionalhook=True)  # an xdist hook
def pytest_testnodedown(node, error):
    _EXAMPLES["drawn"] += getattr(node, "workeroutput", {}).get("hypothesis_examples", 0)


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(f"hypothesis examples drawn: {_EXAMPLES['drawn']}")
