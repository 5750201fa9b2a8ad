"""How dsc installs: under a distribution name of its own (`dsc` on the package index is
an unrelated project), and every install hint dsc prints names that distribution."""

import importlib.metadata
import os
import re

import dsc
from dsc.errors import DISTRIBUTION, install_hint

ROOT = os.path.join(os.path.dirname(__file__), "..")


def test_installed_under_its_own_distribution_name():
    dist = importlib.metadata.distribution(DISTRIBUTION)
    assert DISTRIBUTION == "dsc-compiler" and dist.metadata["Name"] == DISTRIBUTION
    assert dist.version == dsc.__version__


def test_every_install_hint_names_the_distribution():
    assert install_hint("tvm") == "pip install 'dsc-compiler[tvm]'"
    stale = []
    for folder, _, files in os.walk(os.path.join(ROOT, "dsc")):
        for name in files:
            if name.endswith(".py"):
                text = open(os.path.join(folder, name), encoding="utf-8").read()
                stale += [f"{name}: {m}" for m in re.findall(r"pip install '?dsc\[\w+\]", text)]
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    stale += [f"README.md: {m}" for m in re.findall(r"pip install '?dsc(?:\[\w+\])?'?(?:\s|$)", readme)]
    assert not stale, stale
