"""Deeper linear networks (preset ``depth``): does the U-shape survive depth 1..4?"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from paper_figures import finetune, gaussian, style


def draw(frame: pd.DataFrame, out_dir: Path, name: str = "depth") -> list[Path]:
    """(a) perturbed L_A vs T per depth; (b) L_A after fine-tuning vs T per depth; stored T* marked."""
    colours = style.ordered_colours(style.family(style.curve_rows(frame, "gaussian", "pretrain_loss"), "depth"))
    (gamma,) = style.keys(style.curve_rows(frame, "gaussian", "pretrain_loss"), "gamma").unique()
    with style.panels(2) as (fig, (ax_a, ax_b)):
        gaussian.perturbed_panel(ax_a, frame, "depth", colours)
        style.title(
            ax_a, "a", rf"Perturbed pre-training loss ($\gamma$ = {gamma:g})", "U-shaped for depth ≥ 2, flat at depth 1"
        )
        finetune.forgetting_panel(ax_b, frame, "depth", colours)
        style.title(ax_b, "b", "Pre-training loss after fine-tuning", "U-shaped for depth ≥ 2, flat at depth 1")
        style.legend(fig, title=finetune.settings(frame), extra=[style.inflection_handle()])
        return style.save(fig, out_dir, name)
