"""The inflection T* of a curve over its time grid, in NumPy: the one implementation.

Every T* a store holds (theory and LLM ``inflection`` rows) and every observed T* of ``ovt compare``
comes from ``inflection``; ``theory.measure.inflection`` delegates here. ``inflection_kind`` says what
a curve has instead when it has no T* (``KINDS``), and ``vertex_minimum`` is the argmin refined by a
parabola that both use (the closed-form sweeps call it again on a dense grid inside the bracket).

A minimum counts as an inflection ("interior") only when the curve rises after it by more than every
tolerance: ``rtol`` times |minimum| (default ``RTOL``), ``rise_fraction`` times the curve's range
max - min (default ``RISE_FRACTION`` at the default rtol), and, where given, the ``spread`` of the
curve at its minimum (a standard error over seeds, say). A rise within them is "flat": rounding or
seed noise, or a curve that only levels off.
"""

from __future__ import annotations

import numpy as np

KINDS = ("interior", "flat", "below", "above", "none")
"""What a curve's minimum is. ``interior``: an inflection, T* in range. ``flat``: the curve does not
rise after its minimum by more than the tolerances (or does not move at all): no inflection, only
noise or a plateau. ``below``: the minimum is the first (finite) point, the curve rises from the
start: T* below the range. ``above``: the minimum is the last (finite) point, still falling: T* above
the range. ``none``: fewer than three finite values, nothing to tell."""
RTOL = 1e-4  # a rise must exceed this times |minimum| (about 840 float32 ulps)
RISE_FRACTION = 1e-5  # ... and this times the curve's range max - min (at rtol = RTOL; it scales with rtol)


def _checked(T, values, rtol, dtype):
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"dtype={dtype} must be a floating dtype")
    try:
        T, values = np.asarray(T, dtype), np.asarray(values, dtype)
    except (TypeError, ValueError):
        raise ValueError(f"T={T!r} and values={values!r} must be arrays of numbers") from None
    if T.ndim != 1 or values.ndim == 0 or T.shape[0] != values.shape[-1]:
        raise ValueError(f"T has shape {T.shape}; values must end in an axis of the same length, got {values.shape}")
    if T.shape[0] < 3:
        raise ValueError(f"T has {T.shape[0]} points; an inflection needs at least 3")
    if not (np.all(np.isfinite(T)) and np.all(T > 0) and np.all(np.diff(T) > 0)):
        # the curve is read in log T: a time <= 0, NaN or out of order has no place on that axis
        raise ValueError(f"T={T.tolist()} must be finite, > 0 and strictly increasing")
    if not np.all(np.asarray(rtol) >= 0):
        raise ValueError(f"rtol={rtol!r} must be >= 0")
    return T, values, dtype


def _take(a, k):
    return np.take_along_axis(a, k[..., None], axis=-1)[..., 0]


def _vertex(T, values, dtype):
    """(argmin i over the finite values, x = log T of the refined minimum) of every curve."""
    n = T.shape[0]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        x = np.log(T)
        i = np.argmin(np.where(np.isfinite(values), values, np.inf), axis=-1)
        j = np.clip(i, 1, n - 2)
        y0, y1, y2 = _take(values, j - 1), _take(values, j), _take(values, j + 1)
        x0, x1, x2 = x[j - 1], x[j], x[j + 1]
        # Vertex of the parabola through three points (unequal spacing allowed).
        num = (x1 - x0) ** 2 * (y1 - y2) - (x1 - x2) ** 2 * (y1 - y0)
        den = (x1 - x0) * (y1 - y2) - (x1 - x2) * (y1 - y0)
        vertex = x1 - 0.5 * num / np.where(den == 0, dtype.type(1.0), den)
        vertex = np.where(den == 0, x1, np.clip(vertex, x0, x2))
        # A NaN neighbour (a diverged run) or a point at T = 0 leaves the grid's argmin itself.
        return i, np.where(np.isfinite(vertex), vertex, x[i])


def vertex_minimum(T, values, dtype=np.float32) -> np.ndarray:
    """The argmin of ``values`` over the grid ``T`` refined by the vertex of the parabola through it
    and its two neighbours in log T (the nearest interior point's, at an end of the grid): the grid
    estimate of a minimum, with no judgement of whether it is an inflection. NaN where no value is
    finite. Works on the last axis.

    Parameters
    ----------
    T : array, shape (n_t,)
        The pre-training grid (> 0, ascending): flow time for theory curves, tokens for LLM curves.
    values : array, shape (..., n_t)
        The curves over T (a loss after a modification); NaN marks a missing point.
    dtype : numpy dtype
        The float type of the computation.

    Returns
    -------
    array, shape (...)
        The refined argmin, in T's units.

    Examples
    --------
    >>> round(float(vertex_minimum(np.array([1.0, 10.0, 100.0]), np.array([2.0, 1.0, 1.5]))), 2)
    14.68
    """
    T, values, dtype = _checked(T, values, 0.0, dtype)
    _, x = _vertex(T, values, dtype)
    return np.where(np.isfinite(values).any(axis=-1), np.exp(x), dtype.type(np.nan))


def _kind_codes(T, values, rtol, dtype, rise_fraction, spread):
    """Index into ``KINDS`` of every curve, and the argmin's refined log T."""
    n = T.shape[0]
    if rise_fraction is None:
        rise_fraction = RISE_FRACTION * np.asarray(rtol, dtype) / RTOL
    if not np.all(np.asarray(rise_fraction) >= 0):
        raise ValueError(f"rise_fraction={rise_fraction!r} must be >= 0")
    i, x = _vertex(T, values, dtype)
    finite = np.isfinite(values)
    with np.errstate(invalid="ignore", over="ignore"):
        y_min = _take(np.where(finite, values, np.inf), i)
        span = np.max(np.where(finite, values, -np.inf), axis=-1) - y_min
        after = np.arange(n) > i[..., None]
        rise = np.max(np.where(after & finite, values, -np.inf), axis=-1) - y_min
        need = np.maximum(rtol * np.abs(y_min), rise_fraction * span)
        if spread is not None:
            at_min = _take(np.broadcast_to(np.asarray(spread, dtype), values.shape), i)
            need = np.maximum(need, np.where(np.isfinite(at_min), at_min, dtype.type(0.0)))
        first = np.argmax(finite, axis=-1)
        last = n - 1 - np.argmax(finite[..., ::-1], axis=-1)
        codes = np.select(
            [
                finite.sum(axis=-1) < 3,
                span <= rtol * np.abs(y_min),  # the whole curve is flat (rounding noise at most)
                i == first,
                i == last,
                rise > need,
            ],
            [KINDS.index(k) for k in ("none", "flat", "below", "above", "interior")],
            KINDS.index("flat"),
        )
    return codes, x


def inflection_kind(
    T, values, rtol: float = RTOL, dtype=np.float32, *, rise_fraction: float | None = None, spread=None
) -> np.ndarray:
    """What the minimum of each curve (last axis of ``values`` over the grid ``T``) is: one of
    ``KINDS`` ("interior", "flat", "below", "above", "none"), as a string array of the batch shape.

    Fewer than three finite values: "none". A curve whose range max - min is within ``rtol`` times
    |minimum|: "flat" wherever its minimum falls. Otherwise a minimum at the first finite point is
    "below", at the last "above"; an interior one is "interior" when the curve rises after it by more
    than ``rtol`` x |minimum|, ``rise_fraction`` x (max - min) (default ``RISE_FRACTION`` x rtol /
    ``RTOL``: 1e-5 at the default rtol, 0 at rtol = 0) and ``spread`` at the minimum (broadcast
    against ``values``; NaN or None: not known), else "flat". Computed in ``dtype``, as ``inflection``.

    Parameters
    ----------
    T : array, shape (n_t,)
        The pre-training grid (> 0, ascending): flow time for theory curves, tokens for LLM curves.
    values : array, shape (..., n_t)
        The curves over T (a loss after a modification); NaN marks a missing point.
    rtol : float
        The rise relative to |minimum| below which a curve is flat.
    dtype : numpy dtype
        The float type of the computation.
    rise_fraction : float or None
        The rise relative to the curve's range below which a curve is flat.
    spread : float or array, shape (...), or None
        The noise of each curve (spread over seeds or s.e. over draws), in the curve's units.

    Returns
    -------
    numpy array of str, shape (...)

    Examples
    --------
    >>> T = np.array([1.0, 10.0, 100.0, 1000.0])
    >>> inflection_kind(T, np.array([[3.0, 1.0, 2.0, 2.5], [1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]])).tolist()
    ['interior', 'below', 'above']
    >>> str(inflection_kind(T, np.array([3.0, 1.0, 1.5, 2.0]), spread=1.2))  # a rise of 1 within the s.e.
    'flat'
    """
    T, values, dtype = _checked(T, values, rtol, dtype)
    codes, _ = _kind_codes(T, values, rtol, dtype, rise_fraction, spread)
    return np.asarray(KINDS)[codes]


def inflection(
    T, values, rtol: float = RTOL, dtype=np.float32, *, rise_fraction: float | None = None, spread=None
) -> np.ndarray:
    """T* = argmin over the grid of ``values``(T), refined by the vertex of a parabola through the
    minimum and its two neighbours in log T, where ``inflection_kind`` is "interior"; NaN for every
    other kind ("none in range": a minimum at an end of the grid, a curve that does not rise after its
    minimum by more than the tolerances - it only levels off, up to rounding or seed noise - or one
    with fewer than three finite values). Works on the last axis, so a batch of curves gives a batch
    of T*.

    Computed in ``dtype``: float32 by default, the precision every stored T* has always had (JAX's
    default float); rounding the curve to float32 also keeps a first checkpoint that is lower than
    the second by a few float32 ulps (a flat start) from turning into an interior T*. float64 on
    request (``theory.measure.inflection`` passes float64 under JAX's x64 mode).

    Parameters
    ----------
    T : array, shape (n_t,)
        The pre-training grid (> 0, ascending): flow time for theory curves, tokens for LLM curves.
    values : array, shape (..., n_t)
        The curves over T (a loss after a modification); NaN marks a missing point.
    rtol, dtype, rise_fraction, spread
        As in ``inflection_kind``.

    Returns
    -------
    array, shape (...)
        T* per curve, in T's units; NaN where there is none in range.

    Examples
    --------
    >>> T = np.array([1.0, 10.0, 100.0])
    >>> round(float(inflection(T, np.array([2.0, 1.0, 2.0]))), 3)
    10.0
    >>> float(inflection(T, np.array([3.0, 2.0, 1.0])))  # still falling at the last checkpoint
    nan
    """
    T, values, dtype = _checked(T, values, rtol, dtype)
    codes, x = _kind_codes(T, values, rtol, dtype, rise_fraction, spread)
    with np.errstate(over="ignore"):
        return np.where(codes == KINDS.index("interior"), np.exp(x), dtype.type(np.nan)).astype(dtype)
