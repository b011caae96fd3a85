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


def seed_band(rows: pd.DataFrame, x: str = "pretrain_time") -> tuple[np.ndarray, ...]:
    """(x, mean, min, max) over seeds at each value of column ``x``; every x must hold every seed, else
    the band would mislead."""
    per_x = rows.groupby(x).value
    counts = per_x.size()
    if counts.nunique() != 1 or counts.iloc[0] != rows.seed.nunique():
        raise ValueError(f"seeds {sorted(rows.seed.unique())} do not all reach every {x}: {counts.to_dict()}")
    stats = per_x.agg(["mean", "min", "max"])
    return stats.index.to_numpy(float), *(stats[c].to_numpy(float) for c in ("mean", "min", "max"))


def band_panel(
    ax,
    frame: pd.DataFrame,
    modification: str,
    ylabel: str,
    metric: str = "pretrain_loss",
    x: str = "pretrain_time",
    modes: dict = MODES,
) -> dict:
    """Mean ``metric`` over seeds per series mode against column ``x`` with its min..max band; on an
    L_A curve each seed's stored interior T* marked on the mean curve (a seed whose minimum is flat -
    within the seeds' spread - or at an end, none; on a steps axis at the steps of its flow time).
    Returns {mode: (x, mean)}."""
    drawn, curves = {}, {}
    for mode, (label, colour) in modes.items():
        rows = style.curve_rows(frame, modification, metric, series_mode=mode)
        if rows.empty:
            continue
        X, mean, lo, hi = seed_band(rows, x)
        ax.fill_between(X, lo, hi, color=colour, alpha=0.25, lw=0, zorder=2)
        ax.plot(X, mean, color=colour, marker=".", ms=5, label=label, zorder=3)
        if metric == "pretrain_loss":
            for t_star in style.marked(style.inflection_rows(frame, modification, series_mode=mode)):
                style.mark_inflection(ax, X, mean, on_axis(t_star, rows, x), colour)
        curves[mode] = (X, mean)
        drawn[(mode, "lo")], drawn[(mode, "hi")] = (X, lo), (X, hi)
    style.time_axis(ax, ylabel)
    style.fit_y(ax, drawn)
    return curves


def on_axis(t_star: float, rows: pd.DataFrame, x: str) -> float:
    """A flow time T* as a value of column ``x`` (log-linear between the curve's checkpoints)."""
    if x == "pretrain_time" or not np.isfinite(t_star):
        return t_star
    pairs = rows.groupby(x).pretrain_time.first()
    return float(np.exp(np.interp(np.log(t_star), np.log(pairs.to_numpy(float)), np.log(pairs.index.to_numpy(float)))))


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
