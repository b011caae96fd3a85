"""Weight decay lambda in pre-training (preset ``weight_decay``, closed form): each mode heads for
s_i - lambda, so lambda kills the modes with s_i <= lambda (docs/THEORY.md, "Mitigations")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from paper_figures import mitigation, style


def killed(config: dict, weight_decay: float) -> int | None:
    """How many modes of the run's power-law spectrum s_i = s1 i^-alpha (i <= rank) have s_i <= lambda
    (never learned); None where the run's config does not give a power law."""
    if config.get("spectrum") != "power_law":
        return None
    s = config["s1"] * np.arange(1, config["rank"] + 1, dtype=float) ** -config["alpha"]
    return int(np.sum(s <= weight_decay))


def caption(frame: pd.DataFrame) -> str:
    """'modes never learned (s_i <= lambda): ...' per swept lambda, from the run's config."""
    config = frame.attrs.get("config", {})
    counts = [(v, killed(config, v)) for v in sorted(style.keys(frame, "weight_decay").dropna().unique())]
    if any(n is None for _, n in counts):
        return "weight decay in pre-training: mode i heads for s_i - lambda"
    shown = ", ".join(f"{n} at {v:g}" for v, n in counts)
    return f"weight decay: mode i heads for s_i - lambda; modes never learned (s_i <= lambda): {shown}"


def draw(frame: pd.DataFrame, out_dir: Path, name: str = "weight_decay") -> list[Path]:
    """The mitigation figure (``mitigation.draw``) over the weight decay lambda."""
    return mitigation.draw(frame, out_dir, name, "weight_decay", "weight decay", caption(frame))
