"""The T* landscape (presets ``landscape``: 64 lrs; ``landscape_gamma``: 64 gammas): the loss over
(T, swept value) with the stored global T* and every local minimum (``analysis.landscape``); and
``landscape_alpha``: the Gaussian T* over (gamma, spectrum exponent alpha). Where the run is the
aligned depth-2 closed form, the analytic prediction it stored (``t_star_predicted`` rows, made from
the run's config alone) is drawn beside the stored T* and its error reported.

A five-value grid makes "T* earlier for larger lr" look like a law; on 64 values the post-fine-tuning
L_A has two competing minima over a range of lr, and the global T* jumps between them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.ticker import NullFormatter

from analysis.landscape import local_minima
from paper_figures import style

SWEEPS = {  # swept field -> (modification, what its curves are, rows' extra filter)
    "lr": ("finetune", r"$L_A$ after fine-tuning", {"lr_policy": "fixed"}),
    "gamma": ("gaussian", r"perturbed $L_A$", {}),
}


def swept_field(frame: pd.DataFrame) -> str:
    """``lr`` when the fine-tuning lr varies over the store, else ``gamma``."""
    rows = style.curve_rows(frame, "finetune", "pretrain_loss", lr_policy="fixed")
    return "lr" if rows.lr.nunique() > 1 else "gamma"


def surface(frame: pd.DataFrame, by: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T, swept values, loss[value, T]) of the swept family."""
    modification, _, equal = SWEEPS[by]
    curves = style.family(style.curve_rows(frame, modification, "pretrain_loss", **equal), by)
    values = np.array(sorted(curves), float)
    T = curves[values[0]][0]
    return T, values, np.stack([curves[v][1] for v in values])


PREDICTION = "t_star_predicted"  # the run's own row of the predicted Gaussian T* (experiments.sweep.compute)


def predicted(frame: pd.DataFrame, gammas: np.ndarray, alpha: float | None = None) -> np.ndarray | None:
    """The stored predicted T*(gamma) at ``gammas`` (at spectrum exponent ``alpha`` where the store sweeps
    it), or None where the run stored none (the prediction applies to the aligned depth-2 closed form
    with a power-law spectrum only)."""
    rows = frame[(frame.checkpoint == PREDICTION) & (frame.metric == PREDICTION)]
    if alpha is not None and "alpha" in rows:
        rows = rows[np.isclose(rows["alpha"].astype(float), alpha)]
    if rows.empty:
        return None
    by_gamma = rows.groupby("gamma").value.first()
    return np.array([by_gamma.get(g, np.nan) for g in gammas], float)


def relative_error(pred: np.ndarray, stored: np.ndarray) -> np.ndarray:
    """pred / stored - 1 where both are finite, NaN elsewhere."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(np.isfinite(pred) & np.isfinite(stored), pred / stored - 1, np.nan)


def draw(frame: pd.DataFrame, out_dir: Path, name: str = "landscape") -> list[Path]:
    """(a) loss / its minimum over T, over (T, swept value), with the global T* (white) and every local
    minimum (black); (b) T* against the swept value: global (line) and every local minimum (dots)."""
    by = swept_field(frame)
    modification, what, equal = SWEEPS[by]
    T, values, loss = surface(frame, by)
    t_star = style.stored_inflections(style.inflection_rows(frame, modification, **equal), by)
    global_t = np.array([t_star.get(float(f"{v:.6g}"), np.nan) for v in values])
    minima = [(v, t) for v, row in zip(values, loss) for t, _ in local_minima(T, row)]
    symbol = style.SYMBOLS.get(by, by)
    with style.panels(2) as (fig, (ax_a, ax_b)):
        relative = loss / np.nanmin(loss, axis=1, keepdims=True) - 1 + 1e-6
        mesh = ax_a.pcolormesh(T, values, relative, norm=LogNorm(1e-4, max(np.nanmax(relative), 1e-3)), shading="auto")
        fig.colorbar(mesh, ax=ax_a, label="above its minimum over T (relative)")
        ax_a.plot(global_t, values, "o", ms=2.2, mfc="white", mec="white", label="global T*")
        if minima:
            ax_a.plot([t for _, t in minima], [v for v, _ in minima], "x", ms=2.5, color="black", label="local minima")
        ax_a.set(xscale="log", yscale="log", xlabel=style.TIME_LABEL, ylabel=symbol)
        style.title(ax_a, "a", f"{what} over (T, {symbol})", "every local minimum marked")
        ax_b.plot(values, global_t, "-", color="0.2", lw=1.0, label="global T* (stored)")
        pred = predicted(frame, values) if by == "gamma" else None
        if pred is not None:
            error = relative_error(pred, global_t)
            ax_b.plot(
                values, pred, "--", color="C0", lw=1.0, label=f"predicted (max |error| {np.nanmax(np.abs(error)):.0%})"
            )
        if minima:
            ax_b.plot([v for v, _ in minima], [t for _, t in minima], "o", ms=2.5, color="C3", label="local minima")
        ax_b.set(xscale="log", yscale="log", xlabel=symbol, ylabel="T*")
        style.title(ax_b, "b", f"T* against {symbol}", f"{len(values)} values; jumps where minima compete")
        ax_b.legend(loc="best")
        for axis in (ax_a.yaxis, ax_b.xaxis):  # label the decades only: minor labels collide
            axis.set_minor_formatter(NullFormatter())
        return style.save(fig, out_dir, name)


def draw_alpha(frame: pd.DataFrame, out_dir: Path, name: str = "landscape_alpha") -> list[Path]:
    """(a) the stored Gaussian T* over (gamma, alpha); (b) the prediction's relative error there."""
    rows = style.inflection_rows(frame, "gaussian")
    table = rows.pivot_table(index=style.keys(rows, "alpha"), columns=style.keys(rows, "gamma"), values="value")
    alphas, gammas, stored = table.index.to_numpy(float), table.columns.to_numpy(float), table.to_numpy(float)
    pred = [predicted(frame, gammas, alpha) for alpha in alphas]
    error = np.stack([relative_error(p, t) for p, t in zip(pred, stored)]) if pred[0] is not None else None
    with style.panels(2) as (fig, (ax_a, ax_b)):
        mesh = ax_a.pcolormesh(gammas, alphas, stored, norm=LogNorm(), shading="auto")
        fig.colorbar(mesh, ax=ax_a, label="stored T* (blank: none in range)")
        ax_a.set(xscale="log", xlabel=r"$\gamma$", ylabel=r"spectrum exponent $\alpha$ ($s_i = i^{-\alpha}$)")
        style.title(
            ax_a, "a", r"Gaussian $T^*$ over ($\gamma$, $\alpha$)", f"{len(alphas)} x {len(gammas)} closed-form runs"
        )
        if error is not None:
            mesh = ax_b.pcolormesh(gammas, alphas, error, cmap="RdBu_r", vmin=-0.5, vmax=0.5, shading="auto")
            fig.colorbar(mesh, ax=ax_b, label="predicted / stored T* - 1")
            finite = np.abs(error[np.isfinite(error)])
            claim = f"median |error| {np.median(finite):.1%}, max {finite.max():.0%} ({finite.size} cells)"
        else:
            claim = "no prediction for this config"
        ax_b.set(xscale="log", xlabel=r"$\gamma$", ylabel=r"$\alpha$")
        style.title(ax_b, "b", "Error of the last-beneficial-mode prediction", claim)
        for axis in (ax_a.xaxis, ax_b.xaxis):
            axis.set_minor_formatter(NullFormatter())
        return style.save(fig, out_dir, name)
