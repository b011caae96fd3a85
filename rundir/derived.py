"""Derived rows of a result store, in one place for theory and LLM runs: the inflection T* of every
stored curve, and the tuned-lr curve of a fixed-lr grid.

An ``inflection`` row summarises one curve (the rows of one metric over ``pretrain_time``): its value
is T* from ``analysis.inflection`` (argmin over the grid refined by a parabola in log T; NaN unless
the minimum is an interior one the curve rises after by more than the tolerances), its ``t_star_kind``
what the minimum is (``analysis.inflection.KINDS``: interior, flat, below, above, none), its
``checkpoint`` is ``inflection``, ``pretrain_time`` NaN and ``metric`` ``inflection``. It keeps the
curve's identity columns (source, setup, modification, gamma, lr, steps, reg, seed, lr_policy, swept
fields) and leaves every measurement column (``MEASURED``) at its store default. A curve that is a
mean over draws (several rows at one ``pretrain_time``) is judged against its standard error there;
one seed's curve of a theory run with several seeds against the standard deviation over the seeds
(``judge_by_seed_spread``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.inflection import inflection, inflection_kind
from analysis.tuned import tuned_choice
from rundir.store import OPTIONAL_COLUMNS

MEAN_OVER_SEEDS = -1  # the seed of a row that summarises all draws, not one
# What a summary row does not carry.
MEASURED = ("diverged", "steps_done", "mean_nll", "n_tokens", "train_steps", "step")
KIND = "t_star_kind"  # the store column of an inflection row's kind ("" on every other row)


def _with_kind(columns) -> list[str]:
    return [*columns, *([KIND] if KIND not in columns else [])]


def curve_inflection(curve: pd.DataFrame, dtype=np.float32) -> tuple[float, str]:
    """(T*, kind) of one curve: the mean value at each ``pretrain_time`` (over draws, if several), in
    order, computed in ``dtype`` (``analysis.inflection``: float32, the stores' precision, unless
    asked); where several draws give a time its standard error, a rise within it is "flat". T* is read
    on a log axis, so a checkpoint at T <= 0 (the initialisation, at 0 tokens) is left out of it."""
    curve = curve[curve["pretrain_time"] > 0]
    stats = curve.groupby("pretrain_time")["value"].agg(["mean", "sem"]).sort_index()  # sem NaN for one draw
    if len(stats) < 3:
        return np.nan, "none"
    T, values, spread = stats.index.to_numpy(float), stats["mean"].to_numpy(float), stats["sem"].to_numpy(float)
    t_star = float(inflection(T, values, dtype=dtype, spread=spread))
    return t_star, str(inflection_kind(T, values, dtype=dtype, spread=spread))


def curve_t_star(curve: pd.DataFrame, dtype=np.float32) -> float:
    """T* of one curve (``curve_inflection``), NaN when it has none in range."""
    return curve_inflection(curve, dtype)[0]


def inflection_rows(curves: pd.DataFrame, by: list[str], dtype=np.float32, **fields) -> pd.DataFrame:
    """One ``inflection`` row per group of ``curves`` by ``by`` (sorted; NaN keys are groups too):
    the group's first row with the curve's T* and kind (``curve_inflection``), its measurements at
    their defaults, and ``fields`` (``seed=MEAN_OVER_SEEDS`` for a mean over draws)."""
    rows = []
    for _, curve in curves.groupby(by, dropna=False, sort=True):
        row = curve.iloc[0].to_dict()
        for name in MEASURED:
            if name in row:
                row[name] = OPTIONAL_COLUMNS[name][1]
        t_star, kind = curve_inflection(curve, dtype)
        row.update(checkpoint="inflection", pretrain_time=np.nan, metric="inflection", value=t_star, **{KIND: kind})
        rows.append(row | fields)
    return pd.DataFrame(rows, columns=_with_kind(curves.columns))


def judge_by_seed_spread(frame: pd.DataFrame, metric: str = "pretrain_loss", dtype=np.float32) -> pd.DataFrame:
    """``frame`` with every "interior" inflection row of one seed's curve judged again against the
    spread of the seeds: where several seeds draw the same curve (every identity column but ``seed``
    equal: an SGD series or a random init per seed), a rise after the minimum no larger than the
    standard deviation over the seeds at the minimum's time is seed noise, so the row becomes "flat"
    with T* NaN (``analysis.inflection``'s ``spread``). Curves of one seed, or whose seeds agree
    exactly (the closed form draws nothing), keep their T*; rows whose curve is not in ``frame``
    under the same identity (tuned-lr rows: their lr varies along the curve) are left alone."""
    if KIND not in frame or frame.seed.nunique() < 2:
        return frame
    rows = frame[(frame.checkpoint == "inflection") & (frame[KIND] == "interior")]
    curves = frame[(frame.checkpoint != "inflection") & (frame.metric == metric)]
    skip = {"checkpoint", "pretrain_time", "metric", "value", "seed", KIND, *MEASURED}
    identity = [c for c in frame.columns if c not in skip]
    both = pd.concat([curves.assign(_row=-1), rows.assign(_row=rows.index)], ignore_index=True)
    both["_curve"] = both.groupby(identity, dropna=False, sort=False).ngroup()
    frame = frame.copy()
    for _, group in both.groupby("_curve"):
        points = group[group._row < 0]
        if points.empty or points.seed.nunique() < 2:
            continue
        spread = points.groupby("pretrain_time").value.std()  # over seeds (ddof 1)
        judged = group[group._row >= 0]
        for index, seed in zip(judged._row, judged.seed):
            own = points[points.seed == seed].groupby("pretrain_time").value.mean().sort_index()
            if len(own) < 3:
                continue
            kind = str(
                inflection_kind(
                    own.index.to_numpy(float),
                    own.to_numpy(float),
                    dtype=dtype,
                    spread=spread.reindex(own.index).to_numpy(float),
                )
            )
            if kind != "interior":
                frame.loc[index, ["value", KIND]] = [np.nan, kind]
    return frame


def perturb_inflection_rows(
    frame: pd.DataFrame, modification: str = "gaussian", sizes: tuple[str, ...] = ("gamma",)
) -> pd.DataFrame:
    """One row per (setup, *sizes) of the ``modification`` perplexity rows: T* of the mean over draws
    (Gaussian noise per gamma; quantization per (bits, rounding))."""
    draws = frame[
        (frame.modification == modification) & (frame.metric == "perplexity") & (frame.checkpoint != "inflection")
    ]
    return inflection_rows(draws, ["setup", *sizes], seed=MEAN_OVER_SEEDS)


def finetune_inflection_rows(frame: pd.DataFrame, modification: str = "finetune") -> pd.DataFrame:
    """T* of the perplexity curve after the ``modification`` (fine-tuning; a multimodal run's stage 2)
    of every fixed lr and of the tuned lr (whose row has lr NaN: the lr varies along the curve)."""
    curves = frame[(frame.modification == modification) & (frame.metric == "perplexity")]
    curves = curves.assign(lr=curves.lr.where(curves.lr_policy == "fixed"))
    fields = {"seed": MEAN_OVER_SEEDS} if curves.seed.nunique() > 1 else {}  # repeats: T* of the mean
    return inflection_rows(curves, ["lr_policy", "lr"], **fields)


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
    return pd.concat([tuned, infl], ignore_index=True)[_with_kind(frame.columns)]
