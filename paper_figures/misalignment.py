"""How misaligned B must be (preset ``misalignment``): B's singular vectors rotated by the principal
angle theta away from A's."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from paper_figures import finetune, style


def draw(frame: pd.DataFrame, out_dir: Path, name: str = "misalignment") -> list[Path]:
    """(a) L_A after fine-tuning vs T per theta with the stored T*; (b) L_B after fine-tuning per theta."""
    colours = style.ordered_colours(style.family(style.curve_rows(frame, "finetune", "pretrain_loss"), "theta"))
    with style.panels(2) as (fig, (ax_a, ax_b)):
        finetune.forgetting_panel(ax_a, frame, "theta", colours)
        style.title(ax_a, "a", "Pre-training loss after fine-tuning",
                    r"U-shaped; the late rise fades as $\theta$ grows")
        finetune.in_task_panel(ax_b, frame, "theta", colours)
        style.title(ax_b, "b", "In-task loss after fine-tuning", r"per principal angle $\theta$ of B to A")
        style.legend(fig, title=finetune.settings(frame), extra=[style.inflection_handle()])
        return style.save(fig, out_dir, name)
