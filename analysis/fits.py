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

Uncertainty: percentile intervals (2.5%, 97.5%) over bootstrap replicates. Where a curve has several
seeds, a replicate resamples whole seeds with replacement (the draw, not the (checkpoint, size) cell,
is the independent unit); where it has one, a replicate adds resampled log-space residuals of the fit
(scaled by sqrt(n / (n - 3)) for the three fitted parameters) to the fitted values.
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

INTERVAL = (2.5, 97.5)
GRID_POINTS = 80


def _interval(samples) -> list | None:
    samples = np.asarray(samples, float)
    samples = samples[~np.isnan(samples)]
    if samples.size < 2:
        return None
    # "nearest": no interpolation, so an infinite T* ("never") in the tail stays infinite.
    return [_num(v) for v in np.percentile(samples, INTERVAL, method="nearest")]


def _num(v) -> float | None:
    """A JSON number; None for NaN or infinity (``none in range`` / ``never``)."""
    v = float(v)
    return v if math.isfinite(v) else None


def _observed_t_star(T: np.ndarray, curves: np.ndarray) -> np.ndarray:
    """``analysis.inflection`` on the last axis of ``curves``."""
    return np.asarray(inflection(np.asarray(T), np.asarray(curves)), float)


def _decomposition(base_params, sens_params):
    return ph.Decomposition(*base_params, *sens_params)


@dataclasses.dataclass
class Replicate:
    """One bootstrap data set: the mean base curve and the mean excess (n_m, n_T)."""

    base: np.ndarray
    excess: np.ndarray
    modified: np.ndarray | None  # resampled mean modified loss (seed bootstrap only), for observed T*


def _inflated(residuals: np.ndarray, n_params: int = 3) -> np.ndarray:
    """Residuals scaled by sqrt(n / (n - k)): a k-parameter fit leaves residuals smaller than its errors."""
    n = residuals.size
    return residuals * np.sqrt(n / max(n - n_params, 1))


def _replicates(fam: Family, mask, base_fit, sens_fit, n_boot: int, rng: np.random.Generator):
    """Bootstrap data sets: seeds resampled where there are several, else log residuals resampled."""
    base_mean = seed_mean(fam.base)
    S_mean = seed_mean(fam.excess())
    n_base, n_mod = fam.base.shape[1], fam.modified.shape[2]
    D = _decomposition(base_fit, sens_fit)
    log_base_fit = np.log(D.base(fam.T))
    base_resid = _inflated((np.log(base_mean) - log_base_fit)[mask])
    log_S_fit = np.log(D.excess(fam.T[None, :], fam.sizes[:, None]))
    used = mask[None, :] & (S_mean > 0)
    S_resid = _inflated((np.log(np.where(used, S_mean, 1.0)) - log_S_fit)[used])
    for _ in range(n_boot):
        seeds = rng.integers(0, n_mod, n_mod) if n_mod > 1 else None
        base_seeds = None
        if n_base > 1:
            base_seeds = seeds if fam.paired else rng.integers(0, n_base, n_base)
            base = seed_mean(fam.base[:, base_seeds])
        else:
            base = np.exp(log_base_fit + rng.choice(base_resid, fam.T.size))
        if seeds is not None:
            S = seed_mean(fam.excess(seeds, base_seeds))
            modified = seed_mean(fam.modified[:, :, seeds])
        else:
            S = np.where(used, np.exp(log_S_fit + rng.choice(S_resid, log_S_fit.shape)), np.nan)
            modified = None
        yield Replicate(base, S, modified)


def _stat(value, samples) -> dict:
    return {"value": _num(value), "interval": _interval(samples)}


def fit_family(fam: Family, n_boot: int, seed: int, window, fit_linear_model: Callable) -> dict:
    """Every fit of one family (its window set by ``families.fittable``), as its fits.json entry.
    ``fit_linear_model(T, L)`` -> (model, Goodness) fits the linear model to the windowed base curve."""

    mask = fam.mask
    n_used = int(mask.sum())
    base_mean = seed_mean(fam.base)
    S_all = fam.excess()
    S_mean = seed_mean(S_all)
    mod_mean = seed_mean(fam.modified)
    base_fit, base_good = ph.fit_base(fam.T[mask], base_mean[mask])
    sens_fit, sens_good = ph.fit_sensitivity(*sensitivity_points(fam, S_mean, mask))
    D = _decomposition(base_fit, sens_fit)
    folds = range(fam.sizes.size) if fam.sizes.size >= 3 else ()  # p needs two sizes besides the held-out one

    def held_out_fit(S, h):
        """(C, p, beta) without size h; None where the other sizes' excess is not positive at two sizes."""
        try:
            return ph.fit_sensitivity(*sensitivity_points(fam, S, mask, h))[0]
        except ValueError:
            return None

    fold_fits = {h: fit for h in folds if (fit := held_out_fit(S_mean, h)) is not None}
    t_obs = _observed_t_star(fam.T, mod_mean)

    # Bootstrap: parameters, in-sample and held-out T*, and observed T* where seeds allow it.
    rng = np.random.default_rng(seed)
    boot_params, boot_t_fit, boot_t_held, boot_modified = [], [], [], []
    for rep in _replicates(fam, mask, base_fit, sens_fit, n_boot, rng):
        try:
            b, _ = ph.fit_base(fam.T[mask], rep.base[mask], start=base_fit)
            s, _ = ph.fit_sensitivity(*sensitivity_points(fam, rep.excess, mask))
        except ValueError:  # a replicate with too few positive points: it counts as missing
            continue
        boot_params.append([*b, *s])
        boot_t_fit.append(_decomposition(b, s).t_star(fam.sizes))
        row = np.full(fam.sizes.size, np.nan)
        for h in folds:
            if (fit := held_out_fit(rep.excess, h)) is not None:
                row[h] = _decomposition(b, fit).t_star(fam.sizes[h])
        boot_t_held.append(row)
        if rep.modified is not None:
            boot_modified.append(rep.modified)
    boot_params = np.asarray(boot_params).reshape(-1, 6)
    boot_t_fit = np.asarray(boot_t_fit).reshape(-1, fam.sizes.size)
    boot_t_held = np.asarray(boot_t_held).reshape(-1, fam.sizes.size)
    boot_t_obs = _observed_t_star(fam.T, np.stack(boot_modified)) if boot_modified else np.empty((0, fam.sizes.size))

    names = ("E", "A", "alpha", "C", "p", "beta")
    decomposition = {n: _stat(v, boot_params[:, i]) for i, (n, v) in enumerate(zip(names, [*base_fit, *sens_fit]))}
    decomposition["goodness"] = {"base": dataclasses.asdict(base_good), "excess": dataclasses.asdict(sens_good)}
    # T* ~ m^(-p / (alpha + beta)): how fast the inflection moves with the size.
    decomposition["t_star_exponent"] = _stat(
        -sens_fit[1] / (base_fit[2] + sens_fit[2]), -boot_params[:, 4] / (boot_params[:, 2] + boot_params[:, 5])
    )
    observed = [
        {"value": _num(t_obs[i]), "interval": _interval(boot_t_obs[:, i]) if len(boot_t_obs) else None}
        for i in range(fam.sizes.size)
    ]
    in_sample = [
        {"size": float(m), "observed": observed[i], "fit": _stat(D.t_star(m), boot_t_fit[:, i])}
        for i, m in enumerate(fam.sizes)
    ]
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
        "bootstrap": {
            "replicates": int(len(boot_params)),
            "requested": n_boot,
            "interval": "2.5-97.5 percentile",
            "base": "seeds" if fam.base.shape[1] > 1 else "log residuals",
            "excess": "seeds" if fam.modified.shape[2] > 1 else "log residuals",
        },
        "decomposition": decomposition,
        "t_star": in_sample,
        "held_out": _held_out(fam, mask, base_fit, fold_fits, S_mean, mod_mean, observed, boot_t_held)
        if fold_fits
        else {"skipped": f"{fam.sizes.size} sizes: holding one out must leave two sizes with a positive excess"},
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


def _held_out(fam, mask, base_fit, fold_fits, S_mean, mod_mean, observed, boot_t_held) -> dict:
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
                "predicted": _stat(t_pred, boot_t_held[:, h]),
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
    """One row per family: the exponents, and the two goodness-of-prediction numbers."""
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
