"""Derived rows of LLM result stores: the inflection of each perturbed-perplexity curve.

The curve of a gamma is the mean over draws (seeds) of the perturbed perplexity at each checkpoint;
its T* comes from the same helper as the theory's (``analysis.inflection``: argmin over the
token grid refined by a parabola in log tokens, NaN when the minimum is at an end or the curve never
rises after it). The row's ``seed`` is -1: a statistic over all draws, not one draw. Diverged draws
(inf or NaN perplexity) enter the mean as they are; the row itself has ``diverged`` False.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MEAN_OVER_SEEDS = -1


def perturb_inflection_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """One ``inflection`` row per (setup, gamma) of the Gaussian perplexity rows in ``frame``."""
    from analysis.inflection import inflection

    draws = frame[
        (frame.modification == "gaussian") & (frame.metric == "perplexity") & (frame.checkpoint != "inflection")
    ]
    rows = []
    for (setup, gamma), group in draws.groupby(["setup", "gamma"], sort=True):
        curve = group.groupby("pretrain_time")["value"].mean().sort_index()
        T = curve.index.to_numpy(float)
        t_star = float(inflection(T, curve.to_numpy(float))) if len(T) >= 3 else np.nan
        rows.append(
            {
                "source": "llm",
                "setup": setup,
                "checkpoint": "inflection",
                "pretrain_time": np.nan,
                "modification": "gaussian",
                "gamma": gamma,
                "lr": np.nan,
                "steps": np.nan,
                "reg": np.nan,
                "seed": MEAN_OVER_SEEDS,
                "metric": "inflection",
                "value": t_star,
                "diverged": False,
            }
        )
    if not rows:
        return frame.iloc[:0, :12].assign(diverged=pd.Series(dtype=bool))
    return pd.DataFrame(rows, columns=[*frame.columns[:12], "diverged"])
