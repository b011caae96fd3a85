"""Interval estimates of a claim's statistic and the verdicts they give (analysis.claims' docstring:
Intervals, Verdict): a statistic per series with a Student-t interval, or bootstrap replicates over
a single series' draws; PASS / FAIL / INCONCLUSIVE against the claim's region; parts combined under
'every' or 'some'.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from analysis.claim_text import (
    RULES,
    STATEMENTS,
    STATISTICS,
)
from analysis.inflection import inflection, inflection_kind
from analysis.intervals import LEVEL, Draws, t_stat

N_BOOT = 1000  # bootstrap replicates over the draws of a single series (seeded: deterministic)


ALPHA = (1 - LEVEL) / 2  # one side of a 95% interval: the level of each one-sided test


ABOVE, BELOW = (0.0, math.inf), (-math.inf, 0.0)  # a statistic's side: > 0 or < 0


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
