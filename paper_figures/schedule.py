"""Annealed vs un-annealed checkpoints (preset ``schedule``): minibatch SGD with a cosine schedule,
either one run per budget (``separate``: every checkpoint is the end of its own annealed run) or one
run at the largest budget read off at the smaller ones (``single``: checkpoints mid-schedule).
Seeds are drawn as their mean with a min..max band."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from paper_figures import style

MODES = {
    "separate": ("separate runs (annealed checkpoints)", "#3b528b"),
    "single": ("single run (un-annealed checkpoints)", "#5ec962"),
}


def seed_band(rows: pd.DataFrame) -> tuple[np.ndarray, ...]:
    """(T, mean, min, max) over seeds; every T must hold every seed, else the band would mislead."""
    per_t = rows.groupby("pretrain_time").value
    counts = per_t.size()
    if counts.nunique() != 1 or counts.iloc[0] != rows.seed.nunique():
        raise ValueError(f"seeds {sorted(rows.seed.unique())} do not all reach every T: {counts.to_dict()}")
    stats = per_t.agg(["mean", "min", "max"])
    return stats.index.to_numpy(float), *(stats[c].to_numpy(float) for c in ("mean", "min", "max"))


def band_panel(ax, frame: pd.DataFrame, modification: str, ylabel: str) -> None:
    """Mean L_A over seeds per series mode with its min..max band; each seed's stored interior T* marked
    on the mean curve (a seed whose minimum is flat - within the seeds' spread - or at an end, none)."""
    drawn = {}
    for mode, (label, colour) in MODES.items():
        rows = style.curve_rows(frame, modification, "pretrain_loss", series_mode=mode)
        if rows.empty:
            continue
        T, mean, lo, hi = seed_band(rows)
        ax.fill_between(T, lo, hi, color=colour, alpha=0.25, lw=0, zorder=2)
        ax.plot(T, mean, color=colour, marker=".", ms=5, label=label, zorder=3)
        for t_star in style.marked(style.inflection_rows(frame, modification, series_mode=mode)):
            style.mark_inflection(ax, T, mean, t_star, colour)
        drawn[(mode, "lo")], drawn[(mode, "hi")] = (T, lo), (T, hi)
    style.time_axis(ax, ylabel)
    style.fit_y(ax, drawn)


def draw(frame: pd.DataFrame, out_dir: Path, name: str = "schedule") -> list[Path]:
    """(a) clean L_A, (b) perturbed L_A, (c) L_A after fine-tuning, each vs T for both series modes."""
    n_seeds = frame.seed.nunique()
    with style.panels(3, height=2.7) as (fig, (ax_a, ax_b, ax_c)):
        band_panel(ax_a, frame, "none", r"pre-training loss $L_A$")
        style.title(ax_a, "a", "Clean pre-training loss", "annealed vs mid-schedule checkpoints")
        band_panel(ax_b, frame, "gaussian", r"perturbed pre-training loss $L_A$")
        style.title(ax_b, "b", "Perturbed pre-training loss", "Gaussian noise, one size at every T")
        band_panel(ax_c, frame, "finetune", r"$L_A$ after fine-tuning")
        style.title(ax_c, "c", r"$L_A$ after fine-tuning", "U-shaped in both series")
        style.legend(
            fig, title=f"mean over {n_seeds} seeds, band = min..max", below=True, extra=[style.inflection_handle()]
        )
        return style.save(fig, out_dir, name)
