"""Fine-tuning with an L2 pull of strength lambda toward the pre-trained weights (preset
``regularization``): claim 5 of THEORY.md, "What must come out" (the paper's Theorem 4.7)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from paper_figures import finetune, style


def draw(frame: pd.DataFrame, out_dir: Path, name: str = "regularization") -> list[Path]:
    """(a) L_A after fine-tuning vs T per lambda with the stored T*; (b) L_B after fine-tuning per lambda."""
    colours = style.ordered_colours(style.family(style.curve_rows(frame, "finetune", "pretrain_loss"), "reg"))
    with style.panels(2) as (fig, (ax_a, ax_b)):
        finetune.forgetting_panel(ax_a, frame, "reg", colours)
        style.title(ax_a, "a", "Pre-training loss after fine-tuning",
                    r"L2 pull to $W(T)$: $T^*$ later for larger $\lambda$")
        finetune.in_task_panel(ax_b, frame, "reg", colours)
        style.title(ax_b, "b", "In-task loss after fine-tuning", r"raised by larger $\lambda$")
        style.legend(fig, title=finetune.settings(frame), extra=[style.inflection_handle()])
        return style.save(fig, out_dir, name)
