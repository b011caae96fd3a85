"""Paper figures: one module per theory preset, each ``draw(frame, out_dir, name) -> [png, pdf]``.

A figure selects rows of a result store and draws them; ``draw_run`` reads a run directory's preset
from its manifest and dispatches.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd

from paper_figures import (
    advice,
    anneal,
    anneal_fraction,
    depth,
    finetune,
    gaussian,
    general,
    landscape,
    llm_finetune,
    llm_perturb,
    misalignment,
    multimodal,
    quantization,
    regularization,
    replay,
    sam,
    schedule,
    shrinking,
    tuned_lr,
    weight_decay,
)
from rundir import store

FIGURES = {
    "smoke": gaussian.draw,
    "gaussian": gaussian.draw,
    "finetune": finetune.draw,
    "regularization": regularization.draw,
    "tuned_lr": tuned_lr.draw,
    "depth": depth.draw,
    "misalignment": misalignment.draw,
    "schedule": schedule.draw,
    "anneal": anneal.draw,
    "quantization": quantization.draw,
    "multimodal": multimodal.draw,
    "weight_decay": weight_decay.draw,
    "replay": replay.draw,
    "sam": sam.draw,
    "anneal_fraction": anneal_fraction.draw,
    "landscape": landscape.draw,
    "general": general.draw,
    "shrinking": shrinking.draw,
    "tuned_finite": functools.partial(tuned_lr.draw, preset="tuned_finite"),
    "landscape_gamma": landscape.draw,
    "landscape_alpha": landscape.draw_alpha,
    "llm_perturb": llm_perturb.draw,
    "llm_finetune": llm_finetune.draw,
    "advise": advice.draw,
}


def why_not_drawable(run_dir: Path | str) -> str | None:
    """None when ``run_dir`` has a figure and something to draw, else why not (one line naming it)."""
    return _drawable(run_dir)[1]


def _drawable(run_dir: Path | str) -> tuple[pd.DataFrame | None, str | None]:
    """(the run's table, None) when it can be drawn, else (None, why not). The kind is the theory
    preset, or the ``ovt llm`` command (``llm perturb`` draws as llm_perturb)."""
    try:
        kind = store.run_kind(run_dir)
        if kind not in FIGURES:
            return None, f"{run_dir}: {kind!r} runs have no figure (figures exist for: {', '.join(FIGURES)})"
        frame = store.load(run_dir)
    except (OSError, ValueError) as error:
        return None, str(error)
    if not np.isfinite(frame.value.to_numpy(float)).any():
        return None, f"{run_dir}: {store.METRICS} holds no finite value to draw ({len(frame)} rows)"
    # The run's config travels with its rows, for figures that draw a prediction made from it.
    frame.attrs["config"] = store.read_manifest(run_dir).get("config", {})
    return frame, None


def draw_run(run_dir: Path | str, out_dir: Path | str, name: str | None = None) -> list[Path]:
    """Draw the figure of the run in ``run_dir`` into ``out_dir``, named ``name`` (default: its kind);
    ValueError (naming the run) when it cannot be drawn."""
    frame, reason = _drawable(run_dir)
    if reason:
        raise ValueError(reason)
    kind = store.run_kind(run_dir)
    return FIGURES[kind](frame, Path(out_dir), name=name or kind)
