"""The rank claims' test: the mean Spearman rho over series against its exact null (every ordering
enumerated up to EXACT_RANKS checkpoints, N_NULL seeded orderings beyond), one-sided.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
from scipy import stats

EXACT_RANKS = 9  # Spearman's null distribution enumerated up to this many checkpoints (9! permutations)


N_NULL = 200_000  # seeded random permutations beyond it


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
