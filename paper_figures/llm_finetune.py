"""Fine-tuning real LLM checkpoints (``ovt llm finetune``, preset ``llm_finetune``): the LLM test of
claims 3 and 4 (and, with the tuned lr, 6) of docs/THEORY.md, "What must come out".

Curve rows are ``modification='finetune'`` with ``lr_policy`` 'fixed' (one curve per ``lr``) or
'tuned' (per checkpoint, the lr of the grid with the lowest in-task loss; ``lr`` holds the one chosen);
metrics 'perplexity' (held-out pre-training perplexity after fine-tuning: forgetting) and
'finetune_loss' (held-out in-task loss). A run flagged ``diverged`` has NaN values; it is drawn as an
'x' at the top of the panel, in its lr's colour. Base rows (``modification='none'``) hold the
checkpoint before fine-tuning. T* is only ever a stored ``inflection`` row; without one none is marked.
An 'accuracy' metric, where stored, is not drawn here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from paper_figures import llm_perturb, style
from paper_figures.tuned_lr import TUNED

DIVERGED = dict(marker="x", ms=4.0, mew=1.0, ls="none", clip_on=False, zorder=5)
METRICS = {
    "perplexity": "held-out pre-training perplexity\nafter fine-tuning",
    "finetune_loss": "held-out in-task loss\nafter fine-tuning",
}
BASE_LABEL = "base checkpoint\n(before fine-tuning)"


def diverged(rows: pd.DataFrame) -> pd.Series:
    """Which rows are diverged runs: the ``diverged`` column where the store has one (missing = no)."""
    if "diverged" not in rows:
        return pd.Series(False, index=rows.index)
    return rows.diverged.astype("boolean").fillna(False).astype(bool)


def mark_diverged(ax, rows: pd.DataFrame, colour, level: int) -> bool:
    """An 'x' at the top of the panel at each diverged run's tokens (rows of one curve), lowered by
    ``level`` steps so that several curves diverging at one checkpoint stay apart. Returns whether any
    was drawn."""
    T = rows.pretrain_time[diverged(rows)].to_numpy(float)
    if T.size:
        ax.plot(T, np.full(T.size, 0.97 - 0.045 * level), color=colour, transform=ax.get_xaxis_transform(), **DIVERGED)
    return bool(T.size)


def panel(ax, frame: pd.DataFrame, metric: str, colours: dict, marks: bool) -> bool:
    """One curve per fixed lr, the tuned curve bold (under the fixed curve of the lr it chose), the base
    checkpoint in black; stored T* where ``marks``. Returns whether a run diverged."""
    fixed_rows = style.curve_rows(frame, "finetune", metric, lr_policy="fixed")
    fixed = style.family(fixed_rows, "lr")
    style.plot_family(ax, fixed, colours, lambda v: f"fixed lr = {v:g}", marker="o", ms=2.5, lw=1.0)
    if marks:
        llm_perturb.mark_stored(
            ax, fixed, llm_perturb.stored_t_star(frame, "finetune", "lr", lr_policy="fixed"), colours
        )
    level = 0  # curves with diverged runs so far
    for lr, rows in fixed_rows.groupby(style.keys(fixed_rows, "lr"), sort=True):
        level += mark_diverged(ax, rows, colours[lr], level)
    drawn = dict(fixed)
    tuned_rows = style.curve_rows(frame, "finetune", metric, lr_policy="tuned")
    if not tuned_rows.empty:
        drawn["tuned"] = tuned = style.curve(tuned_rows)
        ax.plot(*tuned, label="lr tuned per checkpoint\n(best in-task loss)", **TUNED)
        level += mark_diverged(ax, tuned_rows, "black", level)
        if marks:
            llm_perturb.mark_stored(
                ax,
                {"tuned": tuned},
                llm_perturb.stored_t_star(frame, "finetune", "lr_policy", lr_policy="tuned"),
                {"tuned": "black"},
            )
    base_rows = style.curve_rows(frame, "none", metric)
    if not base_rows.empty:
        drawn["base"] = base = style.curve(base_rows)
        ax.plot(*base, label=BASE_LABEL, **llm_perturb.BASE)
    llm_perturb.tokens_axis(ax, METRICS[metric])
    style.fit_y(ax, drawn)
    return level > 0


def settings(frame: pd.DataFrame) -> str:
    """What was held fixed, e.g. 'fine-tuning: 200 steps, $\\lambda$ = 0' (one value each, else refused)."""
    rows = style.curve_rows(frame, "finetune", "perplexity")
    held = {}
    for column in ("steps", "reg"):
        values = sorted(rows[column].dropna().unique())
        if len(values) > 1:
            raise ValueError(f"the figure draws one fine-tuning setting; the frame holds {column}={values}")
        held[column] = values[0] if values else np.nan
    reg = "" if not np.isfinite(held["reg"]) else f", $\\lambda$ = {held['reg']:g}"
    return f"fine-tuning: {held['steps']:g} steps{reg}"


def diverged_handle() -> Line2D:
    return Line2D([], [], color="black", label="diverged run (no value)", **DIVERGED)


def draw(frame: pd.DataFrame, out_dir: Path, name: str = "llm_finetune") -> list[Path]:
    """(a) pre-training perplexity after fine-tuning vs tokens per lr, tuned bold, base black, stored T*;
    (b) in-task loss after fine-tuning vs tokens, same encoding; diverged runs as 'x' at the top."""
    setup = llm_perturb.one_setup(frame)
    frame, left_out = llm_perturb.on_log_axis(frame)
    lrs = style.keys(style.curve_rows(frame, "finetune", "perplexity", lr_policy="fixed"), "lr").unique()
    colours = style.ordered_colours(lrs)
    has_t_star = bool(np.isfinite(style.marked(style.inflection_rows(frame, "finetune", metric="inflection"))).any())
    with style.panels(2) as (fig, (ax_a, ax_b)):
        any_diverged = panel(ax_a, frame, "perplexity", colours, marks=True)
        style.title(
            ax_a, "a", "Pre-training perplexity after fine-tuning", r"theory: U-shaped, $T^*$ earlier for larger lr"
        )
        any_diverged |= panel(ax_b, frame, "finetune_loss", colours, marks=False)
        style.title(ax_b, "b", "In-task loss after fine-tuning", "theory: lower for larger lr")
        extra = [style.inflection_handle()] * has_t_star + [diverged_handle()] * any_diverged
        style.legend(fig, title=llm_perturb.legend_title(setup, settings(frame), left_out), extra=extra)
        return style.save(fig, out_dir, name)
