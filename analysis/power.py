"""Sample sizes from a pilot: how many pre-training series (n) and fine-tuning orders (m) a claim needs.

A series-level statistic of claim (d) (the fall L(T_0) - L(T_i*) or the rise L(T_last) - L(T_i*) of
the post-fine-tuning log perplexity L, ``analysis.claims``) is computed on each series' curve averaged
over its m batch orders, so with independent series and orders

    Var(stat_s) = sigma_s^2 + sigma_o^2 / m,

sigma_s^2 the variance between pre-training series (of the statistic of the order-mean curve as m
grows), sigma_o^2 the variance between batch orders within a series. The claim's 95% interval over
n series has the expected half-width

    h(n, m) = t(0.975, n - 1) * sqrt((sigma_s^2 + sigma_o^2 / m) / n).                      (1)

A pilot of n0 series x m0 orders gives the components two ways (``components``):

- **direct** (one-way ANOVA on the statistic): x_{s,k} the statistic of order k of series s at the
  index chosen on the pooled curve; sigma_o^2 = mean_s var_k x_{s,k} (dof n0 (m0 - 1)), and
  sigma_s^2 = max(var_s mean_k x_{s,k} - sigma_o^2 / m0, 0) (dof n0 - 1: one with two pilot series);
- **residual** (uses every checkpoint): each series' order-mean curve is fitted by a quadratic in
  log T; its residual variance r^2 (dof n_T - 3 per series) less the per-point order variance
  v_o / m0 is the series-level noise of one checkpoint, and a fall or rise is a difference of two
  checkpoints: sigma_s^2 = 2 max(r^2 - v_o / m0, 0), sigma_o^2 = 2 v_o.

``pooled`` combines the two estimates of each component weighted by their dof (a one-dof ANOVA
alone would let one lucky or unlucky pair of series decide the study's size); ``plan`` returns, for
a number of orders m shared by every size, the smallest n of each size whose h(n, m) meets the target
for all of that size's statistics, and the m whose total cost is least.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import stats

LEVEL = 0.95


def half_width(sigma_s2: float, sigma_o2: float, n: int, m: int, level: float = LEVEL) -> float:
    """Eq. (1): the expected half-width of a Student-t interval over ``n`` series of ``m`` orders each.

    Parameters
    ----------
    sigma_s2 : float
        Variance between pre-training series, in squared nats.
    sigma_o2 : float
        Variance between batch orders, in squared nats.
    n : int
        Series (>= 2).
    m : int
        Batch orders per series (>= 1).
    level : float
        The interval's coverage, in (0, 1).

    Returns
    -------
    float
        The half-width, in nats.

    Examples
    --------
    >>> round(half_width(0.0004, 0.0002, 6, 2), 4)
    0.0235
    """
    if n < 2 or m < 1:
        raise ValueError(f"n={n} and m={m}: need n >= 2 series and m >= 1 orders")
    return float(stats.t.ppf(0.5 + level / 2, n - 1) * math.sqrt((sigma_s2 + sigma_o2 / m) / n))


def _fall_rise(curves: np.ndarray, i: int) -> np.ndarray:
    """[..., 2]: fall y_0 - y_i and rise y_last - y_i of every curve (last axis: time)."""
    return np.stack([curves[..., 0] - curves[..., i], curves[..., -1] - curves[..., i]], axis=-1)


def components(T: np.ndarray, L: np.ndarray) -> dict:
    """The variance components of the fall and the rise (module docstring) from a pilot cube
    ``L[series, order, time]`` of log perplexities after fine-tuning at one lr, over checkpoints at
    tokens ``T`` (ascending, at least 4; at least 2 series and 2 orders, all finite).

    Returns {"fall": {...}, "rise": {...}} with, for each, ``direct`` and ``residual`` estimates of
    ``sigma_s2`` and ``sigma_o2`` and the dof they rest on, and ``i_star``: the interior index of the
    pooled minimum the statistic is taken at.

    Parameters
    ----------
    T : array, shape (n_t,)
        Tokens of the checkpoints (ascending, n_t >= 4).
    L : array, shape (n_series, n_orders, n_t)
        Log perplexities after fine-tuning, in nats.

    Returns
    -------
    dict
    """
    T, L = np.asarray(T, float), np.asarray(L, float)
    if L.ndim != 3 or L.shape[2] != T.size:
        raise ValueError(f"L has shape {L.shape}; expected [series, order, {T.size} times]")
    n0, m0, n_t = L.shape
    if n0 < 2 or m0 < 2 or n_t < 4:
        raise ValueError(f"L has {n0} series x {m0} orders x {n_t} times; need >= 2 x >= 2 x >= 4")
    if not np.isfinite(L).all() or not np.isfinite(T).all():
        raise ValueError("L and T must be finite (leave diverged runs out of a pilot)")
    pooled = L.mean((0, 1))
    i_star = 1 + int(np.argmin(pooled[1:-1]))
    x = _fall_rise(L, i_star)  # [series, order, 2]
    order_var = x.var(1, ddof=1).mean(0)  # [2]
    series_var = x.mean(1).var(0, ddof=1)
    direct_s = np.maximum(series_var - order_var / m0, 0.0)

    design = np.vander(np.log(T), 3)  # a quadratic in log T
    mean_curves = L.mean(1)  # [series, time]
    coef, *_ = np.linalg.lstsq(design, mean_curves.T, rcond=None)
    residual = mean_curves.T - design @ coef
    r2 = float((residual**2).sum() / (n0 * (n_t - 3)))
    v_o = float(L.var(1, ddof=1).mean())  # per point, between orders
    residual_s, residual_o = 2 * max(r2 - v_o / m0, 0.0), 2 * v_o
    out = {}
    for j, side in enumerate(("fall", "rise")):
        out[side] = {
            "i_star": i_star,
            "value": float(x[..., j].mean()),
            "direct": {
                "sigma_s2": float(direct_s[j]),
                "sigma_o2": float(order_var[j]),
                "dof_s": n0 - 1,
                "dof_o": n0 * (m0 - 1),
            },
            "residual": {
                "sigma_s2": residual_s,
                "sigma_o2": residual_o,
                "dof_s": n0 * (n_t - 3),
                "dof_o": n0 * n_t * (m0 - 1),
            },
        }
    return out


def pooled(entry: dict) -> tuple[float, float]:
    """(sigma_s2, sigma_o2): the direct and residual estimates of each component averaged with their
    dof as weights.

    Parameters
    ----------
    entry : dict
        One of ``components``' "fall" or "rise".

    Returns
    -------
    (float, float)
        In squared nats.
    """
    found = []
    for component, dof in (("sigma_s2", "dof_s"), ("sigma_o2", "dof_o")):
        weights = [entry[how][dof] for how in ("direct", "residual")]
        values = [entry[how][component] for how in ("direct", "residual")]
        found.append(float(np.dot(weights, values) / sum(weights)))
    return found[0], found[1]


@dataclasses.dataclass(frozen=True)
class Cost:
    """Core-seconds of one pre-training series (``series``) and of one batch order of every
    fine-tuning run on a series (``order``)."""

    series: float
    order: float


def plan(
    variances: dict[str, tuple[float, float]],
    costs: dict[str, Cost],
    target: float,
    n_min: int = 2,
    m_min: int = 1,
    n_max: int = 64,
    m_max: int = 16,
) -> dict:
    """Per size the smallest n, and one m for all sizes, whose expected half-widths (eq. 1) are at most
    ``target`` for every statistic of that size; of the m that do, the cheapest.

    ``variances``: {"SIZE/STATISTIC": (sigma_s2, sigma_o2)}; ``costs``: {"SIZE": Cost}. Returns {"n":
    {size: n}, "m", "cost", "half_widths": {key: h}, "met": bool}; where a size cannot meet the target
    within ``n_max``, its n is the one with the smallest worst half-width and ``met`` is False.

    Parameters
    ----------
    variances : dict
        "SIZE/STATISTIC" -> (sigma_s2, sigma_o2), in squared nats.
    costs : dict
        "SIZE" -> Cost, the core-seconds of one series and one order.
    target : float
        The largest half-width allowed, in nats.
    n_min, n_max : int
        The range of series per size searched.
    m_min, m_max : int
        The range of batch orders searched.

    Returns
    -------
    dict
    """
    if target <= 0:
        raise ValueError(f"target={target} must be > 0")
    sizes = list(dict.fromkeys(key.split("/", 1)[0] for key in variances))
    if missing := set(sizes) - set(costs):
        raise ValueError(f"no cost for size(s) {sorted(missing)}")
    best = None
    for m in range(max(m_min, 1), m_max + 1):
        chosen, met = {}, True
        for size in sizes:
            mine = {k: v for k, v in variances.items() if k.split("/", 1)[0] == size}

            def worst(n):
                return max(half_width(s2, o2, n, m) for s2, o2 in mine.values())  # noqa: B023

            fits = [n for n in range(max(n_min, 2), n_max + 1) if worst(n) <= target]
            chosen[size] = fits[0] if fits else min(range(max(n_min, 2), n_max + 1), key=worst)
            met = met and bool(fits)
        cost = sum(chosen[size] * (costs[size].series + m * costs[size].order) for size in sizes)
        widths = {k: half_width(s2, o2, chosen[k.split("/", 1)[0]], m) for k, (s2, o2) in variances.items()}
        entry = {"n": chosen, "m": m, "cost": cost, "half_widths": widths, "met": met}
        if best is None or (met, -cost) > (best["met"], -best["cost"]):
            best = entry
    return best
