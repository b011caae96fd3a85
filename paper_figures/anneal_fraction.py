"""The anneal's share of each budget (preset ``anneal_fraction``): warmup-stable-decay budget series
decaying over the last fraction f of every budget, f = 0 the constant lr (no anneal), against steps
(docs/THEORY.md, "Mitigations")."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from paper_figures import mitigation


def draw(frame: pd.DataFrame, out_dir: Path, name: str = "anneal_fraction") -> list[Path]:
    """The mitigation figure (``mitigation.draw``) over the WSD decay fraction f."""
    title = "WSD anneal over the last fraction f of each budget (0 = constant lr)"
    return mitigation.draw(frame, out_dir, name, "anneal_fraction", "anneal fraction", title)
