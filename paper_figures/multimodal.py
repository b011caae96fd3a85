"""Multimodal adaptation, the linear analogue (preset ``multimodal``): task B read through a projector
x = P z, stage 1 fitting P alone, stage 2 P and the network at the fine-tuning lr, one curve per
overlap c of B's outputs with A's; beside it plain fine-tuning at the same lr x steps, to ask whether
adding a modality is just fine-tuning (docs/THEORY.md, "Modification 4")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from paper_figures import style

FINETUNE = dict(color="black", ls="--", lw=1.0, zorder=2)  # plain fine-tuning at the same lr x steps
LR_COLOURS = ("#3b528b", "#e6a117", "#b5367a", "#5ec962")
FLOOR = 1e-5  # the L_A panels show this fraction of their largest value and above (log axis)


def stage_lrs(frame: pd.DataFrame) -> list[float]:
    """The stage-2 learning rates of the run, ascending (stored exactly as configured)."""
    return sorted(style.curve_rows(frame, "multimodal", "pretrain_loss", stage="joint").lr.unique())


def forgetting_panel(ax, frame: pd.DataFrame, lr: float, colours: dict) -> None:
    """L_A after stage 2 vs T per overlap at stage-2 rate ``lr``, its stored T*, the clean L_A and L_A
    after plain fine-tuning at that lr (its T* marked too)."""
    after = style.family(style.curve_rows(frame, "multimodal", "pretrain_loss", stage="joint", lr=lr), "overlap")
    t_star = style.stored_inflections(style.inflection_rows(frame, "multimodal", lr=lr), "overlap")
    style.plot_clean(ax, frame, "pretrain_loss", "overlap", colours)
    style.plot_family(ax, after, colours, style.label_of("overlap"), t_star)
    finetuned = style.curve(style.curve_rows(frame, "finetune", "pretrain_loss", lr_policy="fixed", lr=lr))
    ax.plot(*finetuned, label="plain fine-tuning, same lr", **FINETUNE)
    for value in style.marked(style.inflection_rows(frame, "finetune", lr_policy="fixed", lr=lr)):
        style.mark_inflection(ax, *finetuned, value, "black")
    style.time_axis(ax, r"$L_A$ after stage 2")
    ys = np.concatenate([y for _, y in [*after.values(), finetuned]])
    top = np.nanmax(ys)
    ax.set_yscale("log")
    ax.set_ylim(max(np.nanmin(ys[ys > 0]), FLOOR * top) / 1.5, top * 1.5)


def task_panel(ax, frame: pd.DataFrame, lr: float, colours: dict) -> None:
    """L_B vs T per overlap after stage 1 (dashed) and after stage 2 at ``lr`` (solid), and L_B after
    plain fine-tuning at that lr."""
    first = style.family(style.curve_rows(frame, "multimodal", "finetune_loss", stage="projector"), "overlap")
    second = style.family(style.curve_rows(frame, "multimodal", "finetune_loss", stage="joint", lr=lr), "overlap")
    style.plot_family(ax, first, colours, ls="--", lw=0.9)
    style.plot_family(ax, second, colours)
    finetuned = style.curve(style.curve_rows(frame, "finetune", "finetune_loss", lr_policy="fixed", lr=lr))
    ax.plot(*finetuned, **FINETUNE)
    ax.plot([], [], color="0.4", ls="--", lw=0.9, label="after stage 1 (P alone), dashed")
    style.time_axis(ax, r"task-B loss $L_B$")
    style.fit_y(
        ax, {"ft": finetuned, **{(1, k): c for k, c in first.items()}, **{(2, k): c for k, c in second.items()}}
    )


def t_star_panel(ax, frame: pd.DataFrame) -> None:
    """Stored T* of L_A after stage 2 against the overlap, one line per stage-2 lr, and plain
    fine-tuning's T* at that lr as a dashed line in its colour; overlaps without an interior T* are
    listed by their kind."""
    notes = []
    for k, lr in enumerate(stage_lrs(frame)):
        colour = LR_COLOURS[k % len(LR_COLOURS)]
        rows = style.inflection_rows(frame, "multimodal", lr=lr).sort_values("overlap")
        t_star = style.marked(rows)
        ax.plot(rows.overlap, t_star, marker="o", ms=4.5, color=colour, label=f"stage-2 lr = {lr:g}", zorder=3)
        for value in style.marked(style.inflection_rows(frame, "finetune", lr_policy="fixed", lr=lr)):
            ax.axhline(value, color=colour, ls="--", lw=0.9, zorder=2)
        missing = rows[t_star.isna()]
        for kind, group in missing.groupby(missing[style.KIND].replace("", "none")):
            notes.append((f"lr {lr:g}, {kind}: c = {', '.join(f'{c:g}' for c in group.overlap)}", colour))
    for k, (text, colour) in enumerate(notes):
        ax.text(0.97, 0.04 + 0.08 * k, text, transform=ax.transAxes, color=colour, ha="right", va="bottom")
    ax.plot([], [], color="0.4", ls="--", lw=0.9, label=r"plain fine-tuning's $T^*$, same lr")
    ax.set_yscale("log")
    ax.set_xlabel("overlap c of B's outputs with A's")
    ax.set_ylabel(r"$T^*$ of $L_A$ after stage 2")


def draw(frame: pd.DataFrame, out_dir: Path, name: str = "multimodal") -> list[Path]:
    """(a), (b) L_A after stage 2 vs T per overlap at the smallest and largest stage-2 lr, with plain
    fine-tuning; (c) L_B after each stage at the largest lr; (d) T* against the overlap per lr."""
    rows = style.curve_rows(frame, "multimodal", "pretrain_loss", stage="joint")
    colours = style.ordered_colours(style.keys(rows, "overlap").unique())
    low, high = stage_lrs(frame)[0], stage_lrs(frame)[-1]
    stage_1 = style.curve_rows(frame, "multimodal", "pretrain_loss", stage="projector").iloc[0]
    with style.panels(4, height=2.5, rows=2) as (fig, (ax_a, ax_b, ax_c, ax_d)):
        forgetting_panel(ax_a, frame, low, colours)
        style.title(ax_a, "a", f"$L_A$ after stage 2, lr = {low:g}", "damage once B's modes are learned")
        forgetting_panel(ax_b, frame, high, colours)
        style.title(ax_b, "b", f"$L_A$ after stage 2, lr = {high:g}", "overlap 0: no route, no damage")
        task_panel(ax_c, frame, high, colours)
        style.title(ax_c, "c", f"$L_B$ after each stage, lr = {high:g}", "stage 2 learns B only on modes A learned")
        t_star_panel(ax_d, frame)
        style.title(ax_d, "d", r"$T^*$ against the overlap", "stored, per stage-2 lr")
        title = (
            f"stage 1: P alone, {int(stage_1.projector_steps)} steps at lr {stage_1.projector_lr:g}\n"
            f"stage 2: P and W, {int(rows.steps.iloc[0])} steps"
        )
        style.legend(fig, title=title, extra=[style.inflection_handle()])
        return style.save(fig, out_dir, name)
