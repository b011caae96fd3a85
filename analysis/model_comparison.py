"""Rival models of a family's curves scored on held-out data (``ovt compare``'s comparison table).

A *curve model* is anything with ``name``, ``n_params`` and ``fit(T, base, sizes, S)`` returning a fit
with ``predict(T, sizes) -> (base (n,), excess (k, n))``, ``params()``, ``at_bounds`` and ``goodness``
(log space, over the n_points it fitted). Here: the power-law decomposition (``DecompositionCurves``),
the Shannon law (``analysis.shannon``); the linear model with and without its link to log-loss is
``theory.linear_fit.LinearCurves`` (JAX), passed in by the caller.

Scores, each on data the fit did not see:

- held-out sizes: every size in turn is left out (families with >= 3 sizes), the model is fitted on
  the base and the other sizes, and predicts the left-out size's excess;
- held-out series (a study: several pre-training series of one setup on one T grid): every series in
  turn is left out, the model is fitted on the mean curves of the others, and predicts the left-out
  series' excess at every size.

For each: the log-RMSE of the predicted excess over the held-out points (S > 0), the median |ln T*
error| (T* of the predicted base + excess against the observed T* of the held-out curve, where both
exist), the coverage of 95% prediction bands (fitted log excess +- t(n - k, 0.975) x the RMS of the
fold's own log-excess residuals scaled by sqrt(n / (n - k)), k the parameter count), and the
parameter count. A model that predicts no positive excess at a measured point is not ranked. The best
model is the one with the lowest held-out log-RMSE (series where there are any, else sizes).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import stats

from analysis import phenomenology as ph
from analysis.inflection import inflection
from analysis.intervals import json_number

LEVEL = 0.95
BOUND_REASONS = {  # why a parameter sits on a bound of its fit's box: what the curves do not determine
    "E": "the floor is the lowest measured loss: the curve has not flattened inside the window",
    "lam": "the link does not saturate inside the sizes measured: the quadratic model (lam -> infinity)",
    "alpha_s": "a flat spectrum: the curve's shape is carried by u0 / s1 (profiled) instead of the exponent",
    "b": "the base curve's decay exponent runs to its edge: too few checkpoints past the plateau",
}
UNSTATED = "not determined by these curves: the fit runs to the edge of its box"


def bound_reasons(at_bounds) -> dict:
    """{parameter: why it sits on a bound} for every name in ``at_bounds``."""
    return {name: BOUND_REASONS.get(name, UNSTATED) for name in at_bounds}


@dataclasses.dataclass(frozen=True)
class DecompositionFit:
    """L = E + A T^-alpha fitted on the base, S = C m^p T^beta on the excess (``analysis.phenomenology``)."""

    decomposition: ph.Decomposition
    at_bounds: tuple[str, ...]
    goodness: ph.Goodness
    n_points: int
    name = "decomposition"
    n_params = 6

    def params(self) -> dict:
        return dataclasses.asdict(self.decomposition)

    def predict(self, T, sizes):
        D = self.decomposition
        return D.base(T), np.array([D.excess(T, m) for m in np.atleast_1d(sizes)])


@dataclasses.dataclass(frozen=True)
class DecompositionCurves:
    """The power-law decomposition as a curve model."""

    name = "decomposition"
    n_params = 6

    def fit(self, T, base, sizes, S) -> DecompositionFit:
        T, base, sizes, S = (np.asarray(v, float) for v in (T, base, sizes, S))
        base_fit, _ = ph.fit_base(T, base)
        grid = np.broadcast_to(T, S.shape)
        sens_fit, _ = ph.fit_sensitivity(grid.ravel(), np.broadcast_to(sizes[:, None], S.shape).ravel(), S.ravel())
        D = ph.Decomposition(*base_fit, *sens_fit)
        at_bounds = ("E",) if base_fit[0] <= 0 or base_fit[0] >= base.min() * (1 - 1e-9) else ()
        ok = np.isfinite(S) & (S > 0)
        y = np.concatenate([np.log(base), np.log(S[ok])])
        fitted = np.concatenate([np.log(D.base(T)), np.log(np.array([D.excess(T, m) for m in sizes]))[ok]])
        return DecompositionFit(D, at_bounds, ph.goodness(y, fitted), int(y.size))


def _band(fit, T, sizes, S) -> float:
    """Half-width of the fit's 95% prediction band for log excess: t(n - k, 0.975) x the RMS of its own
    log-excess residuals on the data it was fitted to (``sizes``, ``S``) x sqrt(n / (n - k)), with n
    those points and k the model's parameters (the base's residuals, often far smaller, left out)."""
    _, excess = fit.predict(T, sizes)
    ok = np.isfinite(S) & (S > 0) & (excess > 0)
    n, k = int(ok.sum()), fit.n_params
    if n - k < 1:
        return math.inf
    rms = float(np.sqrt(np.mean((np.log(S[ok]) - np.log(excess[ok])) ** 2)))
    return float(stats.t.ppf(0.5 + LEVEL / 2, n - k) * rms * math.sqrt(n / (n - k)))


def _score(fit, T, sizes, S, grid, t_observed, half: float) -> dict:
    """Errors of ``fit``'s predicted excess against the held-out S (k, n) at ``sizes``; ``half`` is the
    band's half-width. A measured point (S > 0) the model predicts no positive excess at counts as
    ``unpredicted``, and a model with any is not ranked."""
    _, excess = fit.predict(T, sizes)
    base_grid, excess_grid = fit.predict(grid, sizes)
    t_pred = np.asarray(inflection(grid, base_grid[None] + excess_grid), float)
    measured = np.isfinite(S) & (S > 0)
    ok = measured & (excess > 0)
    err = np.log(S[ok]) - np.log(excess[ok])
    t_err = [
        abs(math.log(p / o)) for p, o in zip(t_pred, np.atleast_1d(t_observed)) if np.isfinite(p) and np.isfinite(o)
    ]
    return {
        "errors": err,
        "covered": np.abs(err) <= half,
        "t_star_errors": t_err,
        "unpredicted": int((measured & ~ok).sum()),
    }


def _summary(scores: list[dict], failures: list[str], unit: str) -> dict:
    if not scores:
        return {"skipped": failures[0] if failures else f"no {unit} to hold out"}
    err = np.concatenate([s["errors"] for s in scores])
    covered = np.concatenate([s["covered"] for s in scores])
    t_err = [e for s in scores for e in s["t_star_errors"]]
    return {
        "folds": len(scores),
        "unit": unit,
        "n_points": int(err.size),
        "log_rmse_excess": json_number(np.sqrt(np.mean(err**2))) if err.size else None,
        "coverage": json_number(covered.mean()) if covered.size else None,
        "median_abs_log_t_star_error": json_number(np.median(t_err)) if t_err else None,
        "n_t_star": len(t_err),
        "unpredicted": sum(s["unpredicted"] for s in scores),
        "failed": failures,
    }


def held_out_sizes(model, T, base, sizes, S, t_observed, grid) -> dict:
    """Leave each size out in turn (>= 3 sizes), fit on the rest, score the left-out size's excess.

    Parameters
    ----------
    model : curve model
        ``fit(T, base, sizes, S)`` (module docstring).
    T, base : arrays, shape (n,)
        The pre-training grid and the base loss.
    sizes : array, shape (k,)
        Modification sizes.
    S : array, shape (k, n)
        Measured excess.
    t_observed : array, shape (k,)
        Observed T* of each size's modified curve (NaN where none).
    grid : array
        Dense T grid for the predicted T*.

    Returns
    -------
    dict
        JSON-able (``_summary``), with the folds' log-RMSE, coverage, T* error.
    """
    sizes, S = np.asarray(sizes, float), np.asarray(S, float)
    if sizes.size < 3:
        return {"skipped": f"{sizes.size} sizes: holding one out must leave two"}
    scores, failures = [], []
    for h in range(sizes.size):
        keep = np.arange(sizes.size) != h
        try:
            fit = model.fit(T, base, sizes[keep], S[keep])
        except ValueError as error:
            failures.append(f"size {sizes[h]:g}: {error}")
            continue
        half = _band(fit, T, sizes[keep], S[keep])
        scores.append(_score(fit, T, sizes[h : h + 1], S[h : h + 1], grid, np.asarray(t_observed)[h : h + 1], half))
    return _summary(scores, failures, "size")


def held_out_series(model, T, bases, sizes, excesses, t_observed, grid) -> dict:
    """Leave each series out in turn (>= 3 series), fit on the other series' mean curves, score the
    left-out series' excess at every size.

    Parameters
    ----------
    model : curve model
    T : array, shape (n,)
        The common pre-training grid.
    bases : array, shape (j, n)
        Each series' base loss.
    sizes : array, shape (k,)
    excesses : array, shape (j, k, n)
        Each series' excess.
    t_observed : array, shape (j, k)
        Each series' observed T* per size.
    grid : array
        Dense T grid for the predicted T*.
    """
    bases, excesses = np.asarray(bases, float), np.asarray(excesses, float)
    if bases.shape[0] < 3:
        return {"skipped": f"{bases.shape[0]} series: holding one out must leave two"}
    scores, failures = [], []
    for j in range(bases.shape[0]):
        keep = np.arange(bases.shape[0]) != j
        try:
            S_fit = np.nanmean(excesses[keep], axis=0)
            fit = model.fit(T, bases[keep].mean(0), sizes, S_fit)
        except ValueError as error:
            failures.append(f"series {j}: {error}")
            continue
        half = _band(fit, T, sizes, S_fit)
        scores.append(_score(fit, T, sizes, excesses[j], grid, np.asarray(t_observed)[j], half))
    return _summary(scores, failures, "series")


def compare_models(models, T, base, sizes, S, t_observed, grid, series=None, hold_sizes: bool = True) -> dict:
    """Fit every model to the whole family and score it on held-out sizes (and series).

    Parameters
    ----------
    models : sequence of curve models
    T, base, sizes, S, t_observed, grid
        As ``held_out_sizes``.
    series : dict or None
        ``{"bases": (j, n), "excesses": (j, k, n), "t_observed": (j, k)}`` of the family's pre-training
        series on the same grid, for held-out series.
    hold_sizes : bool
        Also hold out each size in turn.

    Returns
    -------
    dict
        JSON-able: one row per model (parameters, what sits at a bound, in-sample goodness, held-out
        scores), the best model, and each model's fitted lines on ``grid``.
    """
    rows, lines = [], {}
    for model in models:
        row = {"model": model.name, "n_params": model.n_params}
        try:
            fit = model.fit(T, base, sizes, S)
        except ValueError as error:
            rows.append(row | {"failed": str(error)})
            continue
        base_grid, excess_grid = fit.predict(grid, sizes)
        lines[model.name] = {"base": _numbers(base_grid), "excess": [_numbers(e) for e in excess_grid]}
        row |= {
            "params": {k: json_number(v) for k, v in fit.params().items()},
            "at_bounds": list(fit.at_bounds),
            "bound_reasons": bound_reasons(fit.at_bounds),
            **({"u0_profile": fit.profile} if getattr(fit, "profile", None) else {}),
            "in_sample": {"log_rmse": json_number(fit.goodness.rmse_log), "n_points": fit.goodness.n},
        }
        if hold_sizes:
            row["held_out_sizes"] = held_out_sizes(model, T, base, sizes, S, t_observed, grid)
        if series is not None:
            row["held_out_series"] = held_out_series(
                model, T, series["bases"], sizes, series["excesses"], series["t_observed"], grid
            )
        rows.append(row)
    return {"models": rows, "best": best_model(rows), "lines": lines}


def held_out_score(row: dict) -> float | None:
    """The row's held-out log-RMSE of the excess: over series where scored, else over sizes; None
    (not ranked) where the model predicted no positive excess at some measured point."""
    for part in ("held_out_series", "held_out_sizes"):
        scored = row.get(part, {})
        if scored.get("log_rmse_excess") is not None:
            return None if scored.get("unpredicted") else scored["log_rmse_excess"]
    return None


def best_model(rows: list[dict]) -> str | None:
    """The model with the lowest ``held_out_score`` (None when no model was scored)."""
    scored = [(held_out_score(r), r["model"]) for r in rows if held_out_score(r) is not None]
    return min(scored)[1] if scored else None


def table_rows(family: str, comparison: dict) -> list[dict]:
    """One printable row per model of a family's comparison."""
    rows = []
    for r in comparison["models"]:
        sizes, series = r.get("held_out_sizes", {}), r.get("held_out_series", {})
        rows.append(
            {
                "family": family,
                "model": r["model"] + (" *" if r["model"] == comparison["best"] else ""),
                "params": r["n_params"],
                "at_bounds": ",".join(r.get("at_bounds", [])) or "-",
                "log_rmse_sizes": sizes.get("log_rmse_excess"),
                "log_rmse_series": series.get("log_rmse_excess"),
                "coverage": (series if series.get("coverage") is not None else sizes).get("coverage"),
                "abs_ln_t_star": (series if series.get("n_t_star") else sizes).get("median_abs_log_t_star_error"),
            }
        )
    return rows


def _numbers(values) -> list:
    return [json_number(v) for v in np.asarray(values, float)]
