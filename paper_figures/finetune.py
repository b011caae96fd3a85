"""Fine-tuning on a misaligned task B at a fixed lr x steps (preset ``finetune``): claims 3 and 4 of
docs/THEORY.md, "What must come out"."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from paper_figures import style


def forgetting_panel(ax, frame: pd.DataFrame, by: str, colours: dict, lr_policy: str = "fixed") -> None:
    """L_A after fine-tuning vs T per value of ``by``, the clean L_A, and each curve's stored T*."""
    after = style.family(style.curve_rows(frame, "finetune", "pretrain_loss", lr_policy=lr_policy), by)
    t_star = style.stored_inflections(style.inflection_rows(frame, "finetune", lr_policy=lr_policy), by)
    style.plot_clean(ax, frame, "pretrain_loss", by, colours)
    style.plot_family(ax, after, colours, style.label_of(by), t_star)
    style.time_axis(ax, r"pre-training loss $L_A$ after fine-tuning")
    style.fit_y(ax, after)


def in_task_panel(ax, frame: pd.DataFrame, by: str, colours: dict, lr_policy: str = "fixed") -> None:
    """L_B after fine-tuning vs T per value of ``by``, with the clean model's L_B."""
    after = style.family(style.curve_rows(frame, "finetune", "finetune_loss", lr_policy=lr_policy), by)
    clean = style.plot_clean(ax, frame, "finetune_loss", by, colours)
    style.plot_family(ax, after, colours, style.label_of(by))
    style.time_axis(ax, r"fine-tuning loss $L_B$ after fine-tuning")
    style.fit_y(ax, {**after, **{("clean", k): c for k, c in clean.items()}})


def settings(frame: pd.DataFrame, with_lr: bool = True) -> str:
    """Legend title naming the fine-tuning held fixed, e.g. 'fine-tuning: lr = 0.02, 100 steps (tau = lr x
    steps)': gradient flow for time tau in the closed form, GD steps in ``flow`` and ``series`` runs."""
    ft = style.curve_rows(frame, "finetune", "pretrain_loss").iloc[0]
    lr = f"lr = {ft.lr:.3g}, " if with_lr else ""
    return f"fine-tuning: {lr}{int(ft.steps)} steps (tau = lr x steps)"


def sweep_figure(
    frame: pd.DataFrame,
    out_dir: Path,
    name: str,
    by: str,
    claim_a: str,
    claim_b: str,
    lr_policy: str = "fixed",
    legend_title: str | None = None,
) -> list[Path]:
    """(a) L_A after fine-tuning vs T, one curve per value of ``by``, with the stored T*; (b) L_B
    after fine-tuning. ``claim_a`` / ``claim_b``: the second title line of each panel; the curves are
    those of ``lr_policy``; the legend's title is ``legend_title`` or the fine-tuning held fixed."""
    colours = style.ordered_colours(style.family(style.curve_rows(frame, "finetune", "pretrain_loss"), by))
    with style.panels(2) as (fig, (ax_a, ax_b)):
        forgetting_panel(ax_a, frame, by, colours, lr_policy)
        style.title(ax_a, "a", "Pre-training loss after fine-tuning", claim_a)
        in_task_panel(ax_b, frame, by, colours, lr_policy)
        style.title(ax_b, "b", "In-task loss after fine-tuning", claim_b)
        title = legend_title or settings(frame, with_lr=by != "lr")
        style.legend(fig, title=title, extra=[style.inflection_handle()])
        return style.save(fig, out_dir, name)


def draw(frame: pd.DataFrame, out_dir: Path, name: str = "finetune") -> list[Path]:
    """Fine-tuning at several lr: forgetting U-shaped with T* earlier for larger lr; in-task loss."""
    return sweep_figure(
        frame, out_dir, name, "lr", r"U-shaped; $T^*$ not monotone in lr (see landscape)", "lower for larger lr"
    )
