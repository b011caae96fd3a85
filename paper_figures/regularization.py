"""Fine-tuning with an L2 pull of strength lambda toward the pre-trained weights (preset
``regularization``): claim 5 of docs/THEORY.md, "What must come out" (the paper's Theorem 4.7)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from paper_figures import finetune


def draw(frame: pd.DataFrame, out_dir: Path, name: str = "regularization") -> list[Path]:
    """Fine-tuning with an L2 pull lambda toward W(T): L_A and L_B after fine-tuning vs T per value,
    stored T* marked."""
    return finetune.sweep_figure(
        frame,
        out_dir,
        name,
        "reg",
        r"L2 pull to $W(T)$: $T^*$ later for larger $\lambda$",
        r"raised by larger $\lambda$",
    )
