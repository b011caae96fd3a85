"""Verdicts on the paper's LLM claims (Springer et al. 2025) from long-form LLM tables.

Data. ``perturb`` (``ovt llm perturb``) and ``finetune`` (``ovt llm finetune``) rows, each possibly over
several pre-training series (column ``series_column``; one series where a table lacks it). Rows with
checkpoint "inflection" (derived summaries) are left out; metric "perplexity" is used as the log
perplexity (mean NLL) L = log(value), a non-finite value (diverged) left out. Draws are ``seed``: the
noise draw k of a perturbation table (paired: the same noise at every checkpoint and gamma), the
fine-tuning seed of a fine-tuning table. T is ``pretrain_time`` (tokens), a grid the series share.
L_s(T): series s's mean over draws; Delta_s(T) = mean_k [L_{s,k}(T) - L_{s,0}(T)] (L_0 unperturbed).
Whether a gamma / lr has an interior T* is judged on the pooled curve (mean over series) by
``analysis.inflection`` against its standard error (over series, or draws with one series).

Intervals (95%). >= 2 series: the statistic per series, value = their mean, interval = mean +-
t(n-1, 0.975) sd / sqrt(n) (a NaN statistic left out); an index a statistic is taken at (a minimum)
is chosen on the mean of the other series, so a series' own noise does not choose it. One series:
``N_BOOT`` bootstrap replicates over its draws (the same draw indices at every checkpoint and curve;
indices chosen again in each), interval by ``analysis.intervals.t_stat`` (value +- t(K-1, 0.975)
sqrt(K/(K-1)) sd of the replicates), conditional on the series' checkpoints. One series and one
draw: no interval. (h), a ratio, in log space.

Verdict. Each statistic has a region R (the claim's side). PASS: the interval lies inside R; FAIL:
outside R; INCONCLUSIVE: across an edge of R, no interval, or missing data (rule "no data: ...").
Parts (gammas, lrs, sides) combine: "every" is FAIL if any part FAILs, else INCONCLUSIVE if any is,
else PASS; "some" is PASS if any PASSes, else INCONCLUSIVE if any is, else FAIL. The claim reports
the deciding part (``at``): for "every" the weakest of its verdict class, for "some" the strongest
(by how far the interval lies inside R).

Statistics (checkpoints i = 0 .. n-1):
(a) rho = Spearman(T, Delta(T)) at each gamma; R: > 0; every gamma.
(b) at each gamma, i* = argmin of L over 1..n-2: fall = L(T_0) - L(T_i*), rise = L(T_{n-1}) - L(T_i*);
    R: > 0; every side at a gamma, some gamma.
(c) log T*(gamma_{j+1}) - log T*(gamma_j), consecutive gammas with an interior pooled T*, a series'
    T* its argmin refined by a parabola in log T (``vertex_minimum``); R: < 0; every pair.
(d) (b) for the fixed-lr (lr_policy "fixed") fine-tuned curves, some lr.  (e) (c) over those lrs.
(f) rise = L(T_{n-1}) - L(T_i), i = argmin over 0..n-2 (< 0 for a curve still falling): the tuned
    curve's rise (> 0: not removed) and the mean fixed-lr rise minus it (> 0: reduced); every part.
(g) log T*(lr, reg) - log T*(lr, reg=0) for each (lr, reg > 0) whose reg = 0 curve has an interior
    pooled T*; R: > 0; every pair.  (d)-(f) use reg = 0 (else the least reg); all the modal steps.
(h) ratio = sum_{g,T} Delta_g(T) / sum_{g,T} (g^2/2) W(T) over the ``H_GAMMAS`` smallest gammas and
    the checkpoints with a trace W = sum_p sigma_p^2 d^2 NLL / d theta_p^2 (noise-weighted Hessian
    trace: E Delta = gamma^2 W / 2 to second order), W held fixed; R: ``HESSIAN_BAND``.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import pandas as pd
from scipy import stats

from analysis.inflection import inflection, inflection_kind, vertex_minimum
from analysis.intervals import LEVEL, Draws, t_stat

N_BOOT = 1000  # bootstrap replicates over the draws of a single series (seeded: deterministic)
ALPHA = (1 - LEVEL) / 2  # one side of a 95% interval: the level of each one-sided test
EXACT_RANKS = 9  # Spearman's null distribution enumerated up to this many checkpoints (9! permutations)
N_NULL = 200_000  # seeded random permutations beyond it
H_GAMMAS = 1  # claim (h) uses this many of the smallest gammas
HESSIAN_BAND = (0.8, 1.25)  # claim (h)'s region for measured / predicted
ABOVE, BELOW = (0.0, math.inf), (-math.inf, 0.0)

STATEMENTS = {
    "a": "Sensitivity to Gaussian parameter noise grows monotonically with pre-training tokens",
    "a'": "Sensitivity to fine-tuning grows with pre-training tokens (forgetting F(T) rises with T)",
    "b": "The perturbed pre-training loss is U-shaped in tokens (an interior T*) at some gamma",
    "c": "The perturbed-loss T* is earlier for larger gamma",
    "d": "Fine-tuning at a fixed lr gives a U-shaped pre-training loss",
    "e": "The fine-tuning T* is earlier for larger lr",
    "f": "Tuning the lr per checkpoint reduces but does not remove the degradation",
    "g": "An L2 pull toward the checkpoint delays T*",
    "h": "The Gaussian excess NLL is (gamma^2/2) x the noise-weighted Hessian trace",
}
_U = "fall L(T_first) - L(T_i*) and rise L(T_last) - L(T_i*), i* = interior argmin, L = log ppl"
STATISTICS = {
    "a": "Spearman rho(T, Delta(T)), Delta = mean over draws of log ppl perturbed - log ppl unperturbed",
    "a'": "Spearman rho(T, F(T)), F = mean over fine-tuning orders of log ppl after fine-tuning - log ppl before",
    "b": f"{_U} perturbed",
    "c": "log T*(next larger gamma) - log T*(gamma)",
    "d": f"{_U} after fine-tuning",
    "e": "log T*(next larger lr) - log T*(lr)",
    "f": "tuned rise, and mean fixed-lr rise - tuned rise; rise = L(T_last) - L(T_i), i = argmin before the last",
    "g": "log T*(lr, reg) - log T*(lr, reg=0)",
    "h": "measured / predicted Delta NLL, predicted = (gamma^2/2) x noise-weighted Hessian trace",
}
_EVERY = "every part must PASS (FAIL if any part FAILs, else INCONCLUSIVE)"
_SOME = (
    "PASS if some {0} PASSes, FAIL if every {0} FAILs, else INCONCLUSIVE; Bonferroni over the k {0}s: each "
    "interval at level 1 - 0.05/k"
)
_SIDES = "a {0} PASSes if the intervals of its fall and its rise both lie above 0, FAILs if either lies below 0"
_RANKS = (
    "at each {0}, the mean over series of Spearman's rho tested against its exact null distribution (every "
    "ordering of the checkpoints equally likely, independent series): PASS if P(mean rho >= observed) < "
    "0.025, FAIL if P(mean rho <= observed) < 0.025, else INCONCLUSIVE; {1}"
)
RULES = {
    "a": _RANKS.format("gamma", _EVERY),
    "a'": _RANKS.format("fixed lr", _EVERY),
    "b": f"{_SIDES.format('gamma')}; {_SOME.format('gamma')}",
    "c": "for consecutive gammas with an interior pooled T*, PASS if the 95% interval of the log T* step lies "
    f"below 0, FAIL if above; {_EVERY}",
    "d": f"{_SIDES.format('fixed lr')}; {_SOME.format('fixed lr')}",
    "e": "for consecutive fixed lrs with an interior pooled T*, PASS if the 95% interval of the log T* step lies "
    f"below 0, FAIL if above; {_EVERY}",
    "f": "the lr tuned per checkpoint and batch order for the lowest loss on held-out examples of the "
    "fine-tuning task; runs at or above the uniform guess (log V) left out; PASS if the 95% intervals of the "
    "tuned rise (not removed) and of the reduction (reduced) both lie above 0, FAIL if either lies below 0, "
    "else INCONCLUSIVE",
    "g": "for each (lr, reg > 0) whose reg = 0 curve has an interior pooled T*, PASS if the 95% interval of the "
    f"log T* shift lies above 0, FAIL if below; {_EVERY}",
    "h": f"PASS if the 95% interval of the ratio lies inside ({HESSIAN_BAND[0]}, {HESSIAN_BAND[1]}), FAIL if it "
    "lies outside that band, else INCONCLUSIVE",
}


def verdict(interval, region) -> str:
    """PASS / FAIL / INCONCLUSIVE of an interval [lo, hi] (None or a None end: unbounded) for the
    open region (a, b).

    Parameters
    ----------
    interval : sequence [lo, hi] or None
        The statistic's 95% interval; None, or a None end, for an unbounded side.
    region : tuple (a, b)
        The open region a claim asks the statistic to lie in (``ABOVE``, ``BELOW`` or a band); None
        for an unbounded end.

    Returns
    -------
    str
        "PASS" when the interval lies inside the region, "FAIL" when it lies outside, else
        "INCONCLUSIVE".

    Examples
    --------
    >>> verdict([0.1, 0.5], ABOVE), verdict([-0.4, -0.1], ABOVE), verdict([-0.1, 0.5], ABOVE), verdict(None, ABOVE)
    ('PASS', 'FAIL', 'INCONCLUSIVE', 'INCONCLUSIVE')
    """
    if interval is None:
        return "INCONCLUSIVE"
    lo = -math.inf if interval[0] is None else interval[0]
    hi = math.inf if interval[1] is None else interval[1]
    if region[0] < lo and hi < region[1]:
        return "PASS"
    return "FAIL" if hi < region[0] or lo > region[1] else "INCONCLUSIVE"


def _mean(a, axis):
    """NaN-ignoring mean, NaN (no warning) where a slice has no finite value."""
    n = np.isfinite(a).sum(axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.nansum(a, axis) / np.maximum(n, 1), np.nan)


def _sem(a, axis):
    """NaN-ignoring standard error of the mean, NaN where fewer than two values."""
    n = np.isfinite(a).sum(axis)
    d = np.where(np.isfinite(a), a - np.expand_dims(_mean(a, axis), axis), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n >= 2, np.sqrt((d**2).sum(axis) / np.maximum(n - 1, 1) / np.maximum(n, 1)), np.nan)


class _Grid:
    """The series, draws and times of a table's rows; ``cube(mask)`` is L[series, draw, time] (NaN: none)."""

    def __init__(self, rows: pd.DataFrame, series_column: str):
        series = rows[series_column] if series_column in rows else pd.Series(0, index=rows.index)
        self.s, self.series = pd.factorize(series, sort=True)
        self.k, self.draws = pd.factorize(rows["seed"], sort=True)
        self.t, times = pd.factorize(rows["pretrain_time"], sort=True)
        self.T = np.asarray(times, float)
        with np.errstate(divide="ignore", invalid="ignore"):
            values = np.log(rows["value"].to_numpy(float))
        self.values = np.where(np.isfinite(values), values, np.nan)
        self.time_of = dict(zip(rows["checkpoint"], rows["pretrain_time"]))

    def cube(self, mask) -> np.ndarray:
        mask = np.asarray(mask, bool) & (self.s >= 0) & (self.k >= 0) & (self.t >= 0)  # -1: a NaN key
        cube = np.full((len(self.series), len(self.draws), self.T.size), np.nan)
        cube[self.s[mask], self.k[mask], self.t[mask]] = self.values[mask]
        return cube


def _others(curve):
    """Each series' leave-one-out mean curve: the mean of the other series ([series, time])."""
    finite = np.isfinite(curve)
    total, count = np.nansum(curve, 0), finite.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count - finite > 0, (total - np.where(finite, curve, 0.0)) / (count - finite), np.nan)


def _estimate(parts, stat, select=None, log=False, level=LEVEL) -> dict:
    """value, 95% interval, method, n_series, n_draws of ``stat(key, *curves)`` (vectorised over
    leading axes) of the curves of ``parts`` (each [series, draw, time]), as the module docstring says.
    ``select(*curves)`` gives ``key`` (the indices the statistic is taken at) from other data than the
    statistic's own: each series' from the other series' mean; with one series, each bootstrap
    replicate's from itself (its selection varies with the replicates)."""
    curves = [_mean(p, 1) for p in parts]
    n_draws = min(int(np.isfinite(p).any(axis=2).sum(axis=1).min()) for p in parts)
    if curves[0].shape[0] >= 2:
        key = select(*[_others(c) for c in curves]) if select else None
        with np.errstate(divide="ignore", invalid="ignore"):
            per = np.asarray(stat(key, *curves), float)
            v = np.log(per) if log else per
        v = v[np.isfinite(v)]
        entry = {"n_series": int(v.size), "n_draws": n_draws}
        if v.size < 2:
            return entry | {"value": math.nan, "interval": None, "method": f"none ({v.size} of {per.size} series)"}
        mean, half = float(v.mean()), float(stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / v.size**0.5)
        lo, hi = mean - half, mean + half
        if log:
            mean, lo, hi = math.exp(mean), math.exp(lo), math.exp(min(hi, 700.0))
        left = f"; {per.size - v.size} series without a finite statistic left out" if v.size < per.size else ""
        chosen = "; indices chosen on the other series' mean" if select else ""
        method = (
            f"Student-t over {v.size} pre-training series (dof {v.size - 1}{', log space' if log else ''}"
            f"{_level(level)}), each series' statistic from its mean over {n_draws} draws{chosen}{left}"
        )
        return entry | {"value": mean, "interval": [lo, hi], "method": method}
    with np.errstate(divide="ignore", invalid="ignore"):
        value = float(np.asarray(stat(select(*curves) if select else None, *curves), float).reshape(-1)[0])
    entry = {"n_series": 1, "n_draws": n_draws, "value": value}
    if n_draws < 2:
        return entry | {"interval": None, "method": "none (one series, one draw: nothing varies)"}
    k = parts[0].shape[1]
    index = np.random.default_rng(0).integers(0, k, (N_BOOT, k))
    resampled = [_mean(p[0][index], 1) for p in parts]
    with np.errstate(invalid="ignore", divide="ignore"):
        replicates = np.asarray(stat(select(*resampled) if select else None, *resampled), float)
    s = t_stat(value, replicates, [Draws("draws", "seeds", n_draws)], log=log, level=level)
    method = (
        f"one pre-training series: paired bootstrap over its {n_draws} draws (same draws at every checkpoint "
        f"and curve, {N_BOOT} replicates), Student-t dof {n_draws - 1}{_level(level)} via analysis.intervals.t_stat "
        f"({s['method']}); conditional on the series' own checkpoints"
    )
    return entry | {"interval": s["interval"], "method": method}


def _pooled(T, part) -> tuple[np.ndarray, str, float]:
    """(curve, kind, T*) of the pooled curve: the mean over series of the means over draws, judged by
    ``analysis.inflection`` against its standard error (over series; over draws with one series)."""
    curves = _mean(part, 1)
    curve, spread = _mean(curves, 0), _sem(curves, 0) if curves.shape[0] >= 2 else _sem(part[0], 0)
    return curve, str(inflection_kind(T, curve, spread=spread)), float(inflection(T, curve, spread=spread))


def _level(level: float) -> str:
    return "" if level == LEVEL else f", level {level:.4g}"


def _part(label, parts, stat, region, select=None, log=False, level=LEVEL, **extra) -> dict:
    """``_estimate`` with its verdict for ``region`` and its margin: how far inside the region the
    interval lies (negative: across or outside an edge; -inf: no interval)."""
    entry = _estimate(parts, stat, select, log, level) | {"level": level}
    lo, hi = entry["interval"] or (None, None)
    lo, hi = -math.inf if lo is None else lo, math.inf if hi is None else hi
    edges = [lo - region[0]] * math.isfinite(region[0]) + [region[1] - hi] * math.isfinite(region[1])
    return {"at": label, **entry, "verdict": verdict(entry["interval"], region), "margin": min(edges), **extra}


def _decide(parts: list[dict], mode: str) -> dict:
    """The deciding part of ``parts`` (module docstring): "every" the weakest of the first verdict class
    in FAIL, INCONCLUSIVE, PASS, "some" the strongest in PASS, INCONCLUSIVE, FAIL; with ``parts``."""
    order = ("FAIL", "INCONCLUSIVE", "PASS") if mode == "every" else ("PASS", "INCONCLUSIVE", "FAIL")
    found = next(v for v in order if any(p["verdict"] == v for p in parts))
    pool = [p for p in parts if p["verdict"] == found]
    return (min if mode == "every" else max)(pool, key=lambda p: p["margin"]) | {"parts": parts}


def _claim(cid: str, entry: dict) -> dict:
    """The claim's dict: its texts, then the deciding part's entry (value, interval, ...) and its parts."""
    head = {"claim": cid, "statement": STATEMENTS[cid], "statistic": STATISTICS[cid]}
    return head | {"parts": [entry]} | entry | {"rule": RULES[cid]}


def _no_data(cid: str, reason: str) -> dict:
    entry = {"value": math.nan, "interval": None, "method": "none", "n_series": 0, "n_draws": 0, "at": ""}
    return _claim(cid, entry | {"verdict": "INCONCLUSIVE", "parts": []}) | {"rule": f"no data: {reason}"}


def _combine(cid: str, parts: list[dict], mode: str, reason: str) -> dict:
    return _claim(cid, _decide(parts, mode)) if parts else _no_data(cid, reason)


@functools.cache
def _null_d(n: int) -> tuple[np.ndarray, str]:
    """(P(D = 2j) for j = 0 .. n(n^2 - 1)/6, how it was found): D = sum_i (i - pi(i))^2 over the
    orderings pi of n checkpoints, all equally likely (Spearman's rho = 1 - 6 D / (n (n^2 - 1)); D is
    always even). Exact up to ``EXACT_RANKS`` checkpoints, else from ``N_NULL`` seeded permutations."""
    i = np.arange(n)
    if n <= EXACT_RANKS:
        orders, how = np.array(list(itertools.permutations(range(n))), dtype=np.int16), f"exact ({n}! orderings)"
    else:
        orders = np.argsort(np.random.default_rng(0).random((N_NULL, n)), axis=1)
        how = f"from {N_NULL:,} seeded random orderings"
    half = ((orders - i) ** 2).sum(1) // 2
    return np.bincount(half, minlength=n * (n * n - 1) // 6 + 1) / len(orders), how


def rank_test(T, curves) -> dict:
    """Spearman's rho of each curve of ``curves`` [series, time] against T, and the exact probability
    of their mean under the null (every ordering of each series' values equally likely, series
    independent): ``p_up`` = P(mean rho >= observed), ``p_down`` = P(mean rho <= observed). Series
    with a missing point are left out. The null of the mean is the S-fold convolution of D's.

    Parameters
    ----------
    T : array, shape (n_t,)
        The pre-training grid (> 0, ascending): flow time for theory curves, tokens for LLM curves.
    curves : array, shape (n_series, n_t)
        One curve per pre-training series (e.g. the excess under noise, in nats).

    Returns
    -------
    dict
        ``value`` (the mean rho over series), ``p_up``, ``p_down``, the per-series rhos and the number
        of series used.

    Examples
    --------
    >>> r = rank_test([1, 2, 4, 8], [[1.0, 2.0, 3.0, 4.0]] * 3)  # rho = 1 in 3 of 3 series
    >>> r["value"], round(r["p_up"] * 24**3, 12), round(r["p_down"], 12)
    (1.0, 1.0, 1.0)
    """
    T, curves = np.asarray(T, float), np.atleast_2d(np.asarray(curves, float))
    n = T.size
    kept = curves[np.isfinite(curves).all(1)]
    if len(kept) == 0 or n < 3:
        return {"value": math.nan, "p_up": math.nan, "p_down": math.nan, "n_series": 0, "how": "none", "rho": []}
    d = ((stats.rankdata(kept, axis=1) - stats.rankdata(T)) ** 2).sum(1)  # average ranks for ties
    rho = 1 - 6 * d / (n * (n * n - 1))
    single, how = _null_d(n)
    total = np.array([1.0])
    for _ in range(len(kept)):
        total = np.convolve(total, single)
    observed = d.sum() / 2
    support = np.arange(total.size)
    p_up = float(total[support <= observed + 1e-9].sum())
    p_down = float(total[support >= observed - 1e-9].sum())
    return {
        "value": float(rho.mean()),
        "p_up": min(p_up, 1.0),
        "p_down": min(p_down, 1.0),
        "n_series": len(kept),
        "how": how,
        "rho": rho.tolist(),
    }


def _rank_part(label: str, T, cube) -> dict:
    """A rank part of (a) / (a'): ``rank_test`` of each series' curve (its mean over draws), PASS
    where rho > 0 is significant at ``ALPHA``, FAIL where rho < 0 is; margin: log10(ALPHA / p_up)."""
    n_draws = int(np.isfinite(cube).any(axis=2).sum(axis=1).min())
    r = rank_test(T, _mean(cube, 1))
    if r["n_series"] == 0:
        verdict_, margin = "INCONCLUSIVE", -math.inf
    else:
        verdict_ = "PASS" if r["p_up"] < ALPHA else "FAIL" if r["p_down"] < ALPHA else "INCONCLUSIVE"
        margin = math.log10(ALPHA / max(r["p_up"], 1e-300))
    method = (
        f"Spearman's rho per series (of its mean over {n_draws} draws), the mean over {r['n_series']} series "
        f"against its null distribution, {r['how']}"
    )
    return {
        "at": label,
        "value": r["value"],
        "interval": None,
        "p_value": r["p_up"],
        "p_down": r["p_down"],
        "per_series": r["rho"],
        "method": method,
        "n_series": r["n_series"],
        "n_draws": n_draws,
        "verdict": verdict_,
        "margin": margin,
    }


def _log_t_star_step(T):
    def step(_, first, second):
        return np.log(vertex_minimum(T, second, np.float64)) - np.log(vertex_minimum(T, first, np.float64))

    return step


def _at(y, i):
    """y[..., i] with one index per curve of the batch."""
    return np.take_along_axis(y, np.asarray(i)[..., None], axis=-1)[..., 0]


def _argmin(y, start, stop):
    """The argmin of each curve over the points start..stop-1 (non-finite points never win)."""
    window = y[..., start:stop]
    return start + np.argmin(np.where(np.isfinite(window), window, np.inf), axis=-1)


def _interior_min(y):
    return _argmin(y, 1, y.shape[-1] - 1)


def _u_claim(cid, T, cubes, name) -> dict:
    """(b), (d): the fall to and the rise from the interior minimum of each curve of ``cubes``
    ({size: cube}): "every" side at a size, "some" size."""
    fall = lambda i, y: y[..., 0] - _at(y, i)  # noqa: E731
    rise = lambda i, y: y[..., -1] - _at(y, i)  # noqa: E731
    sizes, level = [], 1 - (1 - LEVEL) / max(len(cubes), 1)  # Bonferroni over the sizes of a "some" claim
    for size, cube in cubes.items():
        curve, kind, t_star = _pooled(T, cube)
        t_min = float(T[_interior_min(curve)])
        extra = dict(t_min=t_min, t_star=t_star, kind=kind, level=level)
        sides = [
            _part(f"{name}={size:g}, {side}", [cube], stat, ABOVE, _interior_min, **extra)
            for side, stat in (("fall", fall), ("rise", rise))
        ]
        sizes.append(_decide(sides, "every"))
    return _combine(cid, sizes, "some", f"no {name} curve")


def _order_claim(cid, T, cubes, name) -> dict:
    """(c), (e): the log T* step between consecutive sizes with an interior pooled T*; "every"."""
    kinds = {size: _pooled(T, cube)[1:] for size, cube in cubes.items()}
    interior = [size for size in sorted(cubes) if kinds[size][0] == "interior"]
    step = _log_t_star_step(T)
    parts = [
        _part(f"{name}={a:g}->{b:g}", [cubes[a], cubes[b]], step, BELOW, t_star=[kinds[a][1], kinds[b][1]])
        for a, b in zip(interior, interior[1:])
    ]
    found = ", ".join(f"{name}={s:g}: {k}" for s, (k, _) in kinds.items()) or "no curves"
    return _combine(cid, parts, "every", f"fewer than two {name}s with an interior pooled T* ({found})")


def _measured(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[(frame["checkpoint"] != "inflection") & (frame["metric"] == "perplexity")].reset_index(drop=True)


def _perturb_claims(perturb, traces, series_column) -> list[dict]:
    rows = _measured(perturb)
    grid = _Grid(rows, series_column)
    mod, gamma = rows["modification"].to_numpy(), rows["gamma"].to_numpy(float)
    base = _mean(grid.cube(mod == "none"), 1)[:, None, :]
    gammas = sorted({float(g) for g in gamma[(mod == "gaussian") & np.isfinite(gamma)]})
    if grid.T.size < 3 or not gammas or not np.isfinite(base).any():
        reason = "the perturbation table needs >= 3 checkpoints, an unperturbed curve and a gamma"
        return [_no_data(c, reason) for c in "abch"]
    cubes = {g: grid.cube((mod == "gaussian") & (gamma == g)) for g in gammas}
    a = [_rank_part(f"gamma={g:g}", grid.T, cubes[g] - base) for g in gammas]
    return [
        _combine("a", a, "every", "no gamma"),
        _u_claim("b", grid.T, cubes, "gamma"),
        _order_claim("c", grid.T, cubes, "gamma"),
        *_hessian_claims(grid, base, cubes, traces, series_column),
    ]


def _hessian_claims(grid, base, cubes, traces, series_column) -> list[dict]:
    """(h) at the ``H_GAMMAS`` smallest gammas, with the band of gammas where the quadratic identity
    holds, then one row ``h:gamma=G`` per gamma of the table (the same rule at that gamma alone)."""
    if traces is None or len(traces) == 0:
        return [_no_data("h", "no Hessian-trace table")]
    column = "trace" if "trace" in traces else "value"
    times = traces["pretrain_time"] if "pretrain_time" in traces else traces["checkpoint"].map(grid.time_of)
    t = pd.Index(grid.T).get_indexer(times.astype(float))
    W = np.full((len(grid.series), grid.T.size), np.nan)
    if series_column in traces:  # one trace per series and checkpoint; else the same for every series
        s = pd.Index(grid.series).get_indexer(traces[series_column])
        W[s[(s >= 0) & (t >= 0)], t[(s >= 0) & (t >= 0)]] = traces[column].to_numpy(float)[(s >= 0) & (t >= 0)]
    else:
        W[:, t[t >= 0]] = traces[column].to_numpy(float)[t >= 0]
    known = np.isfinite(W)
    if not known.any():
        return [_no_data("h", "no trace at a checkpoint of the perturbation table")]

    def part(gammas):
        def ratio(_, *deltas):
            measured = sum(np.where(known, d, 0.0).sum(-1) for d in deltas)
            predicted = sum(g**2 / 2 * np.where(known, W, 0.0).sum(-1) for g in gammas)
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(predicted > 0, measured / predicted, np.nan)

        label = "gamma=" + ",".join(f"{g:g}" for g in gammas)
        entry = _part(label, [cubes[g] - base for g in gammas], ratio, HESSIAN_BAND, log=True)
        entry["method"] += "; the traces held fixed"
        return entry

    rows = [_claim("h", part([g])) | {"claim": f"h:gamma={g:g}", "gamma": g} for g in sorted(cubes)]
    head = _claim("h", part(sorted(cubes)[:H_GAMMAS]))
    holds = [r["gamma"] for r in rows if r["verdict"] == "PASS"]
    breaks = [r["gamma"] for r in rows if r["verdict"] == "FAIL"]
    head["band"] = {
        "holds_at": holds,
        "breaks_at": breaks,
        "text": (
            f"PASS at gamma {', '.join(f'{g:g}' for g in holds) or 'none'}; "
            f"FAIL at gamma {', '.join(f'{g:g}' for g in breaks) or 'none'}"
        ),
    }
    return [head, *rows]


def _finetune_claims(finetune, series_column, uniform_loss=None) -> list[dict]:
    measured = _measured(finetune)
    rows = measured[measured["modification"] == "finetune"]
    if rows["steps"].nunique() > 1:
        rows = rows[rows["steps"] == rows["steps"].mode().iloc[0]]
    rows = pd.concat([measured[measured["modification"] == "none"], rows], ignore_index=True)
    grid = _Grid(rows, series_column)
    policy = rows["lr_policy"].to_numpy() if "lr_policy" in rows else np.full(len(rows), "fixed")
    policy = np.where(rows["modification"].to_numpy() == "none", "", policy)
    reg, lr = rows["reg"].fillna(0.0).to_numpy(float), rows["lr"].to_numpy(float)
    fixed = policy == "fixed"
    if grid.T.size < 3 or not fixed.any():
        return [_no_data(c, "the fine-tuning table needs >= 3 checkpoints and fixed-lr rows") for c in ("a'", *"defg")]
    base_reg = 0.0 if (reg[fixed] == 0).any() else float(reg[fixed].min())
    at = fixed & (reg == base_reg)
    cubes = {float(x): grid.cube(at & (lr == x)) for x in sorted(set(lr[at]))}
    before = rows["modification"].to_numpy() == "none"
    if before.any():
        base = _mean(grid.cube(before), 1)[:, None, :]
        forgetting = [_rank_part(f"lr={x:g}", grid.T, cube - base) for x, cube in cubes.items()]
        claims = [_combine("a'", forgetting, "every", "no fixed lr")]
    else:
        claims = [_no_data("a'", "no rows of the checkpoints before fine-tuning (modification 'none')")]
    claims += [_u_claim("d", grid.T, cubes, "lr"), _order_claim("e", grid.T, cubes, "lr")]
    tuned = (policy == "tuned") & (reg == base_reg)
    if tuned.any():
        claims.append(_tuned_claim(grid.T, grid.cube(tuned), cubes, uniform_loss))
    else:
        claims.append(_no_data("f", NO_TUNED))
    regs = sorted({(float(x), float(r)) for x, r in zip(lr[fixed], reg[fixed]) if r > 0})
    if not regs or base_reg != 0.0:
        return [*claims, _no_data("g", f"no fine-tuning rows with reg {'> 0' if not regs else '= 0 to compare with'}")]
    interior = {x for x, cube in cubes.items() if _pooled(grid.T, cube)[1] == "interior"}
    step = _log_t_star_step(grid.T)
    parts = [
        _part(f"lr={x:g}, reg={r:g}", [cubes[x], grid.cube(fixed & (lr == x) & (reg == r))], step, ABOVE)
        for x, r in regs
        if x in interior
    ]
    return [*claims, _combine("g", parts, "every", "no lr with reg > 0 whose reg = 0 curve has an interior T*")]


NO_TUNED = "no tuned-lr rows (lr_policy 'tuned')"


def _tuned_claim(T, tuned, fixed: dict, uniform_loss=None) -> dict:
    """(f): the tuned curve's rise (> 0: not removed) and the mean fixed-lr rise minus it (> 0:
    reduced; the mean over the lrs with a rise); "every". ``fixed`` is never empty here (d's lrs).
    Runs whose log perplexity is at or above ``uniform_loss`` (log V: no better than a uniform guess)
    are left out: a curve that has forgotten everything cannot rise."""
    cubes = [tuned, *fixed.values()]
    left_out = []
    if uniform_loss is not None:
        left_out = [f"{x:g}" for x, cube in fixed.items() if (cube >= uniform_loss).any()]
        cubes = [np.where(c >= uniform_loss, np.nan, c) for c in cubes]

    def ends(*curves):  # each curve's argmin before its last point
        return [_argmin(y, 0, y.shape[-1] - 1) for y in curves]

    def rises(key, *curves):
        return [y[..., -1] - _at(y, i) for y, i in zip(curves, key)]

    def reduction(key, *curves):
        r = rises(key, *curves)
        return _mean(np.stack(r[1:]), 0) - r[0]

    kind = _pooled(T, tuned)[1]
    lrs = ",".join(f"{x:g}" for x in fixed)
    extra = {"tuned_kind": kind, "uniform_left_out": left_out}
    parts = [
        _part("tuned rise", cubes, lambda *a: rises(*a)[0], ABOVE, ends, **extra),
        _part(f"reduction vs lr={lrs}", cubes, reduction, ABOVE, ends, **extra),
    ]
    return _claim("f", _decide(parts, "every"))


def evaluate_claims(
    perturb: pd.DataFrame | None,
    finetune: pd.DataFrame | None,
    traces: pd.DataFrame | None = None,
    *,
    series_column: str = "series_seed",
    uniform_loss: float | None = None,
) -> list[dict]:
    """The verdicts on claims (a)-(h), in order (module docstring). ``traces``: a table of the
    noise-weighted Hessian trace W (column ``trace``, else ``value``) per ``checkpoint`` (or
    ``pretrain_time``) and, where it has the column, per series ``series_column`` (else the same W
    for every series). A missing table makes its claims INCONCLUSIVE with a "no data" rule.

    Parameters
    ----------
    perturb : DataFrame or None
        The perturbation table of one model's series (result-store rows of ``ovt llm perturb``).
    finetune : DataFrame or None
        The fine-tuning table of the same series (rows of ``ovt llm finetune``).
    traces : DataFrame or None
        The noise-weighted Hessian trace per checkpoint (and series), as described above.
    series_column : str
        The column that names the pre-training series of a row.
    uniform_loss : float or None
        log V, the loss of a uniform guess over the vocabulary, in nats; runs at or above it are left
        out of claim (f). None keeps every run.

    Returns
    -------
    list of dict
        One entry per claim (and per part where a claim has parts): statement, statistic, value,
        interval or p, n, verdict and rule.
    """
    if perturb is None or len(perturb) == 0:
        claims = [_no_data(c, "no perturbation table") for c in "abch"]
    else:
        claims = _perturb_claims(perturb, traces, series_column)
    if finetune is None or len(finetune) == 0:
        claims += [_no_data(c, "no fine-tuning table") for c in ("a'", *"defg")]
    else:
        claims += _finetune_claims(finetune, series_column, uniform_loss)
    return sorted(claims, key=claim_order)


def claim_order(claim: dict) -> tuple:
    """Claims in the order a, a', b, ..., h, then h's per-gamma rows by gamma.

    Parameters
    ----------
    claim : dict
        One entry of ``evaluate_claims``.

    Returns
    -------
    tuple
        The sort key.
    """
    return claim["claim"].split(":")[0], claim.get("gamma", -math.inf)


def _number(x) -> str:
    return "open" if x is None or not math.isfinite(x) else f"{x:.4g}"


def interval_text(claim: dict) -> str:
    """``[lo, hi]`` of an interval, ``p = ...`` of a rank test, ``-`` for neither.

    Parameters
    ----------
    claim : dict
        One entry of ``evaluate_claims``.

    Returns
    -------
    str
    """
    if claim.get("p_value") is not None and math.isfinite(claim["p_value"]):
        return f"p = {claim['p_value']:.2g}"
    if claim["interval"] is None:
        return "-"
    return f"[{_number(claim['interval'][0])}, {_number(claim['interval'][1])}]"


def render_markdown(claims: list[dict]) -> str:
    """A Markdown table of ``claims``: claim, statement, statistic, value (at which part), 95% interval
    (or a rank test's p), n (series x draws), verdict, rule.

    Parameters
    ----------
    claims : list of dict
        The entries of ``evaluate_claims``.

    Returns
    -------
    str
        The table, one row per entry.
    """
    lines = [
        "| claim | statement | statistic | value | 95% interval or p | n | verdict | rule |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in claims:
        value = "-" if not math.isfinite(c["value"]) else _number(c["value"]) + (f" ({c['at']})" if c["at"] else "")
        interval = interval_text(c)
        n = f"{c['n_series']} series x {c['n_draws']} draws"
        cells = [c["claim"], c["statement"], c["statistic"], value, interval, n, f"**{c['verdict']}**", c["rule"]]
        lines.append("| " + " | ".join(str(x).replace("|", "\\|") for x in cells) + " |")
    return "\n".join(lines) + "\n"
