"""The mitigation presets' figures (``weight_decay``, ``replay``, ``sam``, ``anneal_fraction``; docs/THEORY.md,
"Mitigations"): per strength of one mitigation, L_A after fine-tuning (the forgetting) against
pre-training with its stored T*, its rise over the clean L_A(T) of the same model, the task's cost (L_B
after fine-tuning), the stored T* against the strength, the L2 pull beside where the run sweeps it, and
for a series with ``curvature`` its sharpness. Seeds are drawn as their mean with a min..max band (a
closed-form run has one seed, its band a line)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from paper_figures import style
from paper_figures.schedule import on_axis, seed_band

STEPS = "train_steps"  # a series is drawn against optimizer steps: equal data and compute
PULL_LINE = dict(ls="--", marker="s", mfc="white")  # T* with the L2 pull, beside the plain T*


def _x(frame: pd.DataFrame) -> str:
    """The pre-training axis: optimizer steps for a budget series, flow time otherwise."""
    return STEPS if STEPS in frame and frame[STEPS].notna().any() else "pretrain_time"


def bands(frame: pd.DataFrame, modification: str, metric: str, by: str, **equal) -> dict:
    """{value of ``by``: (x, mean, min, max) over seeds} of one curve family (``equal`` filters rows)."""
    rows = style.curve_rows(frame, modification, metric, **equal)
    return {v: seed_band(g, _x(frame)) for v, g in rows.groupby(style.keys(rows, by), sort=True)}


def rise(frame: pd.DataFrame, by: str) -> dict:
    """{value: (x, mean, min, max)} over seeds of L_A after fine-tuning minus the clean L_A(T) of the
    same pre-trained model (same value, seed and checkpoint): what fine-tuning costs task A."""
    x = _x(frame)
    after = style.curve_rows(frame, "finetune", "pretrain_loss", reg=0.0)
    clean = style.curve_rows(frame, "none", "pretrain_loss")
    key = [by, "seed", x]
    paired = after.assign(**{by: style.keys(after, by)}).merge(
        clean.assign(**{by: style.keys(clean, by)})[[*key, "value"]], on=key, suffixes=("", "_clean")
    )
    if len(paired) != len(after):
        raise ValueError(f"L_A after fine-tuning and the clean L_A do not pair at every ({by}, seed, {x})")
    paired = paired.assign(value=paired.value - paired.value_clean)
    return {v: seed_band(g, x) for v, g in paired.groupby(by, sort=True)}


def band_family(ax, curves: dict, colours: dict, label, **line) -> None:
    """Mean line per value with its min..max band over seeds."""
    for value, (X, mean, lo, hi) in curves.items():
        ax.fill_between(X, lo, hi, color=colours[value], alpha=0.2, lw=0, zorder=2)
        ax.plot(X, mean, color=colours[value], label=label(value) if label else None, **{"zorder": 3, **line})


def _fit(ax, curves: dict) -> None:
    style.fit_y(ax, {(v, k): (c[0], c[k]) for v, c in curves.items() for k in (2, 3)})


def forgetting_panel(ax, frame: pd.DataFrame, by: str, colours: dict) -> None:
    """L_A after fine-tuning (no pull) per value, the clean L_A of the same value dashed, and each seed's
    stored interior T* marked on its value's mean curve."""
    after = bands(frame, "finetune", "pretrain_loss", by, reg=0.0)
    clean = bands(frame, "none", "pretrain_loss", by)
    band_family(ax, after, colours, style.label_of(by))
    for value, (X, mean, _, _) in clean.items():
        ax.plot(X, mean, color=colours[value], ls="--", lw=0.8, zorder=1)
    ax.plot([], [], color="0.3", ls="--", lw=0.8, label=r"clean $L_A$ of the same model, dashed")
    rows = style.inflection_rows(frame, "finetune", reg=0.0)
    curves = style.curve_rows(frame, "finetune", "pretrain_loss", reg=0.0)
    for value, t_star in zip(style.keys(rows, by), style.marked(rows)):
        X, mean, _, _ = after[value]
        own = curves[style.keys(curves, by) == value]
        style.mark_inflection(ax, X, mean, on_axis(t_star, own, _x(frame)), colours[value])
    style.time_axis(ax, r"$L_A$ after fine-tuning")
    _fit(ax, after)


def rise_panel(ax, frame: pd.DataFrame, by: str, colours: dict) -> None:
    curves = rise(frame, by)
    band_family(ax, curves, colours, None)
    ax.axhline(0.0, **style.CLEAN)
    style.time_axis(ax, r"$L_A$ after fine-tuning $-$ clean $L_A$")
    _fit(ax, curves)


def metric_panel(ax, frame: pd.DataFrame, by: str, colours: dict, modification: str, metric: str, ylabel: str):
    curves = bands(frame, modification, metric, by, **({"reg": 0.0} if modification == "finetune" else {}))
    band_family(ax, curves, colours, None)
    style.time_axis(ax, ylabel)
    _fit(ax, curves)


def t_star_panel(ax, frame: pd.DataFrame, by: str) -> None:
    """Stored T* of L_A after fine-tuning against the strength (evenly spaced, one tick a value): each
    seed's interior T* as a dot, their mean joined; one line per L2 pull of the run (dashed with a pull).
    A series' T* (flow time) is drawn at its steps. The values with no interior T* are listed under the axis."""
    rows = style.inflection_rows(frame, "finetune")
    values = sorted(style.keys(rows, by).unique())
    position = {v: i for i, v in enumerate(values)}
    curves = style.curve_rows(frame, "finetune", "pretrain_loss")
    notes, drawn = [], []  # values without an interior T*; the T* drawn
    pulls = rows.reg.nunique() > 1
    for reg, group in rows.groupby("reg", sort=True):
        colour = "black" if reg == 0 else "#b5367a"
        label = ("no L2 pull" if reg == 0 else rf"L2 pull $\lambda$ = {reg:g}") if pulls else r"$T^*$, mean over seeds"
        keys = style.keys(group, by)
        t_star = style.marked(group).to_numpy(float)
        steps = np.array(
            [
                on_axis(t, curves[(style.keys(curves, by) == v) & np.isclose(curves.reg, reg)], _x(frame))
                for v, t in zip(keys, t_star)
            ]
        )
        ax.plot([position[v] for v in keys], steps, "o", color=colour, ms=3, alpha=0.6, zorder=3)
        drawn.append(steps[np.isfinite(steps)])
        mean = pd.Series(steps).groupby(keys.to_numpy()).mean()
        ax.plot([position[v] for v in mean.index], mean.to_numpy(), color=colour, label=label, zorder=4,
                **({} if reg == 0 else PULL_LINE))  # fmt: skip
        missing = sorted({v for v, t in zip(keys, t_star) if not np.isfinite(t)})
        if missing:
            where = ", ".join(f"{v:g}" for v in missing)
            notes.append(f"{style.SYMBOLS['reg']} = {reg:g} at {where}" if pulls else f"at {where}")
    ax.set_xticks(range(len(values)), [f"{v:g}" for v in values])
    ax.set_xlabel(
        style.SYMBOLS.get(by, by) + (f"\nno interior $T^*${':' if pulls else ''} {'; '.join(notes)}" if notes else "")
    )
    found = np.concatenate(drawn)
    if found.size and found.max() / found.min() > style.LOG_SPAN:
        ax.set_yscale("log")
    ax.set_ylabel(r"$T^*$ of $L_A$ after fine-tuning" + (" (steps)" if _x(frame) == STEPS else ""))


def draw(frame: pd.DataFrame, out_dir: Path, name: str, by: str, what: str, caption: str) -> list[Path]:
    """(a) L_A after fine-tuning per value of ``by`` with its stored T*, (b) its rise over the clean
    L_A, (c) L_B after fine-tuning, (d) T* against ``by``, and (e) the sharpness where the run stored
    it; ``what`` names the mitigation in the titles, ``caption`` heads the legend."""
    colours = style.ordered_colours(style.keys(frame, by).dropna().unique())
    sharp = not style.curve_rows(frame, "none", "top_eigenvalue").empty
    with style.panels(5 if sharp else 4, height=2.3, rows=2) as (fig, axes):
        forgetting_panel(axes[0], frame, by, colours)
        style.title(axes[0], "a", r"$L_A$ after fine-tuning", f"forgetting, per {what}")
        rise_panel(axes[1], frame, by, colours)
        style.title(axes[1], "b", "Rise over the clean model", "what fine-tuning costs task A")
        metric_panel(axes[2], frame, by, colours, "finetune", "finetune_loss", r"$L_B$ after fine-tuning")
        style.title(axes[2], "c", r"$L_B$ after fine-tuning", "the task's cost")
        t_star_panel(axes[3], frame, by)
        style.title(axes[3], "d", r"$T^*$ against the strength", "stored, per seed and mean")
        if sharp:
            metric_panel(
                axes[4], frame, by, colours, "none", "top_eigenvalue", r"$\lambda_{\max}$ of the Hessian of $L_A$"
            )
            style.title(axes[4], "e", "Sharpness", "top Hessian eigenvalue")
        if _x(frame) == STEPS:
            for ax in axes[[0, 1, 2, 4] if sharp else [0, 1, 2]]:
                ax.set_xlabel("pre-training steps")
        n_seeds = frame.seed.nunique()
        bands_note = f"; mean over {n_seeds} seeds, band = min..max" if n_seeds > 1 else ""
        style.legend(fig, title=caption + bands_note, extra=[style.inflection_handle()], below=True, ncols=4)
        return style.save(fig, out_dir, name)
