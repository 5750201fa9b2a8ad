"""The import rules of dsc's one-way flow (ARCHITECTURE.md), checked against the code.

Every `import` in dsc, at module level or inside a function, is an arrow from its file's
part to the imported module's part; the rules below are arrows that must never exist.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "dsc"

# Parts of the house, bottom up: a module belongs to the first part whose prefix it has.
PARTS = {
    "floor": ("dsc.errors", "dsc.version", "dsc.routing"),
    "config": ("dsc.config", "dsc.presets"),
    "ir": ("dsc.ir",),
    "eager": ("dsc.eager",),
    "builders": ("dsc.builders",),
    "passes": ("dsc.passes",),
    "runtime": ("dsc.runtime",),
    "codegen": ("dsc.codegen",),
    "executor": ("dsc.executor",),
    "compiler": ("dsc.compiler",),
    "frontends": ("dsc.nn", "dsc.ops", "dsc.compat", "dsc.integrations", "dsc.tune", "dsc.bench"),
    "cli": ("dsc.cli", "dsc.__main__"),
    "face": ("dsc",),
}
ABOVE_CODEGEN = ("executor", "compiler", "frontends", "cli", "face")

# (part, parts it must never import, why)
RULES = [
    ("floor", set(PARTS) - {"floor"}, "errors, the version and the routing rules are the ground: they import nothing of dsc"),
    ("config", {"builders", "passes", "runtime", "codegen", "executor", *ABOVE_CODEGEN},
     "a Config is data: it knows the IR's rope math, nothing that compiles"),
    ("ir", {"config", "eager", "builders", "passes", "runtime", "codegen", *ABOVE_CODEGEN},
     "the IR knows no Config, builder, pass or backend"),
    ("eager", set(PARTS) - {"floor", "config", "eager"},
     "the plain-PyTorch oracle shares nothing with what it checks"),
    ("builders", {"eager", "passes", "runtime", "codegen", *ABOVE_CODEGEN}, "builders make naive IR from a Config"),
    ("passes", {"config", "eager", "builders", "runtime", "codegen", *ABOVE_CODEGEN},
     "passes rewrite IR into IR; node constructors come from dsc.ir.build"),
    ("runtime", {"config", "eager", "builders", "passes", "codegen", *ABOVE_CODEGEN},
     "the services floor (cache, loader, device, tuned configs, timing, nvrtc) imports no backend"),
    ("codegen", {"eager", "builders", *ABOVE_CODEGEN}, "backends lower groups; the executor above them runs them"),
    ("executor", {"eager", "builders", "passes", "compiler", "frontends", "cli", "face"},
     "the executor runs lowered graphs; it neither builds nor rewrites them"),
    ("frontends", {"cli", "face"}, "the library's faces never reach into the command line"),
]


def part_of(module: str) -> str:
    for part, prefixes in PARTS.items():
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return part
    raise AssertionError(f"{module} is on no part of ARCHITECTURE.md")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports(path: Path) -> list[tuple[str, int]]:
    """Every dsc module the file imports (resolved `from X import name` to X.name where that is a module)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.append((sub if _is_module(sub) else node.module, node.lineno))
    return [(m, line) for m, line in found if m == "dsc" or m.startswith("dsc.")]


def _is_module(name: str) -> bool:
    base = ROOT.parent.joinpath(*name.split("."))
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def arrows() -> list[tuple[str, str, str, int]]:
    """(importer part, imported part, 'file:line -> module', line) for every import in dsc."""
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        src = part_of(module_name(path))
        for mod, line in imports(path):
            out.append((src, part_of(mod), f"{path.relative_to(ROOT.parent)}:{line} -> {mod}", line))
    return out


def test_every_module_is_on_a_part():
    for path in ROOT.rglob("*.py"):
        part_of(module_name(path))


@pytest.mark.parametrize("part,forbidden,why", RULES, ids=[r[0] for r in RULES])
def test_import_rule(part, forbidden, why):
    broken = sorted({where for src, dst, where, _ in arrows() if src == part and dst in forbidden})
    assert not broken, f"{part} must not import {sorted(forbidden)} ({why}):\n  " + "\n  ".join(broken)


def test_the_rules_see_imports():
    """The walk finds arrows at all (a rule over no arrows could never fail)."""
    found = {(src, dst) for src, dst, _, _ in arrows()}
    assert ("codegen", "runtime") in found and ("passes", "ir") in found and ("cli", "frontends") in found
