"""Paper figures: one module per theory preset, each ``draw(frame, out_dir, name) -> [png, pdf]``.

A figure selects rows of a result store and draws them; ``draw_run`` reads a run directory's preset
from its manifest and dispatches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from experiments import store
from paper_figures import (
    depth,
    finetune,
    gaussian,
    llm_finetune,
    llm_perturb,
    misalignment,
    regularization,
    schedule,
    tuned_lr,
)

FIGURES = {
    "smoke": gaussian.draw,
    "gaussian": gaussian.draw,
    "finetune": finetune.draw,
    "regularization": regularization.draw,
    "tuned_lr": tuned_lr.draw,
    "depth": depth.draw,
    "misalignment": misalignment.draw,
    "schedule": schedule.draw,
    "llm_perturb": llm_perturb.draw,
    "llm_finetune": llm_finetune.draw,
}


def why_not_drawable(run_dir: Path | str) -> str | None:
    """None when ``run_dir`` has a figure and something to draw, else why not (one line naming it).

    The kind is the theory preset, or the ``ovt llm`` command (``llm perturb`` draws as llm_perturb)."""
    try:
        kind = store.run_kind(run_dir)
        if kind not in FIGURES:
            return f"{run_dir}: {kind!r} runs have no figure (figures exist for: {', '.join(FIGURES)})"
        values = store.read_table(run_dir).value.to_numpy(float)
    except (OSError, ValueError) as error:
        return str(error)
    if not np.isfinite(values).any():
        return f"{run_dir}: {store.METRICS} holds no finite value to draw ({values.size} rows)"
    return None


def draw_run(run_dir: Path | str, out_dir: Path | str, name: str | None = None) -> list[Path]:
    """Draw the figure of the run in ``run_dir`` into ``out_dir``, named ``name`` (default: its kind);
    ValueError (naming the run) when it cannot be drawn."""
    reason = why_not_drawable(run_dir)
    if reason:
        raise ValueError(reason)
    kind = store.run_kind(run_dir)
    return FIGURES[kind](store.load(run_dir), Path(out_dir), name=name or kind)
