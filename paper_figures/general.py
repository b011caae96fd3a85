"""The general case (preset ``general``): random Gaussian init (not aligned), trained by minibatch SGD
(batch 16), near-full-batch GD (batch 512) or Adam, a budget series per seed. Seeds are drawn as their
mean with a min..max band; each seed's stored T* is marked on the mean curve."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from paper_figures import style
from paper_figures.schedule import seed_band

COLOURS = ("#3b528b", "#21918c", "#e6a117", "#b5367a")


def trainers(frame: pd.DataFrame) -> list[tuple[str, int]]:
    """(optimizer, batch size) pairs of the store, in a fixed order."""
    pairs = frame[["optimizer", "batch_size"]].drop_duplicates().itertuples(index=False)
    return sorted((str(o), int(b)) for o, b in pairs)


def label(optimizer: str, batch: int) -> str:
    return f"{'Adam' if optimizer == 'adam' else 'SGD'}, batch {batch}"


def largest_dip(y: np.ndarray) -> float:
    """The largest relative fall of a curve from its running maximum (0 for a non-decreasing one)."""
    peak = np.maximum.accumulate(y)
    return float(np.max((peak - y) / np.where(peak > 0, peak, 1.0)))


def band_panel(ax, frame: pd.DataFrame, modification: str, metric: str, ylabel: str, **equal) -> dict:
    """Mean over seeds per trainer with its min..max band and the stored T* of each seed; returns
    {trainer: (T, mean)}."""
    curves, drawn = {}, {}
    for (optimizer, batch), colour in zip(trainers(frame), COLOURS):
        rows = style.curve_rows(frame, modification, metric, optimizer=optimizer, batch_size=batch, **equal)
        if rows.empty:
            continue
        T, mean, lo, hi = seed_band(rows)
        ax.fill_between(T, lo, hi, color=colour, alpha=0.2, lw=0, zorder=2)
        ax.plot(T, mean, color=colour, marker=".", ms=4, label=label(optimizer, batch), zorder=3)
        if metric == "pretrain_loss":
            t_rows = style.inflection_rows(frame, modification, optimizer=optimizer, batch_size=batch, **equal)
            for t_star in style.marked(t_rows):
                style.mark_inflection(ax, T, mean, t_star, colour)
        curves[(optimizer, batch)] = (T, mean)
        drawn[(optimizer, batch, "lo")], drawn[(optimizer, batch, "hi")] = (T, lo), (T, hi)
    style.time_axis(ax, ylabel)
    style.fit_y(ax, drawn)
    return curves


def draw(frame: pd.DataFrame, out_dir: Path, name: str = "general") -> list[Path]:
    """(a) the excess under noise, (b) perturbed L_A, (c) L_A after fine-tuning, each vs T per trainer,
    at the largest gamma of the store."""
    gamma = float(frame.gamma.max())
    n_seeds = frame.seed.nunique()
    with style.panels(3, height=2.7) as (fig, (ax_a, ax_b, ax_c)):
        excess = band_panel(ax_a, frame, "gaussian", "excess", "excess loss under noise", gamma=gamma)
        dip = max((largest_dip(y) for _, y in excess.values()), default=0.0)
        style.title(ax_a, "a", rf"Excess loss, $\gamma$ = {gamma:g}", f"largest dip of a mean curve: {dip:.1%}")
        band_panel(ax_b, frame, "gaussian", "pretrain_loss", r"perturbed $L_A$", gamma=gamma)
        style.title(ax_b, "b", "Perturbed pre-training loss", "random init, three trainers")
        band_panel(ax_c, frame, "finetune", "pretrain_loss", r"$L_A$ after fine-tuning", lr_policy="fixed")
        style.title(ax_c, "c", r"$L_A$ after fine-tuning", "the same fine-tuning at every T")
        style.legend(
            fig, title=f"mean over {n_seeds} seeds, band = min..max", below=True, extra=[style.inflection_handle()]
        )
        return style.save(fig, out_dir, name)
