"""The house's shape, as the layout rules state it (docs/ARCHITECTURE.md): small modules, a short top
level of ``experiments/``, and every package under import-linter's acyclic contract."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("analysis", "theory", "llm_validation", "experiments", "paper_figures", "rundir", "benchmarks")
MAX_LINES = 400
MAX_EXPERIMENTS_ENTRIES = 9  # ARCHITECTURE "third wave": compare.py, explore.py, advise.py at the top


def test_no_module_of_the_product_is_over_400_lines():
    long = {
        str(path.relative_to(ROOT)): n
        for package in PRODUCT
        for path in (ROOT / package).rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, long


def test_experiments_has_at_most_nine_entries_at_its_top_level():
    entries = sorted(p.name for p in (ROOT / "experiments").iterdir() if p.name != "__pycache__")
    assert len(entries) <= MAX_EXPERIMENTS_ENTRIES, entries


def test_every_package_is_under_the_acyclic_contract():
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    [acyclic] = [c for c in contracts if c["type"] == "acyclic_siblings"]
    packages = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for package in PRODUCT
        for init in (ROOT / package).rglob("__init__.py")
    }
    assert packages - {"benchmarks"} <= set(acyclic["ancestors"]), sorted(packages - set(acyclic["ancestors"]))
