"""The decomposition L_mod(T) = L_base(T) + S(T) fitted per family and its bootstrap: the predicted T*
of the fitted pieces, the fitted sensitivity of every replicate and every left-out checkpoint, and
replicate excesses simulated from the fit's inflated residuals.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from analysis import phenomenology as ph
from analysis.families import (
    Family,
    seed_mean,
    sensitivity_points,
)
from analysis.inflection import inflection
from analysis.intervals import Draws, base_draws, excess_draws, json_number, modified_draws


def _observed_t_star(T: np.ndarray, curves: np.ndarray) -> np.ndarray:
    """``analysis.inflection`` on the last axis of ``curves``."""
    return np.asarray(inflection(np.asarray(T), np.asarray(curves)), float)


def _observed_replicates(T: np.ndarray, curves: np.ndarray) -> np.ndarray:
    """``_observed_t_star`` of bootstrap curves, a T* outside the grid made one-sided: 0 where the
    curve's minimum is at the first checkpoint, +inf where it is later but has no inflection in range."""
    t = _observed_t_star(T, curves)
    first = np.argmin(np.where(np.isfinite(curves), curves, np.inf), axis=-1) == 0
    return np.where(np.isnan(t), np.where(first, 0.0, np.inf), t)


def _decomposition(base_params, sens_params):
    return ph.Decomposition(*base_params, *sens_params)


def _inflated(residuals: np.ndarray, n_params: int = 3) -> np.ndarray:
    """Residuals scaled by sqrt(n / (n - k)): a k-parameter fit leaves residuals smaller than its errors."""
    n = residuals.size
    return residuals * np.sqrt(n / max(n - n_params, 1))


def _t_star(base: np.ndarray, sens: np.ndarray, m) -> np.ndarray:
    """``ph.inflection_time`` of rows of (E, A, alpha) and (C, p, beta): (B, len(m)); NaN for a failed fit."""
    _, A, alpha = (base[:, i, None] for i in range(3))
    C, p, beta = (sens[:, i, None] for i in range(3))
    m = np.atleast_1d(np.asarray(m, float))[None, :]
    grows = (beta > 0) & (C > 0) & (alpha > 0) & (A > 0)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        t = (alpha * A / (beta * C * m**p)) ** (1.0 / (alpha + beta))
    failed = np.isnan(base).any(axis=1)[:, None] | np.isnan(sens).any(axis=1)[:, None]
    return np.where(failed, np.nan, np.where(grows, t, np.inf))


def _fit_sensitivity_batch(fam: Family, mask, S: np.ndarray, leave_out: int | None = None) -> np.ndarray:
    """(C, p, beta) of each replicate's excess S (B, n_m, n_T) without size ``leave_out``: (B, 3), NaN
    where the fit fails. One least squares for every replicate whose windowed excess is positive
    throughout; ``ph.fit_sensitivity`` for the others (it drops their non-positive points)."""
    T, m, _ = sensitivity_points(fam, np.zeros(S.shape[1:]), mask, leave_out)
    keep = [i for i in range(fam.sizes.size) if i != leave_out]
    values = S[:, keep][:, :, mask].reshape(S.shape[0], T.size)
    out = np.full((S.shape[0], 3), np.nan)
    whole = np.all(np.isfinite(values) & (values > 0), axis=1)
    if whole.any():
        X = np.stack([np.ones_like(T), np.log(m), np.log(T)], axis=1)
        coef, *_ = np.linalg.lstsq(X, np.log(values[whole]).T, rcond=None)
        out[whole] = np.column_stack([np.exp(coef[0]), coef[1], coef[2]])
    for b in np.flatnonzero(~whole):
        try:
            out[b] = ph.fit_sensitivity(T, m, values[b])[0]
        except ValueError:  # fewer than two sizes or times with a positive excess: a missing replicate
            pass
    return out


def _simulated_excess(fam: Family, mask, S_mean, fit, leave_out, n_boot, rng) -> tuple[np.ndarray, int]:
    """Excess replicates (B, n_m, n_T) from ``fit`` (C, p, beta) plus resampled inflated log residuals of
    the sizes it was fitted on (all but ``leave_out``), where the measured excess is positive; NaN
    elsewhere. Returns them and the number of residuals."""
    log_fit = np.log(_decomposition((0.0, 1.0, 1.0), fit).excess(fam.T[None, :], fam.sizes[:, None]))
    used = mask[None, :] & (S_mean > 0)
    if leave_out is not None:
        used[leave_out] = False
    resid = _inflated((np.log(np.where(used, S_mean, 1.0)) - log_fit)[used])
    draws = rng.choice(resid, (n_boot, *log_fit.shape)) if resid.size else np.zeros((n_boot, *log_fit.shape))
    return np.where(used, np.exp(log_fit + draws), np.nan), int(resid.size)


@dataclasses.dataclass
class Bootstrap:
    """Replicates of every fitted quantity, and how each part varied."""

    draws: dict[str, Draws]  # base, excess, modified
    base: np.ndarray  # (B, 3) E, A, alpha
    excess: np.ndarray  # (B, 3) C, p, beta on all sizes
    held: dict[int, tuple[np.ndarray, Draws]]  # fold -> (B, 3) C, p, beta without it, and its excess draws
    observed: np.ndarray  # (B, n_m) observed T* of the resampled mean modified curves


def bootstrap(fam: Family, base_fit, sens_fit, fold_fits: dict, n_boot: int, seed: int) -> Bootstrap:
    """``n_boot`` replicates of the family, each part resampled as its ``Draws`` says (module docstring).

    Parameters
    ----------
    fam : Family
        The family to fit (its window set by ``families.fittable``).
    base_fit : callable
        Fits the base curve of one replicate.
    sens_fit : callable
        Fits the sensitivity of one replicate.
    fold_fits : dict
        Size index -> a callable refitting the replicate without that size (held-out predictions).
    n_boot : int
        Bootstrap replicates (>= 0; 0 claims no interval).
    seed : int
        Seeds the resampling.

    Returns
    -------
    Bootstrap
        The replicates' parameters and T*.
    """
    rng = np.random.default_rng(seed)
    mask = fam.mask
    n_base, n_mod = fam.base.shape[1], fam.modified.shape[2]
    base_mean, S_mean = seed_mean(fam.base), seed_mean(fam.excess())
    n_pos = int((mask[None, :] & (S_mean > 0)).sum())
    draws = {
        "base": base_draws(fam.source, n_base, n_mod, int(mask.sum())),
        "excess": excess_draws(fam.source, n_base, n_mod, fam.paired, n_pos),
        "modified": modified_draws(fam.source, n_base, n_mod),
    }
    mod_seeds = rng.integers(0, n_mod, (n_boot, n_mod)) if n_mod > 1 else None
    base_seeds = mod_seeds if fam.paired else rng.integers(0, n_base, (n_boot, n_base)) if n_base > 1 else None

    # The base: resampled seeds, or simulated from its fit (never held out: every fold shares it).
    mode = draws["base"].mode
    base = np.tile(np.asarray(base_fit, float), (n_boot, 1))
    if mode != "fixed":
        if mode == "seeds":
            curves = seed_mean(fam.base[:, base_seeds]).T
        else:
            log_fit = np.log(_decomposition(base_fit, (1.0, 0.0, 0.0)).base(fam.T))
            resid = _inflated((np.log(base_mean) - log_fit)[mask])
            curves = np.exp(log_fit + rng.choice(resid, (n_boot, fam.T.size)))
        for b, curve in enumerate(curves):
            try:
                base[b] = ph.fit_base(fam.T[mask], curve[mask], start=base_fit)[0]
            except ValueError:
                base[b] = np.nan

    # The excess: resampled seeds (every fold refits the sizes it keeps), simulated from the all-sizes
    # fit (in sample) and from each fold's own fit (held out), or fixed.
    mode = draws["excess"].mode
    held = {}
    if mode == "seeds":
        S = np.empty((n_boot, *S_mean.shape))
        for b in range(n_boot):
            S[b] = seed_mean(fam.excess(mod_seeds[b], None if base_seeds is None else base_seeds[b]))
        excess = _fit_sensitivity_batch(fam, mask, S)
        held = {h: (_fit_sensitivity_batch(fam, mask, S, h), draws["excess"]) for h in fold_fits}
    elif mode == "log residuals":
        S, _ = _simulated_excess(fam, mask, S_mean, sens_fit, None, n_boot, rng)
        excess = _fit_sensitivity_batch(fam, mask, S)
        for h, fit in fold_fits.items():
            S_h, n = _simulated_excess(fam, mask, S_mean, fit, h, n_boot, rng)
            fold = excess_draws(fam.source, n_base, n_mod, fam.paired, n)
            held[h] = (_fit_sensitivity_batch(fam, mask, S_h, h), fold)
    else:
        excess = np.tile(np.asarray(sens_fit, float), (n_boot, 1))
        held = {h: (np.tile(np.asarray(fit, float), (n_boot, 1)), draws["excess"]) for h, fit in fold_fits.items()}

    if mod_seeds is not None and n_boot:
        modified = np.moveaxis(seed_mean(fam.modified[:, :, mod_seeds]), -1, 0)
        observed = _observed_replicates(fam.T, modified)
    else:
        observed = np.empty((0, fam.sizes.size))
    return Bootstrap(draws, base, excess, held, observed)


def _held_out(fam, mask, base_fit, fold_fits, S_mean, mod_mean, observed, predicted) -> dict:
    """Per held-out size: predicted vs observed T* and the log errors of its curve; pooled numbers."""
    rows, log_err, excess_obs, excess_pred, loss_res, disagree = [], [], [], [], [], []
    for h, sens in fold_fits.items():
        D = _decomposition(base_fit, sens)
        m = fam.sizes[h]
        t_pred = float(D.t_star(m))
        t_obs = observed[h]["value"]
        keep = mask & (S_mean[h] > 0)
        y, f = np.log(S_mean[h][keep]), np.log(D.excess(fam.T[keep], m))
        excess_obs.append(y)
        excess_pred.append(f)
        finite_mod = mask & np.isfinite(mod_mean[h])
        res = np.log(mod_mean[h][finite_mod]) - np.log(D.modified(fam.T[finite_mod], m))
        loss_res.append(res)
        in_range = bool(fam.T[0] <= t_pred <= fam.T[-1])
        if t_obs is not None and math.isfinite(t_pred):
            log_err.append(abs(math.log(t_pred / t_obs)))
        elif in_range != (t_obs is not None):  # one says "inflection within the checkpoints", the other not
            disagree.append(float(m))
        rows.append(
            {
                "size": float(m),
                "predicted": predicted[h],
                "observed": observed[h],
                "predicted_in_range": in_range,
                "log_rmse_loss": json_number(np.sqrt(np.mean(res**2))) if res.size else None,
                "log_rmse_excess": json_number(np.sqrt(np.mean((y - f) ** 2))) if y.size else None,
                "params": dict(zip(("C", "p", "beta"), sens)),
            }
        )
    pooled = ph.goodness(np.concatenate(excess_obs), np.concatenate(excess_pred))
    return {
        "per_size": rows,
        "n_compared": len(log_err),
        "in_range_disagreements": disagree,
        "median_abs_log_t_star_error": json_number(np.median(log_err)) if log_err else None,
        "log_rmse_excess": pooled.rmse_log,
        "r2_log_excess": json_number(pooled.r2_log),
        "log_rmse_loss": json_number(np.sqrt(np.mean(np.concatenate(loss_res) ** 2))),
    }
