"""How misaligned B must be (preset ``misalignment``): B's singular vectors rotated by the principal
angle theta away from A's."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from paper_figures import finetune


def draw(frame: pd.DataFrame, out_dir: Path, name: str = "misalignment") -> list[Path]:
    """Fine-tuning with B rotated by theta: L_A and L_B after fine-tuning vs T per value, stored T* marked."""
    return finetune.sweep_figure(
        frame,
        out_dir,
        name,
        "theta",
        r"U-shaped; the late rise fades as $\theta$ grows",
        r"per principal angle $\theta$ of B to A",
    )
