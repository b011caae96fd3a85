"""Derived rows of a result store, in one place for theory and LLM runs: the inflection T* of every
stored curve, and the tuned-lr curve of a fixed-lr grid.

An ``inflection`` row summarises one curve (the rows of one metric over ``pretrain_time``): its value
is T* from ``analysis.inflection`` (argmin over the grid refined by a parabola in log T; NaN when the
minimum is at an end, the curve never rises after it, or it has fewer than three points), its
``checkpoint`` is ``inflection``, ``pretrain_time`` NaN and ``metric`` ``inflection``. It keeps the
curve's identity columns (source, setup, modification, gamma, lr, steps, reg, seed, lr_policy, swept
fields) and leaves every measurement column (``MEASURED``) at its store default.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.inflection import inflection
from analysis.tuned import tuned_choice
from experiments.store import OPTIONAL_COLUMNS

MEAN_OVER_SEEDS = -1  # the seed of a row that summarises all draws, not one
MEASURED = ("diverged", "steps_done", "mean_nll", "n_tokens", "train_steps")  # what a summary row does not carry


def curve_t_star(curve: pd.DataFrame, dtype=np.float32) -> float:
    """T* of one curve: the mean value at each ``pretrain_time`` (over draws, if several), in order,
    computed in ``dtype`` (``analysis.inflection``: float32, the stores' precision, unless asked)."""
    mean = curve.groupby("pretrain_time")["value"].mean().sort_index()
    T, values = mean.index.to_numpy(float), mean.to_numpy(float)
    return float(inflection(T, values, dtype=dtype)) if len(mean) >= 3 else np.nan


def inflection_rows(curves: pd.DataFrame, by: list[str], dtype=np.float32, **fields) -> pd.DataFrame:
    """One ``inflection`` row per group of ``curves`` by ``by`` (sorted; NaN keys are groups too):
    the group's first row with the curve's T*, its measurements at their defaults, and ``fields``
    (``seed=MEAN_OVER_SEEDS`` for a mean over draws)."""
    rows = []
    for _, curve in curves.groupby(by, dropna=False, sort=True):
        row = curve.iloc[0].to_dict()
        for name in MEASURED:
            if name in row:
                row[name] = OPTIONAL_COLUMNS[name][1]
        row.update(checkpoint="inflection", pretrain_time=np.nan, metric="inflection", value=curve_t_star(curve, dtype))
        rows.append(row | fields)
    return pd.DataFrame(rows, columns=curves.columns)


def perturb_inflection_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (setup, gamma) of the Gaussian perplexity rows: T* of the mean over draws."""
    draws = frame[
        (frame.modification == "gaussian") & (frame.metric == "perplexity") & (frame.checkpoint != "inflection")
    ]
    return inflection_rows(draws, ["setup", "gamma"], seed=MEAN_OVER_SEEDS)


def finetune_inflection_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """T* of the post-fine-tuning perplexity curve of every fixed lr and of the tuned lr (whose row
    has lr NaN: the lr varies along the curve)."""
    curves = frame[(frame.modification == "finetune") & (frame.metric == "perplexity")]
    curves = curves.assign(lr=curves.lr.where(curves.lr_policy == "fixed"))
    return inflection_rows(curves, ["lr_policy", "lr"])


def tuned_rows(frame: pd.DataFrame, curve_metric: str = "pretrain_loss", dtype=np.float32) -> pd.DataFrame:
    """Per pre-training time, the fixed-lr fine-tuning of the lr that minimises the in-task loss after
    fine-tuning (the paper's tuned analysis; diverged NaN losses never win), with ``lr_policy`` =
    "tuned", plus the inflection of each tuned ``curve_metric`` curve (T* in ``dtype``)."""
    ft = frame[(frame.modification == "finetune") & (frame.lr_policy == "fixed") & (frame.checkpoint != "inflection")]
    if ft.empty:
        return frame.iloc[:0]
    curve = [c for c in ft.columns if c not in ("lr", "value", "metric", "checkpoint", "pretrain_time")]
    in_task = ft[ft.metric == "finetune_loss"]
    # The in-task loss as a (curve, T) x lr table, lrs ascending (a full grid): one choice per row.
    group = in_task.groupby(curve + ["pretrain_time"], dropna=False, sort=False).ngroup().to_numpy()
    lrs, column = np.unique(in_task.lr.to_numpy(), return_inverse=True)
    losses = np.full((group.max() + 1, lrs.size), np.nan)
    losses[group, column] = in_task.value.to_numpy()
    best = tuned_choice(losses, axis=1)
    chosen = in_task[column == best[group]][curve + ["pretrain_time", "lr"]]
    tuned = ft.merge(chosen, on=curve + ["pretrain_time", "lr"]).assign(lr_policy="tuned")
    tuned = tuned.sort_values(["metric", "pretrain_time"], kind="stable")
    tuned_curves = tuned[tuned.metric == curve_metric]
    infl = inflection_rows(tuned_curves.assign(lr=np.nan), curve, dtype)
    return pd.concat([tuned, infl], ignore_index=True)[frame.columns]
