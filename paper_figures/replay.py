"""Replay of task A in fine-tuning (preset ``replay``, closed form): fine-tuning on (1 - r) L_B + r L_A
sends each mode toward (1 - r) b_i + r s_i (docs/THEORY.md, "Mitigations")."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from paper_figures import mitigation


def draw(frame: pd.DataFrame, out_dir: Path, name: str = "replay") -> list[Path]:
    """The mitigation figure (``mitigation.draw``) over the replay fraction r."""
    title = "replay r of A in fine-tuning: mode i heads for (1 - r) b_i + r s_i"
    return mitigation.draw(frame, out_dir, name, "replay", "replay fraction", title)
