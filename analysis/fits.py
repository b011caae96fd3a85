"""Every fit of one family, as its JSON-able ``fits.json`` entry (``ovt compare``).

1. the power-law decomposition of ``analysis.phenomenology``: L(T) = E + A T^-alpha on the base curve,
   S(T, m) = C m^p T^beta on the excess of the modified model over the base, both in log space; the
   closed form T*(m) = (alpha A / (beta C m^p))^(1/(alpha+beta)) for every size;
2. held-out prediction: the excess fitted on all sizes but one (the base fit is shared: base rows are
   never held out) predicts the held-out size's curve and T*;
3. the rival models the caller passes (``analysis.model_comparison``: the decomposition, the Shannon
   law, the linear model fitted jointly to the base and every size, with and without its link to
   log-loss), each fitted to the whole family and scored on held-out sizes; the linear model with
   its link is the entry's ``linear_model`` and the figures' dashed lines.

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
import re
from collections.abc import Sequence

import numpy as np

from analysis import phenomenology as ph
from analysis.decomposition import (
    _decomposition,
    _held_out,
    _observed_t_star,
    _t_star,
    bootstrap,
)
from analysis.families import (
    LOSS_LABEL,
    SIZE_LABEL,
    WINDOW_RULE,
    Family,
    seed_mean,
    sensitivity_points,
    standard_error,
)
from analysis.intervals import json_number, t_stat
from analysis.model_comparison import compare_models

GRID_POINTS = 80
INTERVAL_RULE = (
    "95%: value +- t(dof, 0.975) x bootstrap s.e. (x sqrt(k / (k - 1)) over k seeds; log space for A, C "
    "and T*); dof = seeds - 1 or log residuals - 3; none where every part it rests on is fixed"
)


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


def fit_family(fam: Family, n_boot: int, seed: int, window, models: Sequence) -> dict:
    """Every fit of one family (its window set by ``families.fittable``), as its fits.json entry.

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
    models : sequence of curve models
        The rivals ``analysis.model_comparison`` scores (``decomposition``, ``Shannon law``, and the
        caller's ``theory.linear_model.LinearCurves``); the one named ``LINEAR`` is the linear model
        the entry and the figures show.

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
    T, sizes = fam.T[mask], fam.sizes
    comparison = compare_models(models, T, base_mean[mask], sizes, S_mean[:, mask], t_obs, grid)
    lines = comparison.pop("lines")
    entry["models"] = comparison
    entry["linear_model"] = _linear_entry(comparison, lines, fam, grid, t_obs)
    entry["observed"] = _observed(fam, base_mean, mod_mean, S_all)
    sizes = np.geomspace(fam.sizes[0] / 1.5, fam.sizes[-1] * 1.5, 50)
    entry["curves"] = {  # fitted and predicted lines on a dense grid, for the figures
        "T": grid.tolist(),
        "decomposition": {"base": _numbers(D.base(grid)), "excess": [_numbers(D.excess(grid, m)) for m in fam.sizes]},
        "t_star_line": {"size": sizes.tolist(), "t_star": _numbers(D.t_star(sizes))},
        "linear_model": lines.get(LINEAR, {"base": [], "excess": []}),
        "models": lines,
    }
    return entry


LINEAR = "linear + link"


def _linear_entry(comparison: dict, lines: dict, fam: Family, grid, t_obs) -> dict:
    """The linear model with its link, as the figures and the explorer read it: its parameters, what
    sits at a bound and why, its in-sample T* per size and its held-out scores."""
    row = next((r for r in comparison["models"] if r["model"] == LINEAR), None)
    if row is None or "params" not in row:
        return {"model": LINEAR, "failed": row.get("failed") if row else "not fitted"}
    base = np.asarray(lines[LINEAR]["base"], float)
    excess = np.array([np.asarray(e, float) for e in lines[LINEAR]["excess"]])
    t_pred = _observed_t_star(grid, base[None] + excess)
    held = row["held_out_sizes"]
    return {
        "model": LINEAR,
        "params": row["params"],
        "at_bounds": row["at_bounds"],
        "bound_reasons": row["bound_reasons"],
        "fitted_on": "every parameter on the base curve and every size's excess together, in the window",
        "in_sample": row["in_sample"],
        "per_size": [
            {"size": float(m), "t_star_predicted": json_number(t_pred[i]), "t_star_observed": json_number(t_obs[i])}
            for i, m in enumerate(fam.sizes)
        ],
        "held_out_sizes": held,
        "median_abs_log_t_star_error": held.get("median_abs_log_t_star_error"),
        "log_rmse_excess_predicted": held.get("log_rmse_excess"),
    }


def _numbers(values) -> list:
    return [json_number(v) for v in np.asarray(values, float)]


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
                "linear_alpha_s": lin.get("params", {}).get("alpha_s"),
                "linear_held_out_log_rmse": lin.get("log_rmse_excess_predicted"),
                "best_model": e["models"]["best"],
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


SERIES_SUFFIX = re.compile(r"_seed=\d+$")  # a study's series: SETUP_seed=N


def series_groups(fams: list[Family]) -> dict[str, list[Family]]:
    """Families that are the pre-training series of one setup (setup names ``SIZE_seed=N``, one
    modification, one context, one windowed T grid and one set of sizes), 3 or more per group, by
    group name ``SIZE / modification``."""
    groups: dict[tuple, list[Family]] = {}
    for fam in fams:
        stem = SERIES_SUFFIX.sub("", fam.setup)
        if stem == fam.setup:
            continue
        key = (stem, fam.modification, repr(sorted(fam.context.items())), tuple(fam.T[fam.mask]), tuple(fam.sizes))
        groups.setdefault(key, []).append(fam)
    return {f"{key[0]} / {key[1]}": found for key, found in groups.items() if len(found) >= 3}


def series_comparison(fams: list[Family], models: Sequence) -> dict:
    """``compare_models`` on the mean curves of a group of series (``series_groups``), with every
    series held out in turn; the sizes are not held out here (each series' own entry does that)."""
    first = fams[0]
    T, sizes = first.T[first.mask], first.sizes
    bases = np.array([seed_mean(f.base)[f.mask] for f in fams])
    excesses = np.array([seed_mean(f.excess())[:, f.mask] for f in fams])
    t_observed = np.array([_observed_t_star(f.T, seed_mean(f.modified)) for f in fams])
    grid = np.geomspace(first.T[0], first.T[-1], GRID_POINTS)
    series = {"bases": bases, "excesses": excesses, "t_observed": t_observed}
    mean_t = _observed_t_star(first.T, np.mean([seed_mean(f.modified) for f in fams], axis=0))
    comparison = compare_models(
        models, T, bases.mean(0), sizes, np.nanmean(excesses, 0), mean_t, grid, series=series, hold_sizes=False
    )
    comparison.pop("lines")
    return {"series": [f.name for f in fams], "sizes": sizes.tolist(), **comparison}
