"""A loaded result frame as fittable *families*, and the window the fits use (``ovt compare``).

A family is one run's base curve and one modification's curves at several sizes m, for one value of
every other swept field, on the base's T grid: gamma for Gaussian noise, lr x steps for fine-tuning
(fixed-lr rows only: a tuned lr changes m along the curve). The loss is L_A (``pretrain_loss``) for
theory stores and log perplexity (the mean NLL in nats) for LLM stores, so the excess of an LLM is
log(ppl_modified / ppl_base).

Fit window: the power laws hold between the plateau before anything is learned and the floor a
finite-rank linear model reaches, so the fits use the checkpoints from the last one whose base loss
is within 1% of the first checkpoint's through the last one whose base loss is above 1e-3 of it
(LLM curves keep every checkpoint). An explicit (TMIN, TMAX) replaces the rule.

Pure functions of a frame already loaded: no file access (the caller names the store's own columns).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

import numpy as np
import pandas as pd

from analysis.phenomenology import fit_sensitivity

LOSS_METRIC = {"theory": "pretrain_loss", "llm": "perplexity"}
LOSS_LABEL = {"theory": "pre-training loss L_A", "llm": "log perplexity (mean NLL, nats)"}
SIZE_LABEL = {"gaussian": "gamma", "finetune": "lr x steps"}
# Extra store columns that describe a row, not the curve it belongs to.
BOOKKEEPING = {"mean_nll", "n_tokens", "diverged", "steps_done", "train_steps", "run", "lr_policy", "t_star_kind"}
PLATEAU, FLOOR = 0.01, 1e-3
WINDOW_RULE = (
    f"from the last checkpoint whose base loss is within {PLATEAU:.0%} of the first checkpoint's "
    f"through the last one whose base loss is above {FLOOR:g} of it"
)


@dataclasses.dataclass
class Family:
    """One run's base curve and one modification's curves at several sizes, on the base's T grid."""

    name: str
    run: str
    source: str
    setup: str
    modification: str
    context: dict
    T: np.ndarray  # (n_T,) checkpoints with a base loss, increasing
    base: np.ndarray  # (n_T, n_seeds_base) loss
    sizes: np.ndarray  # (n_m,) increasing
    modified: np.ndarray  # (n_m, n_T, n_seeds) loss, NaN where not measured
    paired: bool  # base seeds are the modified seeds (subtract seed by seed)
    mask: np.ndarray | None = None  # the fit window over T (set by ``plan``)

    def excess(self, seeds=None, base_seeds=None) -> np.ndarray:
        """(n_m, n_T, n_seeds) modified minus base for the given (resampled) seed columns: seed by seed
        where paired, else minus the mean base over ``base_seeds``."""
        mod = self.modified if seeds is None else self.modified[:, :, seeds]
        if self.paired:
            base = self.base if seeds is None else self.base[:, seeds]
            return mod - base[None]
        base = self.base if base_seeds is None else self.base[:, base_seeds]
        return mod - seed_mean(base)[None, :, None]


def _loss_rows(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    rows = frame[
        (frame.metric == LOSS_METRIC[source])
        & (frame.checkpoint != "inflection")
        & (frame.pretrain_time > 0)
        & np.isfinite(frame.value)
        & (frame.value > 0)
    ]
    if "diverged" in rows:
        rows = rows[~rows.diverged.fillna(False).astype(bool)]
    if source == "llm":
        rows = rows.assign(value=np.log(rows.value))
    return rows


def context_columns(frame: pd.DataFrame, schema: Collection[str]) -> list[str]:
    """The swept fields of ``frame``: its columns outside the store's ``schema`` and the bookkeeping.

    Parameters
    ----------
    frame : DataFrame
        Result-store rows (``experiments.store.load``'s schema).
    schema : collection of str
        The store's required columns.

    Returns
    -------
    list of str
    """
    return [c for c in frame.columns if c not in schema and c not in BOOKKEEPING]


def _matches(rows: pd.DataFrame, context: dict) -> pd.Series:
    keep = pd.Series(True, index=rows.index)
    for column, value in context.items():
        if column in rows and rows[column].notna().any():
            keep &= rows[column] == value if not pd.isna(value) else rows[column].isna()
    return keep


def _seed_matrix(rows: pd.DataFrame, T: np.ndarray, seeds: list) -> np.ndarray:
    """(n_T, n_seeds) values of one curve; raises when one (T, seed) holds two rows (mixed curves)."""
    if rows.duplicated(["pretrain_time", "seed"]).any():
        raise ValueError("several rows share a checkpoint and a seed (the selection mixes curves)")
    table = rows.pivot(index="pretrain_time", columns="seed", values="value")
    return table.reindex(index=T, columns=seeds).to_numpy(float)


def families(frame: pd.DataFrame, run_name: str, schema: Collection[str]) -> tuple[list[Family], list[str]]:
    """The fittable families of one run's frame, and why the rest cannot be fitted. ``schema``: the
    store's required columns (every other column, bar the bookkeeping, is a swept field).

    Parameters
    ----------
    frame : DataFrame
        The rows of one run directory.
    run_name : str
        The run's name, used in the families' names.
    schema : collection of str
        The store's required columns.

    Returns
    -------
    (list of Family, list of str)
        The families, and one line per family that cannot be fitted, saying why.
    """
    source = str(frame.source.iloc[0]) if len(frame) else "theory"
    if source not in LOSS_METRIC:
        return [], [f"{run_name}: source={source!r} is not one of {list(LOSS_METRIC)}"]
    rows = _loss_rows(frame, source)
    if rows.empty:
        return [], [f"{run_name}: no empirical rows ({LOSS_METRIC[source]} on a checkpoint with T > 0)"]
    modified = rows[rows.modification.isin(["gaussian", "finetune"])]
    if "lr_policy" in modified:
        modified = modified[(modified.modification != "finetune") | (modified.lr_policy == "fixed")]
    base_rows = rows[rows.modification == "none"]
    if modified.empty:
        return [], [f"{run_name}: no modification rows (gaussian, or finetune at a fixed lr) to compare with the base"]
    context_cols = context_columns(frame, schema)
    found, reasons = [], []
    by = ["setup", "modification", "reg"] + context_cols
    for key, group in modified.groupby(by, dropna=False, sort=True):
        setup, modification, reg, *rest = key
        context = dict(zip(["reg"] + context_cols, [reg, *rest]))
        # NaN and "" mark a field that does not apply to these rows (bits, rounding of a Gaussian row)
        context = {k: v for k, v in context.items() if not (isinstance(v, float) and np.isnan(v)) and v != ""}
        label = f"{run_name} / {modification}" + "".join(f", {k}={v}" for k, v in context.items() if k != "reg" or v)
        # The base rows of this setup and context (``reg`` belongs to fine-tuning only).
        base = base_rows[
            (base_rows.setup == setup) & _matches(base_rows, {k: v for k, v in context.items() if k != "reg"})
        ]
        T = np.sort(base.pretrain_time.unique())
        size = group.gamma if modification == "gaussian" else group.lr * group.steps
        group = group.assign(size=size.map(lambda v: float(f"{v:.6g}")))
        sizes = np.sort(group["size"].unique())
        if T.size < 3:
            reasons.append(f"{label}: {T.size} checkpoint(s) with a base loss (T={T.tolist()}); a fit needs at least 3")
            continue
        if sizes.size < 2:
            reasons.append(
                f"{label}: one modification size ({SIZE_LABEL[modification]}={sizes[0]:g}); "
                "the size exponent p needs at least 2"
            )
            continue
        seeds = sorted(group.seed.unique())
        base_seeds = sorted(base.seed.unique())
        try:
            base_m = _seed_matrix(base, T, base_seeds)
            mod_m = np.stack([_seed_matrix(g, T, seeds) for _, g in group.groupby("size", sort=True)])
        except ValueError as error:
            reasons.append(f"{label}: {error}")
            continue
        paired = len(base_seeds) > 1 and base_seeds == seeds
        found.append(
            Family(label, run_name, source, str(setup), str(modification), context, T, base_m, sizes, mod_m, paired)
        )
    return found, reasons


def fit_window(T: np.ndarray, base: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    """Mask of the checkpoints the fits use (see the module docstring for the rule).

    Parameters
    ----------
    T : array, shape (n_t,)
        The pre-training grid (> 0, ascending): flow time for theory curves, tokens for LLM curves.
    base : array, shape (n_t,)
        The mean base (unmodified) loss at each T.
    window : (float, float) or None
        (T_min, T_max) in T's units; None for the automatic rule.

    Returns
    -------
    array of bool, shape (n_t,)
    """
    if window is not None:
        return (T >= window[0]) & (T <= window[1])
    plateau = np.abs(base - base[0]) <= PLATEAU * base[0]
    start = T.size - 1 if plateau.all() else int(np.argmin(plateau)) - 1  # the plateau's last checkpoint
    end = int(np.flatnonzero(base > FLOOR * base[0])[-1])
    mask = np.zeros(T.size, bool)
    mask[start : end + 1] = True
    return mask


def seed_mean(values: np.ndarray) -> np.ndarray:
    """Mean over the last axis (seeds) of the finite entries; NaN where there is none (a diverged run).

    Parameters
    ----------
    values : array, shape (..., n_seeds)

    Returns
    -------
    array, shape (...)
    """
    finite = np.isfinite(values)
    total = np.where(finite, values, 0.0).sum(axis=-1)
    n = finite.sum(axis=-1)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def standard_error(values: np.ndarray) -> np.ndarray:
    """Standard error over the last axis (finite entries only); NaN where fewer than 2.

    Parameters
    ----------
    values : array, shape (..., n_seeds)

    Returns
    -------
    array, shape (...)
    """
    finite = np.isfinite(values)
    n = finite.sum(axis=-1)
    x = np.where(finite, values, 0.0)
    mean = x.sum(axis=-1) / np.maximum(n, 1)
    var = np.sum(np.where(finite, (x - mean[..., None]) ** 2, 0.0), axis=-1) / np.maximum(n - 1, 1)
    return np.where(n > 1, np.sqrt(var / np.maximum(n, 1)), np.nan)


def sensitivity_points(fam: Family, S: np.ndarray, mask: np.ndarray, leave_out: int | None = None):
    """(T, m, S) of the windowed mean excess, without size index ``leave_out``.

    Parameters
    ----------
    fam : Family
        The family (sizes m, grid T).
    S : array, shape (n_sizes, n_t)
        The mean excess of each size over the base curve.
    mask : array of bool, shape (n_t,)
        The fit window.
    leave_out : int or None
        The index of a size to leave out (a held-out fit), or None.

    Returns
    -------
    (array, array, array)
        T, m and S of every point used, flattened.
    """
    keep = [i for i in range(fam.sizes.size) if i != leave_out]
    T = np.broadcast_to(fam.T[mask], (len(keep), mask.sum()))
    m = np.broadcast_to(fam.sizes[keep, None], T.shape)
    return T.ravel(), m.ravel(), S[keep][:, mask].ravel()


def fittable(fam: Family, window) -> str | None:
    """Set the family's fit window; None when it can be fitted, else why not.

    Parameters
    ----------
    fam : Family
        The family; its ``mask`` is set here.
    window : (float, float) or None
        As in ``fit_window``.

    Returns
    -------
    str or None
    """
    fam.mask = fit_window(fam.T, seed_mean(fam.base), window)
    if fam.mask.sum() < 3:
        return f"{fam.name}: the fit window keeps {int(fam.mask.sum())} checkpoint(s); a fit needs at least 3"
    try:
        fit_sensitivity(*sensitivity_points(fam, seed_mean(fam.excess()), fam.mask))
    except ValueError:
        return f"{fam.name}: the excess over the base is positive at fewer than 2 sizes and 2 checkpoints in the window"
    return None
