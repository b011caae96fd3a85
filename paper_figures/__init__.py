"""Paper figures: one module per theory preset, each ``draw(frame, out_dir, name) -> [png, pdf]``.

A figure selects rows of a result store and draws them; ``draw_run`` reads a run directory's preset
from its manifest and dispatches.
"""

from __future__ import annotations

from pathlib import Path

from experiments import store
from paper_figures import (depth, finetune, gaussian, llm_finetune, llm_perturb, misalignment, regularization,
                           schedule, tuned_lr)

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


def draw_run(run_dir: Path | str, out_dir: Path | str, name: str | None = None) -> list[Path]:
    """Draw the figure of the run in ``run_dir`` into ``out_dir``, named ``name`` (default: its preset)."""
    manifest = store.read_manifest(run_dir)
    # ``ovt llm`` stores name their command rather than a preset: "llm perturb" draws as llm_perturb.
    preset = manifest.get("preset") or manifest.get("command", "").replace(" ", "_")
    if preset not in FIGURES:
        raise ValueError(f"{run_dir}: preset={preset!r} has no figure; allowed: {', '.join(FIGURES)}")
    return FIGURES[preset](store.load([run_dir]), Path(out_dir), name=name or preset)
