"""Every local minimum of a curve over its time grid, not only the global one (``inflection``): the
T*(lr) landscape has competing minima, and the global T* jumps between them.

A grid point i is a local minimum when it is lower than its left neighbour and not higher than its
right one. Its *prominence* is how far the curve climbs on both sides before it meets a lower point
(or the end of the grid): min(left peak, right peak) - value. A minimum counts when its prominence is
more than ``PROMINENCE`` times the curve's range (max - min): rounding noise on a flat stretch never
does. Each counted minimum is refined by the vertex of the parabola through it and its neighbours in
log T, as ``inflection`` refines the global one.

Examples
--------
>>> T = np.logspace(0, 2, 9)
>>> [round(t, 1) for t, _ in local_minima(T, np.array([5.0, 3, 4, 6, 4, 2, 3, 5, 7]))]
[2.0, 19.6]
"""

from __future__ import annotations

import numpy as np

from analysis.inflection import vertex_minimum

PROMINENCE = 1e-3  # of the curve's range: below this a dip is noise, not a minimum


def local_minima(T, values, prominence: float = PROMINENCE) -> list[tuple[float, float]]:
    """(T, value) of every interior local minimum of one curve whose prominence exceeds
    ``prominence`` x (max - min), in increasing T; T refined by a parabola in log T.

    Parameters
    ----------
    T : array, shape (n_t,)
        The pre-training grid (> 0, ascending): flow time for theory curves, tokens for LLM curves.
    values : array, shape (n_t,)
        One curve over T.
    prominence : float
        The least prominence counted, relative to the curve's range.

    Returns
    -------
    list of (float, float)
        (T, value) per minimum, T in T's units.
    """
    T, y = np.asarray(T, float), np.asarray(values, float)
    if T.ndim != 1 or y.shape != T.shape or T.size < 3:
        raise ValueError(f"T and values must be one curve of >= 3 points; got shapes {T.shape}, {y.shape}")
    finite = np.isfinite(y)
    if finite.sum() < 3:
        return []
    span = np.nanmax(y[finite]) - np.nanmin(y[finite])
    found = []
    for i in range(1, T.size - 1):
        if not (finite[i - 1 : i + 2].all() and y[i] < y[i - 1] and y[i] <= y[i + 1]):
            continue
        if min(_climb(y, i, -1), _climb(y, i, +1)) - y[i] <= prominence * span:
            continue
        found.append((float(vertex_minimum(T[i - 1 : i + 2], y[i - 1 : i + 2], dtype=np.float64)), float(y[i])))
    return found


def _climb(y: np.ndarray, i: int, step: int) -> float:
    """The highest value from i in direction ``step`` before the curve drops below y[i] (or ends)."""
    peak, j = y[i], i + step
    while 0 <= j < y.size and np.isfinite(y[j]) and y[j] >= y[i]:
        peak, j = max(peak, y[j]), j + step
    return peak
