"""Every fit of one family, as its JSON-able ``fits.json`` entry (``ovt compare``).

1. the power-law decomposition of ``analysis.phenomenology``: L(T) = E + A T^-alpha on the base curve,
   S(T, m) = C m^p T^beta on the excess of the modified model over the base, both in log space; the
   closed form T*(m) = (alpha A / (beta C m^p))^(1/(alpha+beta)) for every size;
2. the linear model (power-law spectrum, u0, T_flow = kappa T, floor E) on the base curve alone, by
   the fitter the caller passes (``theory.linear_model.fit_linear_model``: JAX evaluates it); its
   reference scale (theory gamma, or fine-tuning time, per unit of m) on the *smallest* size alone;
   every other size's excess and T* are then predictions, with no further fitting;
3. held-out prediction: the excess fitted on all sizes but one (the base fit is shared: base rows are
   never held out) predicts the held-out size's curve and T*.

Observed T* is ``analysis.inflection`` of the mean modified loss over the whole grid, the helper
that writes the stores' inflection rows.

Uncertainty (``analysis.intervals``): 95% Student-t intervals, value +- t(dof, 0.975) x bootstrap
s.e., over ``n_boot`` replicates. Where a part (base curve, excess) has k > 1 seeds, a replicate
resamples whole seeds, dof = k - 1, and the s.e. is scaled by sqrt(k / (k - 1)); a single LLM curve
in a family with seeds on its other part resamples its n log residuals (dof = n - 3); a single
theory curve, or any curve of a family with one seed and no draws, is fixed: a quantity resting only
on fixed parts has no interval (null, with ``method`` "none (...)"), one that also rests on a varying
part has an interval conditional on the fixed one. Every interval says its ``method``, ``n_draws``,
``draws`` and ``dof``. Each held-out fold is bootstrapped on its own: its replicates refit the sizes
it keeps, resampled seeds or, for a single excess curve, log residuals of the fold's own fit; the
held-out size enters no replicate of its fold. Replicate fits of the excess are one batched least
squares.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from analysis import phenomenology as ph
from analysis.families import (
    LOSS_LABEL,
    SIZE_LABEL,
    WINDOW_RULE,
    Family,
    seed_mean,
    sensitivity_points,
    standard_error,
)
from analysis.inflection import inflection
from analysis.intervals import Draws, base_draws, excess_draws, modified_draws, t_stat

GRID_POINTS = 80
INTERVAL_RULE = (
    "95%: value +- t(dof, 0.975) x bootstrap s.e. (x sqrt(k / (k - 1)) over k seeds; log space for A, C "
    "and T*); dof = seeds - 1 or log residuals - 3; none where every part it rests on is fixed"
)


def _num(v) -> float | None:
    """A JSON number; None for NaN or infinity (``none in range`` / ``never``)."""
    v = float(v)
    return v if math.isfinite(v) else None


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


def fit_decomposition(fam: Family, n_boot: int, seed: int) -> dict:
    """The decomposition's part of a family's entry (its window set by ``families.fittable``): the
    bootstrap settings, the six parameters, in-sample and held-out T*, each with its interval.

    Parameters
    ----------
    fam : Family
        The family to fit (its window set by ``families.fittable``).
    n_boot : int
        Bootstrap replicates (>= 0; 0 claims no interval).
    seed : int
        Seeds the resampling.

    Returns
    -------
    dict
        JSON-able.
    """
    return _fit_decomposition(fam, n_boot, seed)[0]


def _fit_decomposition(fam: Family, n_boot: int, seed: int):
    mask = fam.mask
    base_mean = seed_mean(fam.base)
    S_mean = seed_mean(fam.excess())
    mod_mean = seed_mean(fam.modified)
    base_fit, base_good = ph.fit_base(fam.T[mask], base_mean[mask])
    sens_fit, sens_good = ph.fit_sensitivity(*sensitivity_points(fam, S_mean, mask))
    D = _decomposition(base_fit, sens_fit)
    folds = range(fam.sizes.size) if fam.sizes.size >= 3 else ()  # p needs two sizes besides the held-out one
    fold_fits = {}
    for h in folds:  # (C, p, beta) without size h, where the other sizes' excess is positive at two sizes
        try:
            fold_fits[h] = ph.fit_sensitivity(*sensitivity_points(fam, S_mean, mask, h))[0]
        except ValueError:
            pass
    t_obs = _observed_t_star(fam.T, mod_mean)
    boot = bootstrap(fam, base_fit, sens_fit, fold_fits, n_boot, seed)
    base_d, excess_d = boot.draws["base"], boot.draws["excess"]
    both = (base_d, excess_d)

    decomposition = {
        "E": t_stat(base_fit[0], boot.base[:, 0], [base_d], lower=0.0),
        "A": t_stat(base_fit[1], boot.base[:, 1], [base_d], log=True),
        "alpha": t_stat(base_fit[2], boot.base[:, 2], [base_d]),
        "C": t_stat(sens_fit[0], boot.excess[:, 0], [excess_d], log=True),
        "p": t_stat(sens_fit[1], boot.excess[:, 1], [excess_d]),
        "beta": t_stat(sens_fit[2], boot.excess[:, 2], [excess_d]),
    }
    decomposition["goodness"] = {"base": dataclasses.asdict(base_good), "excess": dataclasses.asdict(sens_good)}
    # T* ~ m^(-p / (alpha + beta)): how fast the inflection moves with the size.
    decomposition["t_star_exponent"] = t_stat(
        -sens_fit[1] / (base_fit[2] + sens_fit[2]), -boot.excess[:, 1] / (boot.base[:, 2] + boot.excess[:, 2]), both
    )
    boot_t_fit = _t_star(boot.base, boot.excess, fam.sizes)
    observed = [
        t_stat(t_obs[i], boot.observed[:, i], [boot.draws["modified"]], log=True) for i in range(fam.sizes.size)
    ]
    in_sample = [
        {"size": float(m), "observed": observed[i], "fit": t_stat(D.t_star(m), boot_t_fit[:, i], both, log=True)}
        for i, m in enumerate(fam.sizes)
    ]
    held_stats = {}
    for h, fit in fold_fits.items():
        reps, fold_d = boot.held[h]
        m = fam.sizes[h]
        t_pred = _decomposition(base_fit, fit).t_star(m)
        held_stats[h] = t_stat(t_pred, _t_star(boot.base, reps, m)[:, 0], (base_d, fold_d), log=True)
    complete = np.isfinite(boot.base).all(axis=1) & np.isfinite(boot.excess).all(axis=1)
    parts = {
        "bootstrap": {
            "replicates": int(complete.sum()),
            "requested": n_boot,
            "interval": INTERVAL_RULE,
            "base": base_d.describe(),
            "excess": excess_d.describe(),
            "modified": boot.draws["modified"].describe(),
            "n_draws": {k: d.n for k, d in boot.draws.items()},
        },
        "decomposition": decomposition,
        "t_star": in_sample,
        "held_out": _held_out(fam, mask, base_fit, fold_fits, S_mean, mod_mean, observed, held_stats)
        if fold_fits
        else {"skipped": f"{fam.sizes.size} sizes: holding one out must leave two sizes with a positive excess"},
    }
    return parts, D, t_obs


def fit_family(fam: Family, n_boot: int, seed: int, window, fit_linear_model: Callable) -> dict:
    """Every fit of one family (its window set by ``families.fittable``), as its fits.json entry.
    ``fit_linear_model(T, L)`` -> (model, Goodness) fits the linear model to the windowed base curve.

    Parameters
    ----------
    fam : Family
        The family to fit (its window set by ``families.fittable``).
    n_boot : int
        Bootstrap replicates (>= 0; 0 claims no interval).
    seed : int
        Seeds the resampling.
    window : (float, float) or None
        The fit window in T's units, or None for the automatic rule.
    fit_linear_model : callable
        (T, L) -> (model, Goodness), e.g. ``theory.linear_model.fit_linear_model``.

    Returns
    -------
    dict
        JSON-able: the family's ``fits.json`` entry.
    """

    mask = fam.mask
    n_used = int(mask.sum())
    base_mean = seed_mean(fam.base)
    S_all = fam.excess()
    S_mean = seed_mean(S_all)
    mod_mean = seed_mean(fam.modified)
    parts, D, t_obs = _fit_decomposition(fam, n_boot, seed)
    entry = {
        "name": fam.name,
        "run": fam.run,
        "source": fam.source,
        "setup": fam.setup,
        "modification": fam.modification,
        "context": {k: (v.item() if hasattr(v, "item") else v) for k, v in fam.context.items()},
        "loss": LOSS_LABEL[fam.source],
        "size": SIZE_LABEL[fam.modification],
        "sizes": fam.sizes.tolist(),
        "checkpoints": int(fam.T.size),
        "T_range": [float(fam.T[0]), float(fam.T[-1])],
        "window": {
            "T_min": float(fam.T[mask][0]),
            "T_max": float(fam.T[mask][-1]),
            "checkpoints": n_used,
            "rule": "--window" if window is not None else WINDOW_RULE,
        },
        "seeds": {"base": int(fam.base.shape[1]), "modified": int(fam.modified.shape[2]), "paired": fam.paired},
        **parts,
    }
    grid = np.geomspace(fam.T[0], fam.T[-1], GRID_POINTS)
    entry["linear_model"], linear_lines = _linear_model(fam, mask, base_mean, S_mean, t_obs, fit_linear_model, grid)
    entry["observed"] = _observed(fam, base_mean, mod_mean, S_all)
    sizes = np.geomspace(fam.sizes[0] / 1.5, fam.sizes[-1] * 1.5, 50)
    entry["curves"] = {  # fitted and predicted lines on a dense grid, for the figures
        "T": grid.tolist(),
        "decomposition": {"base": _numbers(D.base(grid)), "excess": [_numbers(D.excess(grid, m)) for m in fam.sizes]},
        "t_star_line": {"size": sizes.tolist(), "t_star": _numbers(D.t_star(sizes))},
        "linear_model": linear_lines,
    }
    return entry


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
                "log_rmse_loss": _num(np.sqrt(np.mean(res**2))) if res.size else None,
                "log_rmse_excess": _num(np.sqrt(np.mean((y - f) ** 2))) if y.size else None,
                "params": dict(zip(("C", "p", "beta"), sens)),
            }
        )
    pooled = ph.goodness(np.concatenate(excess_obs), np.concatenate(excess_pred))
    return {
        "per_size": rows,
        "n_compared": len(log_err),
        "in_range_disagreements": disagree,
        "median_abs_log_t_star_error": _num(np.median(log_err)) if log_err else None,
        "log_rmse_excess": pooled.rmse_log,
        "r2_log_excess": _num(pooled.r2_log),
        "log_rmse_loss": _num(np.sqrt(np.mean(np.concatenate(loss_res) ** 2))),
    }


def _linear_model(fam, mask, base_mean, S_mean, t_obs, fit_linear_model, grid):
    """Fit the linear model on the base curve, its reference on the smallest size; predict the rest.
    Returns its fits.json entry and its lines on ``grid``."""
    model, good = fit_linear_model(fam.T[mask], base_mean[mask])
    # The smallest size whose excess is positive somewhere in the window (normally the smallest).
    r = next(i for i in range(fam.sizes.size) if (S_mean[i][mask] > 0).any())
    ref = ph.fit_reference(model, fam.modification, fam.T[mask], fam.sizes[r], S_mean[r][mask])
    base_grid, excess_grid = model.curves(grid, fam.modification, fam.sizes * ref)
    _, excess_at = model.curves(fam.T[mask], fam.modification, fam.sizes * ref)
    t_pred = _observed_t_star(grid, base_grid[None] + excess_grid)
    rows, log_err, res = [], [], []
    for i, m in enumerate(fam.sizes):
        keep = (S_mean[i][mask] > 0) & (excess_at[i] > 0)
        err = np.log(S_mean[i][mask][keep]) - np.log(excess_at[i][keep])
        if i != r:
            res.append(err)
            if np.isfinite(t_pred[i]) and np.isfinite(t_obs[i]):
                log_err.append(abs(math.log(t_pred[i] / t_obs[i])))
        rows.append(
            {
                "size": float(m),
                "fitted_on": i == r,
                "t_star_predicted": _num(t_pred[i]),
                "t_star_observed": _num(t_obs[i]),
                "log_rmse_excess": _num(np.sqrt(np.mean(err**2))) if err.size else None,
            }
        )
    meaning = {
        "gaussian": "theory gamma (noise std gamma * ref / sqrt(rank)) per unit of the store's gamma",
        "finetune": "theory fine-tuning flow time tau per unit of lr x steps, toward B = the reversed spectrum",
    }[fam.modification]
    pooled = np.concatenate(res) if res else np.array([])
    lin = {
        "params": {
            "alpha_s": model.alpha_s,
            "s1": model.s1,
            "u0": model.u0,
            "kappa": model.kappa,
            "E": model.E,
            "rank": model.rank,
        },
        "at_bounds": list(model.at_bounds),
        "fitted_on": "params: the base curve in the window; reference: the smallest size's excess in the window; "
        "every other size is predicted without further fitting",
        "base_goodness": dataclasses.asdict(good),
        "reference": {"value": ref, "size": float(fam.sizes[r]), "meaning": meaning},
        "per_size": rows,
        "median_abs_log_t_star_error": _num(np.median(log_err)) if log_err else None,
        "n_compared": len(log_err),
        "log_rmse_excess_predicted": _num(np.sqrt(np.mean(pooled**2))) if pooled.size else None,
    }
    return lin, {"base": _numbers(base_grid), "excess": [_numbers(e) for e in excess_grid], "reference": ref}


def _numbers(values) -> list:
    return [_num(v) for v in np.asarray(values, float)]


def _observed(fam, base_mean, mod_mean, S_all) -> dict:
    """Means and standard errors over seeds, for the figures (null s.e. with one seed)."""
    return {
        "T": fam.T.tolist(),
        "base": {"mean": _numbers(base_mean), "se": _numbers(standard_error(fam.base))},
        "modified": [
            {"size": float(m), "mean": _numbers(mod_mean[i]), "se": _numbers(standard_error(fam.modified[i]))}
            for i, m in enumerate(fam.sizes)
        ],
        "excess": [
            {"size": float(m), "mean": _numbers(seed_mean(S_all[i])), "se": _numbers(standard_error(S_all[i]))}
            for i, m in enumerate(fam.sizes)
        ],
    }


def summary_rows(entries: list[dict]) -> list[dict]:
    """One row per family: the exponents, and the two goodness-of-prediction numbers.

    Parameters
    ----------
    entries : list of dict
        Entries of ``fit_family``.

    Returns
    -------
    list of dict
    """
    rows = []
    for e in entries:
        d, held, lin = e["decomposition"], e["held_out"], e["linear_model"]
        rows.append(
            {
                "family": e["name"],
                "alpha": d["alpha"]["value"],
                "beta": d["beta"]["value"],
                "p": d["p"]["value"],
                "held_out_median_abs_log_t_star_error": held.get("median_abs_log_t_star_error"),
                "held_out_r2_log_excess": held.get("r2_log_excess"),
                "linear_alpha_s": lin["params"]["alpha_s"],
                "linear_median_abs_log_t_star_error": lin["median_abs_log_t_star_error"],
            }
        )
    return rows


def predict_t_star(fam: Family, sizes, n_boot: int, seed: int) -> dict:
    """A prediction made before its data are looked at: the decomposition fitted to ``fam`` alone (the
    fit sizes; ``fam`` must not hold the ``sizes`` predicted), and T*(m) at each of ``sizes`` from the
    closed form, with its 95% interval from ``n_boot`` replicates of the fit (``bootstrap``). The base
    and excess fits use the whole T grid (``fam.mask`` where set).

    Parameters
    ----------
    fam : Family
        The fit sizes' family.
    sizes : sequence of float
        Modification sizes m to predict T* at (gamma, or lr x steps).
    n_boot : int
        Bootstrap replicates (>= 0; 0 claims no interval).
    seed : int
        Seeds the resampling.

    Returns
    -------
    dict
        JSON-able: the fitted parameters and, per size, the predicted T* (in T's units) and its interval.
    """
    held = [float(m) for m in np.atleast_1d(np.asarray(sizes, float))]
    if set(held) & {float(m) for m in fam.sizes}:
        raise ValueError(f"sizes {held} overlap the family's own {fam.sizes.tolist()}: not a prediction")
    if fam.mask is None:
        fam = dataclasses.replace(fam, mask=np.ones(fam.T.size, bool))
    base_fit, base_good = ph.fit_base(fam.T[fam.mask], seed_mean(fam.base)[fam.mask])
    sens_fit, sens_good = ph.fit_sensitivity(*sensitivity_points(fam, seed_mean(fam.excess()), fam.mask))
    boot = bootstrap(fam, base_fit, sens_fit, {}, n_boot, seed)
    D = _decomposition(base_fit, sens_fit)
    replicates = _t_star(boot.base, boot.excess, held)
    parts = (boot.draws["base"], boot.draws["excess"])
    return {
        "fit_sizes": fam.sizes.tolist(),
        "fitted_t_star": [float(D.t_star(m)) for m in fam.sizes],  # in-sample, for the model error
        "parameters": dict(zip(("E", "A", "alpha", "C", "p", "beta"), map(float, (*base_fit, *sens_fit)))),
        "goodness": {"base": dataclasses.asdict(base_good), "excess": dataclasses.asdict(sens_good)},
        "predictions": [
            {"size": m, "t_star": t_stat(float(D.t_star(m)), replicates[:, i], parts, log=True)}
            for i, m in enumerate(held)
        ],
    }
