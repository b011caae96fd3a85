"""The documents as a whole: a short README, each measured number stated once, no dangling link.

`make test` builds the site with `mkdocs build --strict` as well, which checks the links and anchors
of the built pages; these tests check what holds on GitHub too, without building anything.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
README_LIMIT = 12_000

FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK_TARGET = re.compile(r"\]\(([^)\s]+)[^)]*\)")
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.M)

NUMBER = r"(?<![\w.^/-])(\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?)"
# A unit after at most one space; a multiple ("1.93x") only without one, since "8 x 128" is a shape.
UNIT = (
    r"(?:\s?(tokens/param|tokens per parameter|core-hours|core-h|GFLOP/s|tok/s|tokens/s"
    r"|GiB|MiB|KiB|GB|MB|nats|min|ms|us|s|h)(?![\w/])|(%)|(x)(?![\w]))"
)
MEASURED = re.compile(NUMBER + UNIT)
ALIASES = {"tokens per parameter": "tokens/param", "core-hours": "core-h"}
# Values that more than one document may state, each for its reason.
NOT_A_MEASUREMENT = {
    ("95", "%"): "the confidence level of every interval",
    ("10", "s"): "two different quantities: the rbg compile saving and the GPU recipe's estimated noise time",
}


def _prose(text: str) -> str:
    """The text without fenced code blocks, code spans and link targets."""
    return LINK_TARGET.sub("]", CODE_SPAN.sub("", FENCE.sub("", text)))


def measured_numbers(text: str) -> set[tuple[str, str]]:
    """The measured numbers of a document, as (value, unit) pairs.

    A measured number is a decimal number (thousands commas and an exponent allowed) directly
    followed by a unit of time (s, ms, us, min, h), memory (GiB, MiB, KiB, GB, MB), throughput
    (GFLOP/s, tok/s, tokens/s), loss (nats), cost (core-h, core-hours), data (tokens/param,
    "tokens per parameter"), a percentage or a ratio ("1.93x", no space before the x). Fenced code
    blocks (commands, doctests), code spans (settings such as `--time 60`) and link targets are not
    prose and are skipped. Bare numbers (T* values, shapes, settings) are not counted: without a
    unit a number cannot be told from a setting. The value is compared as written, commas removed,
    so "9.5 min" and "9.50 min" would count as two numbers; a range counts by its upper end
    ("0.09-0.12 s" gives 0.12 s).
    """
    found = set()
    for m in MEASURED.finditer(_prose(text)):
        unit = next(u for u in m.groups()[1:] if u)
        found.add((m.group(1).replace(",", ""), ALIASES.get(unit, unit)))
    return found


def test_the_readme_is_a_front_door():
    assert len(README.read_text()) <= README_LIMIT


def test_the_extractor_counts_measured_numbers_only():
    text = "took 13 min 24 s, 1.93x, 19.6 MiB, 25 core-hours, 2,013 tokens/param; 8 x 128 `--time 60` 3 series"
    assert measured_numbers(text) == {
        ("13", "min"),
        ("24", "s"),
        ("1.93", "x"),
        ("19.6", "MiB"),
        ("25", "core-h"),
        ("2013", "tokens/param"),
    }
    assert measured_numbers("```\nmake test  # 9.5 min\n```\n") == set()


def test_no_measured_number_is_stated_in_two_documents():
    where = defaultdict(set)
    for doc in [README, *DOCS]:
        for number in measured_numbers(doc.read_text()):
            where[number].add(doc.relative_to(ROOT).as_posix())
    twice = {
        f"{value} {unit}": sorted(docs)
        for (value, unit), docs in where.items()
        if len(docs) > 1 and (value, unit) not in NOT_A_MEASUREMENT
    }
    assert not twice, f"state each measured number once and link to it: {twice}"


def relative_links(text: str) -> list[str]:
    """Link and image targets of a document that point into the repository (no scheme, no bare anchor)."""
    text = FENCE.sub("", text)
    targets = [m.group(1) for m in LINK_TARGET.finditer(text)] + REFERENCE.findall(text)
    return [t for t in targets if "://" not in t and not t.startswith(("#", "mailto:"))]


def test_every_relative_link_points_to_a_file():
    missing = [
        f"{doc.relative_to(ROOT)}: {target}"
        for doc in [README, *sorted((ROOT / "docs").rglob("*.md"))]
        for target in relative_links(doc.read_text())
        if not (doc.parent / target.split("#", 1)[0]).exists()
    ]
    assert not missing, missing
