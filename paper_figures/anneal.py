"""Constant lr vs a decay branch at equal steps (preset ``anneal``): minibatch SGD under warmup-stable-
decay, one run read off at every budget (``single``: the trunk, at constant lr at every checkpoint but
the last, where its own decay ends) against a run per budget decayed over its last 20% (``separate``:
the decay branch, which shares the trunk's batches and so equals the trunk up to the decay's start).
Both are drawn against optimizer steps: equal steps is equal data and compute, where the branch has
less flow time (docs/THEORY.md, "Constant lr vs a decay branch"). Seeds are drawn as their mean with a
min..max band."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from paper_figures import style
from paper_figures.schedule import band_panel, seed_band

STEPS = "train_steps"
STEPS_LABEL = "pre-training steps"
MODES = {
    "single": ("trunk (constant lr)", "#5ec962"),
    "separate": ("decay branch (WSD)", "#3b528b"),
}
# The paired differences of panel (e): (modification, metric, label, colour).
PAIRED = (
    ("none", "pretrain_loss", r"$L_A$", "#3b528b"),
    ("gaussian", "excess", "excess under noise", "#21918c"),
    ("finetune", "pretrain_loss", r"$L_A$ after fine-tuning", "#e6a117"),
    ("none", "top_eigenvalue", r"sharpness $\lambda_{\max}$", "#b5367a"),
)


def paired_difference(frame: pd.DataFrame, modification: str, metric: str) -> tuple[np.ndarray, ...]:
    """(steps, mean, min, max) over seeds of branch / trunk - 1 at equal steps and seed (the two share
    every batch up to the branch's decay); raises where a seed lacks one of the two at some steps."""
    rows = style.curve_rows(frame, modification, metric)
    table = rows.pivot_table(index=[STEPS, "seed"], columns="series_mode", values="value", aggfunc="first")
    if table.isna().any().any() or set(table.columns) != set(MODES):
        raise ValueError(f"{modification} {metric}: trunk and branch do not pair at every (steps, seed)")
    ratio = (table["separate"] / table["single"] - 1).rename("value").reset_index()
    return seed_band(ratio, STEPS)


def difference_panel(ax, frame: pd.DataFrame) -> None:
    """Branch / trunk - 1 of L_A, the Gaussian excess, L_A after fine-tuning and the sharpness."""
    drawn, lines = {}, []
    for modification, metric, label, colour in PAIRED:
        steps, mean, lo, hi = paired_difference(frame, modification, metric)
        ax.fill_between(steps, lo, hi, color=colour, alpha=0.2, lw=0, zorder=2)
        # "_"-labelled: this panel's own legend, not the figure's
        lines += ax.plot(steps, mean, color=colour, marker=".", ms=4, label=f"_{label}", zorder=3)
        drawn[(metric, modification, "lo")], drawn[(metric, modification, "hi")] = (steps, lo), (steps, hi)
    ax.axhline(0.0, **style.CLEAN)
    style.time_axis(ax, "branch / trunk - 1 (paired by seed)")
    style.fit_y(ax, drawn)
    ax.set_xlabel(STEPS_LABEL)
    ax.legend(lines, [label for _, _, label, _ in PAIRED], loc="best")


def curvature_line(ax, frame: pd.DataFrame, gamma: float) -> None:
    """(gamma^2 / 2) tr_sigma(H) per mode, dashed: the gamma^2 term of the excess, from the curvature."""
    for mode, (_, colour) in MODES.items():
        rows = style.curve_rows(frame, "none", "hessian_trace", series_mode=mode)
        if not rows.empty:
            steps, mean, _, _ = seed_band(rows, STEPS)
            ax.plot(steps, gamma**2 / 2 * mean, color=colour, ls="--", lw=0.9, zorder=4)
    ax.plot([], [], color="0.3", ls="--", lw=0.9, label=r"$(\gamma^2/2)\,\mathrm{tr}_\sigma H$ (curvature)")


def draw(frame: pd.DataFrame, out_dir: Path, name: str = "anneal") -> list[Path]:
    """(a) clean L_A, (b) L_A after fine-tuning, (c) the Gaussian excess with (gamma^2/2) tr_sigma(H),
    (d) the sharpness, each vs steps for trunk and branch; (e) their paired differences."""
    gamma = float(frame.gamma.dropna().iloc[0])
    n_seeds = frame.seed.nunique()
    with style.panels(5, height=2.3, rows=2) as (fig, (ax_a, ax_b, ax_c, ax_d, ax_e)):
        band_panel(ax_a, frame, "none", r"pre-training loss $L_A$", x=STEPS, modes=MODES)
        style.title(ax_a, "a", r"Clean $L_A$", "decay branch vs trunk")
        band_panel(ax_b, frame, "finetune", r"$L_A$ after fine-tuning", x=STEPS, modes=MODES)
        style.title(ax_b, "b", r"$L_A$ after fine-tuning", "forgetting")
        band_panel(ax_c, frame, "gaussian", "excess loss under noise", metric="excess", x=STEPS, modes=MODES)
        curvature_line(ax_c, frame, gamma)
        style.title(ax_c, "c", rf"Excess under noise, $\gamma$ = {gamma:g}", "dashed: its curvature term")
        band_panel(
            ax_d,
            frame,
            "none",
            r"$\lambda_{\max}$ of the Hessian of $L_A$",
            metric="top_eigenvalue",
            x=STEPS,
            modes=MODES,
        )
        style.title(ax_d, "d", "Sharpness", "top Hessian eigenvalue")
        difference_panel(ax_e, frame)
        style.title(ax_e, "e", "Branch / trunk - 1", "paired by seed")
        for ax in (ax_a, ax_b, ax_c, ax_d):
            ax.set_xlabel(STEPS_LABEL)
        style.legend(
            fig,
            title=f"at equal steps (equal data and compute); mean over {n_seeds} seeds, band = min..max",
            extra=[style.inflection_handle()],
            below=True,
        )
        return style.save(fig, out_dir, name)
