"""Checkpoint revision names: the step, token count and stage a name states, and the name of a count.

Plain Python (no torch), so configs and the command line read and write names without loading a model.
The forms are those of the public suites (``suites``): OLMo's ``step{N}-tokens{M}B`` and its stage
prefixes, Amber's ``ckpt_{NNN}``, Pythia's ``step{N}`` and SmolLM2's ``step-{N}``; and a WSD series'
un-annealed trunk checkpoints, ``trunk-step{N}-tokens{M}`` (stage ``trunk``, ``TRUNK_STAGE``).
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

from llm_validation import suites
from rundir.tokens import UNITS

AMBER_CHECKPOINTS = 360
AMBER_TOTAL_TOKENS = 1_260 * 10**9
# Amber's branches carry no token count. Its card reports ~1.26T tokens over 360 evenly spaced
# checkpoints, so ckpt_i is assigned (i + 1) * 1.26T / 360 = (i + 1) * 3.5B tokens: approximate.
AMBER_TOKENS_PER_CHECKPOINT = AMBER_TOTAL_TOKENS // AMBER_CHECKPOINTS

_STEP_TOKENS = re.compile(
    r"(?:(?P<stage>stage1|stage2-ingredient\d+|trunk)-)?step(?P<step>\d+)-tokens(?P<count>\d+)(?P<unit>[KMBT]?)"
)
TRUNK_STAGE = "trunk"  # a WSD series' checkpoint taken on its constant-lr trunk, not annealed
_AMBER = re.compile(r"ckpt_(?P<index>\d{3})")
_STEP_ONLY = re.compile(r"step(?P<dash>-?)(?P<step>\d+)")  # Pythia step{N}, SmolLM2 step-{N}
ALLOWED_FORMS = (
    "step{N}-tokens{M}{K|M|B|T}, stage1-step{N}-tokens{M}B, "
    "stage2-ingredient{K}-step{N}-tokens{M}B, trunk-step{N}-tokens{M}{K|M|B|T}, "
    "ckpt_{NNN} (000-359), step{N} (Pythia), step-{N} (SmolLM2)"
)


@dataclasses.dataclass(frozen=True)
class Revision:
    """One checkpoint's position in pre-training.

    ``tokens`` is the count the name states (rounded to its unit), or for a local series with a
    ``checkpoint.json`` the exact count. For Amber ``step`` is the checkpoint index.
    """

    name: str
    step: int
    tokens: int
    stage: str | None = None


def format_revision(step: int, tokens: int) -> str:
    """``step{step}-tokens{M}{unit}``, e.g. ``format_revision(1200, 5_242_880) == 'step1200-tokens5M'``.

    The unit is the largest of K, M, B, T that divides ``tokens`` exactly (``tokens3094B``, as OLMo
    writes it; ``tokens1900K``), so the name round-trips the count. A count that no unit divides is
    written in the largest unit that leaves at least three digits, rounded down (``1234567`` ->
    ``1234K``); a count below 100K that no unit divides is written in full, without a unit. The exact count belongs in
    ``checkpoint.json`` beside the weights.
    """
    if step < 0 or tokens < 0:
        raise ValueError(f"step={step} and tokens={tokens} must be non-negative integers")
    exact = [u for u in UNITS if tokens and tokens % UNITS[u] == 0]
    readable = [u for u in UNITS if tokens >= 100 * UNITS[u]]
    unit = max(exact or readable or [""], key=lambda u: UNITS[u] if u else 0)
    count = tokens // UNITS[unit] if unit else tokens
    return f"step{int(step)}-tokens{int(count)}{unit}"


def parse_revision(name: str, model: str | os.PathLike | None = None) -> Revision:
    """The step, token count and stage a revision name states; ValueError for any other name.

    ``model`` (a hub id or folder) supplies what the name leaves out: tokens per step for ``step{N}``
    and ``step-{N}`` (``suites.tokens_per_step``), and stage 1 for an unprefixed name in an OLMo-2 suite.
    """
    if match := _STEP_TOKENS.fullmatch(name):
        unit = match["unit"]
        tokens = int(match["count"]) * (UNITS[unit] if unit else 1)
        return Revision(name, int(match["step"]), tokens, match["stage"] or suites.stage_of(_repo(model)))
    if (match := _AMBER.fullmatch(name)) and int(match["index"]) < AMBER_CHECKPOINTS:
        index = int(match["index"])
        return Revision(name, index, (index + 1) * AMBER_TOKENS_PER_CHECKPOINT)
    if match := _STEP_ONLY.fullmatch(name):
        step = int(match["step"])
        return Revision(name, step, step * suites.tokens_per_step(_repo(model), "step" + match["dash"]))
    raise ValueError(f"revision={name!r} is not a checkpoint name; allowed: {ALLOWED_FORMS}")


def _repo(model: str | os.PathLike | None) -> str | None:
    return None if model is None or isinstance(model, Path) else str(model)
