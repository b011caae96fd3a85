"""The inflection T* of a curve over its time grid, in NumPy: the one implementation.

Every T* a store holds (theory and LLM ``inflection`` rows) and every observed T* of ``ovt compare``
comes from ``inflection``; ``theory.measure.inflection`` delegates here.
"""

from __future__ import annotations

import numpy as np


def inflection(T, values, rtol: float = 1e-4, dtype=np.float32) -> np.ndarray:
    """T* = argmin over the grid of ``values``(T), refined by the vertex of a parabola through the
    minimum and its two neighbours in log T; NaN ("none in range") when the minimum is at an end of
    the grid, or when the curve does not rise after it by more than ``rtol`` times the minimum (a
    curve that only levels off, up to rounding or Monte-Carlo noise, has no inflection). Works on the
    last axis, so a batch of curves gives a batch of T*.

    Computed in ``dtype``: float32 by default, the precision every stored T* has always had (JAX's
    default float); rounding the curve to float32 also keeps a first checkpoint that is lower than
    the second by a few float32 ulps (a flat start) from turning into an interior T*. float64 on
    request (``theory.measure.inflection`` passes float64 under JAX's x64 mode).

    >>> T = np.array([1.0, 10.0, 100.0])
    >>> round(float(inflection(T, np.array([2.0, 1.0, 2.0]))), 3)
    10.0
    >>> float(inflection(T, np.array([3.0, 2.0, 1.0])))  # still falling at the last checkpoint
    nan
    """
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"dtype={dtype} must be a floating dtype")
    T = np.asarray(T, dtype)
    values = np.asarray(values, dtype)
    if T.ndim != 1 or values.ndim == 0 or T.shape[0] != values.shape[-1]:
        raise ValueError(f"T has shape {T.shape}; values must end in an axis of the same length, got {values.shape}")
    if T.shape[0] < 3:
        raise ValueError(f"T has {T.shape[0]} points; an inflection needs at least 3")
    if not np.all(np.asarray(rtol) >= 0):
        raise ValueError(f"rtol={rtol!r} must be >= 0")
    n = T.shape[0]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        x = np.log(T)
        finite = np.where(np.isfinite(values), values, np.inf)
        i = np.argmin(finite, axis=-1)
        j = np.clip(i, 1, n - 2)

        def take(a, k):
            return np.take_along_axis(a, k[..., None], axis=-1)[..., 0]

        y0, y1, y2 = take(values, j - 1), take(values, j), take(values, j + 1)
        x0, x1, x2 = x[j - 1], x[j], x[j + 1]
        # Vertex of the parabola through three points (unequal spacing allowed).
        num = (x1 - x0) ** 2 * (y1 - y2) - (x1 - x2) ** 2 * (y1 - y0)
        den = (x1 - x0) * (y1 - y2) - (x1 - x2) * (y1 - y0)
        vertex = x1 - 0.5 * num / np.where(den == 0, dtype.type(1.0), den)
        vertex = np.where(den == 0, x1, np.clip(vertex, x0, x2))
        y_min = take(finite, i)
        after = np.arange(n) > i[..., None]
        late_rise = np.max(np.where(after & np.isfinite(values), values, -np.inf), axis=-1) - y_min
        interior = (i > 0) & (i < n - 1) & (late_rise > rtol * np.abs(y_min))
        return np.where(interior, np.exp(vertex), dtype.type(np.nan))
