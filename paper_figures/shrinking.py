"""Fine-tuning at a rate that shrinks with pre-training time (preset ``shrinking``):
lr(T) = lr0 (1 + T/T0)^-q for q = 0 (fixed), 0.25, 0.5, 1 at T0 = 1000. Whether a shrinking lr
delays or removes the late rise of L_A, and what L_B after fine-tuning pays for it (README, figure
``shrinking.png``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from paper_figures import finetune


def draw(frame: pd.DataFrame, out_dir: Path, name: str = "shrinking") -> list[Path]:
    """L_A and L_B after fine-tuning vs T per shrink power q, stored T* marked."""
    return finetune.sweep_figure(
        frame,
        out_dir,
        name,
        "shrink_power",
        r"the rise after $T \approx 63$ stays; late $T$ recovers for $q > 0$",
        r"the price: higher for larger $q$",
        lr_policy="shrinking",
        legend_title=settings(frame),
    )


def settings(frame: pd.DataFrame) -> str:
    """'lr(T) = lr0 (1 + T/T0)^-q, lr0 ~ 0.08, 100 steps' (lr0: the stored lr at the first T)."""
    rows = frame[(frame.modification == "finetune") & (frame.lr_policy == "shrinking")]
    first = rows[rows.pretrain_time == rows.pretrain_time.min()].iloc[0]
    return f"lr(T) = lr0 (1 + T/T0)^-q\nlr0 ~ {first.lr:.3g}, {int(first.steps)} steps"
