"""Sharpness-aware minimisation in pre-training (preset ``sam``): minibatch SGD budget series fed
grad L(W + rho g/||g||), against steps, with the sharpness of L_A beside (docs/THEORY.md, "Mitigations")."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from paper_figures import mitigation


def draw(frame: pd.DataFrame, out_dir: Path, name: str = "sam") -> list[Path]:
    """The mitigation figure (``mitigation.draw``) over SAM's ascent radius rho."""
    title = "SAM in pre-training, ascent radius rho (0 = SGD)"
    return mitigation.draw(frame, out_dir, name, "sam_rho", "SAM radius", title)
