"""``ovt compare``: fit the linear theory to measured curves, predict inflections, overlay (issue 7).

    ovt compare --results DIR [DIR ...] [--out DIR] [--bootstrap 200] [--seed 0]
                [--window TMIN,TMAX] [--rank 32] [--anchors] [--quiet]

Reads any result stores (theory, the CPU reference runs, users' OLMo runs) and, for every *family*
(one run, one modification, one value of every other swept field, at least two sizes m), fits:

1. the power-law decomposition of ``theory.phenomenology``: L(T) = E + A T^-alpha on the base curve,
   S(T, m) = C m^p T^beta on the excess of the modified model over the base, both in log space; the
   closed form T*(m) = (alpha A / (beta C m^p))^(1/(alpha+beta)) for every size;
2. the linear model (power-law spectrum, u0, T_flow = kappa T, floor E) on the base curve alone; its
   reference scale (theory gamma, or fine-tuning time, per unit of m) on the *smallest* size alone;
   every other size's excess and T* are then predictions, with no further fitting;
3. held-out prediction: the excess fitted on all sizes but one (the base fit is shared: base rows are
   never held out) predicts the held-out size's curve and T*.

The loss is L_A (``pretrain_loss``) for theory stores and log perplexity (the mean NLL in nats) for
LLM stores, so the excess of an LLM is log(ppl_modified / ppl_base). The size m is gamma for Gaussian
noise and lr x steps for fine-tuning (fixed-lr rows only: a tuned lr changes m along the curve).
Observed T* is ``theory.measure.inflection`` of the mean modified loss over the whole grid, the
helper that wrote the stores' inflection rows.

Fit window: the power laws hold between the plateau before anything is learned and the floor a
finite-rank linear model reaches, so the fits use the checkpoints from the last one whose base loss
is within 1% of the first checkpoint's through the last one whose base loss is above 1e-3 of it
(LLM curves keep every checkpoint). ``--window`` replaces the rule.

Uncertainty: percentile intervals (2.5%, 97.5%) over ``--bootstrap`` replicates. Where a curve has
several seeds (LLM draws, or theory seeds), a replicate resamples whole seeds with replacement: the
same draw k perturbs every checkpoint and every gamma, so the draw, not the (checkpoint, gamma)
cell, is the independent unit. Where it has one (deterministic theory curves, an LLM's unperturbed
base, single-seed fine-tuning), a replicate adds resampled log-space residuals of the fit (scaled by
sqrt(n / (n - 3)) for the three fitted parameters) to the fitted values: its interval measures how
much the parameters hang on the misfit. With few seeds (an LLM run's 3 draws) percentile intervals
are too narrow; read them as a lower bound on the uncertainty.

Everything stays in the store's own units: T in flow time (theory) or tokens (LLM), and the fitted
A and C with them. fits.json holds, per family, the parameters with intervals, the goodness of fit
(RMSE and R^2 in log space), in-sample, held-out and linear-model T* against the observed T*, and the
measured means and fitted lines the figures draw.

Bad input (exit 2, one line, nothing written): a --results path that does not exist or holds no run,
an unwritable --out, bad option values, and stores with nothing to fit (no loss rows, fewer than 3
checkpoints, no modification rows, one size per family). ``cli.py`` wires this in with
``compare.add_parser(sub, _Parser)`` and ``"compare": compare.run``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.arguments import integer
from experiments.run import UsageError

LOSS_METRIC = {"theory": "pretrain_loss", "llm": "perplexity"}
LOSS_LABEL = {"theory": "pre-training loss L_A", "llm": "log perplexity (mean NLL, nats)"}
SIZE_LABEL = {"gaussian": "gamma", "finetune": "lr x steps"}
# Extra store columns that describe a row, not the curve it belongs to.
BOOKKEEPING = {"mean_nll", "n_tokens", "diverged", "steps_done", "train_steps", "run", "lr_policy"}
PLATEAU, FLOOR = 0.01, 1e-3
WINDOW_RULE = (
    f"from the last checkpoint whose base loss is within {PLATEAU:.0%} of the first checkpoint's "
    f"through the last one whose base loss is above {FLOOR:g} of it"
)
INTERVAL = (2.5, 97.5)
GRID_POINTS = 80
MAX_BOOTSTRAP, MAX_RANK = 100_000, 4096  # each multiplies the fits' time


class CompareFailure(RuntimeError):
    """A failure while fitting (exit 1), after every input was accepted."""


# ---------------------------------------------------------------------------------------- parser


def add_parser(subparsers, parser_class: type[argparse.ArgumentParser] | None = None) -> argparse.ArgumentParser:
    """Add ``compare`` to ``subparsers``; returns it. ``parser_class`` is accepted so that ``cli.py``
    wires every command alike; ``compare`` has no nested subcommands to give it to."""
    del parser_class
    p = subparsers.add_parser("compare", help="fit the linear theory to result stores; predict T*; overlay figures")
    p.add_argument("--results", type=Path, nargs="+", required=True, help="run directories or roots holding them")
    p.add_argument("--out", type=Path, help="output directory for fits.json and figures (default RESULTS/compare)")
    p.add_argument(
        "--bootstrap",
        type=integer("--bootstrap", 0, MAX_BOOTSTRAP),
        default=200,
        help=f"bootstrap replicates (0: none; at most {MAX_BOOTSTRAP:,})",
    )
    p.add_argument("--seed", type=integer("--seed", 0), default=0, help="seed of the bootstrap")
    p.add_argument("--window", type=_window, help="fit window TMIN,TMAX in the store's time unit (default: a rule)")
    p.add_argument(
        "--rank",
        type=integer("--rank", 2, MAX_RANK),
        default=32,
        help=f"modes of the linear model (at most {MAX_RANK})",
    )
    p.add_argument("--anchors", action="store_true", help="also draw OLMo-1B's published anchor points")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    return p


def _window(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--window {text!r} must be TMIN,TMAX (two numbers)") from None
    if not (0 < lo < hi < math.inf):
        raise argparse.ArgumentTypeError(f"--window {text!r} must satisfy 0 < TMIN < TMAX")
    return lo, hi


def run(args: argparse.Namespace) -> int:
    """Run the parsed ``ovt compare``; UsageError means bad input (exit 2)."""
    paths = compare(
        args.results,
        args.out,
        n_boot=args.bootstrap,
        seed=args.seed,
        window=args.window,
        rank=args.rank,
        anchors=args.anchors,
        quiet=args.quiet,
    )
    if not args.quiet:
        for path in paths:
            print(path)
    return 0


# -------------------------------------------------------------------------------------- families


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
        return mod - _seed_mean(base)[None, :, None]


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


def _context_columns(frame: pd.DataFrame) -> list[str]:
    from experiments.store import REQUIRED_COLUMNS

    return [c for c in frame.columns if c not in REQUIRED_COLUMNS and c not in BOOKKEEPING]


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


def families(frame: pd.DataFrame, run_name: str) -> tuple[list[Family], list[str]]:
    """The fittable families of one run's frame, and why the rest cannot be fitted."""
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
    context_cols = _context_columns(frame)
    found, reasons = [], []
    by = ["setup", "modification", "reg"] + context_cols
    for key, group in modified.groupby(by, dropna=False, sort=True):
        setup, modification, reg, *rest = key
        context = dict(zip(["reg"] + context_cols, [reg, *rest]))
        context = {k: v for k, v in context.items() if not (isinstance(v, float) and np.isnan(v))}
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
    """Mask of the checkpoints the fits use (see the module docstring for the rule)."""
    if window is not None:
        return (T >= window[0]) & (T <= window[1])
    plateau = np.abs(base - base[0]) <= PLATEAU * base[0]
    start = T.size - 1 if plateau.all() else int(np.argmin(plateau)) - 1  # the plateau's last checkpoint
    end = int(np.flatnonzero(base > FLOOR * base[0])[-1])
    mask = np.zeros(T.size, bool)
    mask[start : end + 1] = True
    return mask


# ------------------------------------------------------------------------------------------ fits


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
    """``theory.measure.inflection`` on the last axis of ``curves``, compiled once per shape."""
    return np.asarray(_jitted_inflection()(np.asarray(T), np.asarray(curves)), float)


@functools.cache
def _jitted_inflection():
    import jax

    from theory.measure import inflection

    return jax.jit(inflection)


def _decomposition(base_params, sens_params):
    from theory.phenomenology import Decomposition

    return Decomposition(*base_params, *sens_params)


def _sensitivity_points(fam: Family, S: np.ndarray, mask: np.ndarray, leave_out: int | None = None):
    """(T, m, S) of the windowed mean excess, without size index ``leave_out``."""
    keep = [i for i in range(fam.sizes.size) if i != leave_out]
    T = np.broadcast_to(fam.T[mask], (len(keep), mask.sum()))
    m = np.broadcast_to(fam.sizes[keep, None], T.shape)
    return T.ravel(), m.ravel(), S[keep][:, mask].ravel()


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
    base_mean = _seed_mean(fam.base)
    S_mean = _seed_mean(fam.excess())
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
            base = _seed_mean(fam.base[:, base_seeds])
        else:
            base = np.exp(log_base_fit + rng.choice(base_resid, fam.T.size))
        if seeds is not None:
            S = _seed_mean(fam.excess(seeds, base_seeds))
            modified = _seed_mean(fam.modified[:, :, seeds])
        else:
            S = np.where(used, np.exp(log_S_fit + rng.choice(S_resid, log_S_fit.shape)), np.nan)
            modified = None
        yield Replicate(base, S, modified)


def _stat(value, samples) -> dict:
    return {"value": _num(value), "interval": _interval(samples)}


def fit_family(fam: Family, n_boot: int, seed: int, window, rank: int) -> dict:
    """Every fit of one family (its window set by ``plan``), as its fits.json entry."""
    from theory import phenomenology as ph

    mask = fam.mask
    n_used = int(mask.sum())
    base_mean = _seed_mean(fam.base)
    S_all = fam.excess()
    S_mean = _seed_mean(S_all)
    mod_mean = _seed_mean(fam.modified)
    base_fit, base_good = ph.fit_base(fam.T[mask], base_mean[mask])
    sens_fit, sens_good = ph.fit_sensitivity(*_sensitivity_points(fam, S_mean, mask))
    D = _decomposition(base_fit, sens_fit)
    folds = range(fam.sizes.size) if fam.sizes.size >= 3 else ()  # p needs two sizes besides the held-out one

    def held_out_fit(S, h):
        """(C, p, beta) without size h; None where the other sizes' excess is not positive at two sizes."""
        try:
            return ph.fit_sensitivity(*_sensitivity_points(fam, S, mask, h))[0]
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
            s, _ = ph.fit_sensitivity(*_sensitivity_points(fam, rep.excess, mask))
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
    entry["linear_model"], linear_lines = _linear_model(fam, mask, base_mean, S_mean, t_obs, rank, grid)
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
    from theory.phenomenology import goodness

    pooled = goodness(np.concatenate(excess_obs), np.concatenate(excess_pred))
    return {
        "per_size": rows,
        "n_compared": len(log_err),
        "in_range_disagreements": disagree,
        "median_abs_log_t_star_error": _num(np.median(log_err)) if log_err else None,
        "log_rmse_excess": pooled.rmse_log,
        "r2_log_excess": _num(pooled.r2_log),
        "log_rmse_loss": _num(np.sqrt(np.mean(np.concatenate(loss_res) ** 2))),
    }


def _linear_model(fam, mask, base_mean, S_mean, t_obs, rank, grid):
    """Fit the linear model on the base curve, its reference on the smallest size; predict the rest.
    Returns its fits.json entry and its lines on ``grid``."""
    from theory import phenomenology as ph

    model, good = ph.fit_linear_model(fam.T[mask], base_mean[mask], rank)
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


def _seed_mean(values: np.ndarray) -> np.ndarray:
    """Mean over the last axis (seeds) of the finite entries; NaN where there is none (a diverged run)."""
    finite = np.isfinite(values)
    total = np.where(finite, values, 0.0).sum(axis=-1)
    n = finite.sum(axis=-1)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def _standard_error(values: np.ndarray) -> np.ndarray:
    """Standard error over the last axis (finite entries only); NaN where fewer than 2."""
    finite = np.isfinite(values)
    n = finite.sum(axis=-1)
    x = np.where(finite, values, 0.0)
    mean = x.sum(axis=-1) / np.maximum(n, 1)
    var = np.sum(np.where(finite, (x - mean[..., None]) ** 2, 0.0), axis=-1) / np.maximum(n - 1, 1)
    return np.where(n > 1, np.sqrt(var / np.maximum(n, 1)), np.nan)


def _observed(fam, base_mean, mod_mean, S_all) -> dict:
    """Means and standard errors over seeds, for the figures (null s.e. with one seed)."""
    return {
        "T": fam.T.tolist(),
        "base": {"mean": _numbers(base_mean), "se": _numbers(_standard_error(fam.base))},
        "modified": [
            {"size": float(m), "mean": _numbers(mod_mean[i]), "se": _numbers(_standard_error(fam.modified[i]))}
            for i, m in enumerate(fam.sizes)
        ],
        "excess": [
            {"size": float(m), "mean": _numbers(_seed_mean(S_all[i])), "se": _numbers(_standard_error(S_all[i]))}
            for i, m in enumerate(fam.sizes)
        ],
    }


# ------------------------------------------------------------------------------------- top level


def _runs(results: list[Path]) -> list[Path]:
    from experiments import store

    runs = []
    for path in results:
        if not Path(path).exists():
            raise UsageError(f"--results {path} does not exist")
        runs += store.find_runs(path)
    if not runs:
        raise UsageError(
            f"--results {' '.join(map(str, results))} holds no run directory (manifest.json + metrics.parquet)"
        )
    return list(dict.fromkeys(runs))


def _fittable(fam: Family, window) -> str | None:
    """Set the family's fit window; None when it can be fitted, else why not."""
    from theory.phenomenology import fit_sensitivity

    fam.mask = fit_window(fam.T, _seed_mean(fam.base), window)
    if fam.mask.sum() < 3:
        return f"{fam.name}: the fit window keeps {int(fam.mask.sum())} checkpoint(s); a fit needs at least 3"
    try:
        fit_sensitivity(*_sensitivity_points(fam, _seed_mean(fam.excess()), fam.mask))
    except ValueError:
        return f"{fam.name}: the excess over the base is positive at fewer than 2 sizes and 2 checkpoints in the window"
    return None


def plan(results: list[Path], out: Path | None, window=None) -> tuple[list[Family], list[str], Path]:
    """Every input checked, every family built and its window set; nothing written (UsageError on bad input)."""
    from experiments import store
    from experiments.run import check_writable

    runs = _runs(results)
    out = Path(out) if out is not None else Path(results[0]) / "compare"
    check_writable(out)
    found, skipped = [], []
    try:
        names = store.run_names(runs)
    except ValueError as error:
        raise UsageError(f"--results: {error}") from None
    for run_dir, name in zip(runs, names):
        try:
            frame = store.load(run_dir)
        except ValueError as error:
            raise UsageError(f"--results {run_dir}: {error}") from None
        these, reasons = families(frame, name)
        for fam in these:
            reason = _fittable(fam, window)
            (skipped.append(reason) if reason else found.append(fam))
        skipped += reasons
    if not found:
        more = f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""
        raise UsageError(f"--results {' '.join(map(str, results))}: nothing to compare: {skipped[0]}{more}")
    return found, skipped, out


def compare(
    results: list[Path],
    out: Path | None = None,
    *,
    n_boot: int = 200,
    seed: int = 0,
    window: tuple[float, float] | None = None,
    rank: int = 32,
    anchors: bool = False,
    quiet: bool = False,
) -> list[Path]:
    """Fit every family of the stores under ``results``; write OUT/fits.json and the overlay figures.
    Returns the paths written."""
    from tqdm import tqdm

    from experiments import store
    from experiments.run import git_commit, now, versions
    from paper_figures import compare as figures

    found, skipped, out = plan(results, out, window)
    for reason in skipped:  # said where it is seen, not only inside fits.json
        print(f"ovt compare: skipped {reason}", file=sys.stderr)
    entries = []
    for fam in tqdm(found, desc="compare", unit="family", disable=quiet, file=sys.stderr):
        try:
            entries.append(fit_family(fam, n_boot, seed, window, rank))
        except (ValueError, FloatingPointError, np.linalg.LinAlgError) as error:
            raise CompareFailure(f"{fam.name}: {error}") from error
    fits = {
        "command": "ovt compare",
        "results": [str(r) for r in results],
        "created": now(),
        "settings": {
            "bootstrap": n_boot,
            "seed": seed,
            "window": list(window) if window else WINDOW_RULE,
            "rank": rank,
        },
        "loss": {
            "theory": "L_A (pretrain_loss)",
            "llm": "log perplexity = mean NLL (nats); excess = log(ppl_mod / ppl_base)",
        },
        "versions": versions(),
        "git_commit": git_commit(),
        "families": entries,
        "skipped": skipped,
        "summary": summary_rows(entries),
    }
    store.write_json(out / "fits.json", fits)
    paths = [out / "fits.json"]
    try:
        for entry in entries:
            paths += figures.draw(entry, out, _file_name(entry["name"]))
        if anchors:
            paths += figures.draw_anchors(entries, out)
    except ValueError as error:  # the inputs were accepted: a figure that fails is a failure (exit 1)
        raise CompareFailure(f"drawing the figures into {out}: {error}") from error
    if not quiet:
        print(summary(fits["summary"]), file=sys.stderr)
    return paths


def _file_name(name: str) -> str:
    """``compare_RUN_MODIFICATION[_FIELD-VALUE...]``: the family name with one safe separator."""
    words = name.replace(" / ", " ").replace(", ", " ").replace("=", "-").split()
    return "_".join(["compare", *("".join(c if c.isalnum() or c in "-." else "_" for c in w) for w in words)])


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


def summary(rows: list[dict]) -> str:
    frame = pd.DataFrame(rows).set_index("family")
    return frame.to_string(float_format=lambda v: f"{v:.3g}")
