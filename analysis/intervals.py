"""The intervals of ``ovt compare`` (``analysis.fits``): what varies from one bootstrap replicate to
the next, and the Student-t interval built from the replicates.

A family has two parts, the base curve and the excess of the modified curves over it. Each part
varies across replicates in one of three ways (a ``Draws``):

- ``seeds``: the part has k > 1 seeds, the independent draws (theory seeds, an LLM's noise draws); a
  replicate resamples whole seeds with replacement (the same indices for the base and the modified
  curves where they are paired), so a draw that perturbs every checkpoint and every size counts once;
- ``log residuals``: an LLM curve measured once, in a family that has seeds on its other part; its n
  log residuals from the fit, scaled by sqrt(n / (n - 3)) for the three fitted parameters, are
  taken as independent measurement noise and resampled onto the fitted values;
- ``fixed``: a theory curve with one seed (deterministic: its residuals from a power law are misfit,
  not noise), a curve of a family with one seed and no draws, or a single curve with fewer than 4
  points; it is the same in every replicate.

A quantity's interval is value +- t(dof, 0.975) x s.e., with s.e. the standard deviation of its
replicates (times sqrt(k / (k - 1)) where k seeds are resampled: the bootstrap variance of a mean of k
draws is (k - 1)/k of the unbiased one) and dof = k - 1 for seeds, n - 3 for residuals, the smallest
over the parts the quantity depends on. For the mean of k Gaussian draws this is Student's t interval
(exactly so as the replicates grow many); three draws give t(2) = 4.30 where a normal interval would
use 1.96. Positive scales (A, C, T*) are done in log space. A quantity whose parts are all fixed gets
no interval (``interval`` null, ``method`` "none (...)"); one with a fixed part and a varying one
gets an interval conditional on the fixed part, which it names (``given``). Replicates without a
value (a failed fit) are left out, and none is claimed beyond ``MAX_MISSING`` of them; infinite ones
(a T* that never comes or falls outside the checkpoints) leave that end open (null) beyond it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

LEVEL = 0.95
MAX_MISSING = 0.025  # the share of replicates without a value, or infinite on one side, that a t interval bears
MIN_RESIDUALS = 4  # n - 3 >= 1 degree of freedom


@dataclasses.dataclass(frozen=True)
class Draws:
    """How one part of a family (``base``, ``excess``, or the ``modified`` curves) varies."""

    part: str
    mode: str  # "seeds", "log residuals" or "fixed"
    n: int  # seeds, or residuals; 1 where fixed
    reason: str = ""  # why it is fixed

    @property
    def dof(self) -> int:
        return {"seeds": self.n - 1, "log residuals": self.n - 3}.get(self.mode, 0)

    def describe(self) -> str:
        """``seeds``, ``log residuals`` or ``fixed (REASON)``: the family-level summary."""
        return f"fixed ({self.reason})" if self.mode == "fixed" else self.mode


def _fixed(part: str, source: str, draws_elsewhere: bool) -> Draws:
    if source == "theory":
        reason = "deterministic curve"
    else:
        reason = f"one {part} curve" if draws_elsewhere else "one seed, no draws"
    return Draws(part, "fixed", 1, reason)


def _one_curve(part: str, source: str, draws_elsewhere: bool, n_points: int) -> Draws:
    """A part measured once: its log residuals where an LLM family has draws elsewhere, else fixed."""
    if source != "llm" or not draws_elsewhere:
        return _fixed(part, source, draws_elsewhere)
    if n_points < MIN_RESIDUALS:
        return Draws(part, "fixed", 1, f"one {part} curve, {n_points} points: too few for its residuals")
    return Draws(part, "log residuals", n_points)


def base_draws(source: str, n_base: int, n_mod: int, n_points: int) -> Draws:
    """The base curve: its seeds, or (one seed) as ``_one_curve``; ``n_points`` its windowed points.

    Parameters
    ----------
    source : str
        Where the replicates come from, as the store says (theory or LLM).
    n_base : int
        Seeds (draws) of the base curve.
    n_mod : int
        Seeds (draws) of the modified curves.
    n_points : int
        Windowed points of the base curve.

    Returns
    -------
    Draws
    """
    if n_base > 1:
        return Draws("base", "seeds", n_base)
    return _one_curve("base", source, n_mod > 1, n_points)


def excess_draws(source: str, n_base: int, n_mod: int, paired: bool, n_points: int) -> Draws:
    """The excess: the modified seeds (with the base seeds, resampled apart where not paired: the fewer
    count), or (one modified seed) as ``_one_curve``; ``n_points`` its positive windowed points.

    Parameters
    ----------
    source : str
        Where the replicates come from, as the store says (theory or LLM).
    n_base : int
        Seeds (draws) of the base curve.
    n_mod : int
        Seeds (draws) of the modified curves.
    paired : bool
        Whether base and modified seeds are the same draws.
    n_points : int
        Positive windowed points of the excess.

    Returns
    -------
    Draws
    """
    if n_mod > 1:
        return Draws("excess", "seeds", n_mod if paired or n_base == 1 else min(n_mod, n_base))
    return _one_curve("excess", source, n_base > 1, n_points)


def modified_draws(source: str, n_base: int, n_mod: int) -> Draws:
    """The mean modified curves (observed T*): their seeds, else fixed.

    Parameters
    ----------
    source : str
        Where the replicates come from, as the store says (theory or LLM).
    n_base : int
        Seeds (draws) of the base curve.
    n_mod : int
        Seeds (draws) of the modified curves.

    Returns
    -------
    Draws
    """
    return Draws("modified", "seeds", n_mod) if n_mod > 1 else _fixed("modified", source, n_base > 1)


def json_number(v) -> float | None:
    """A JSON number; None for NaN or infinity (``none in range`` / ``never``)."""
    v = float(v)
    return v if math.isfinite(v) else None


def t_stat(
    value, replicates, parts: Sequence[Draws], *, log: bool = False, lower: float | None = None, level: float = LEVEL
) -> dict:
    """``{"value", "interval", "method", "n_draws", ...}`` of one quantity from its bootstrap replicates.

    ``parts``: the parts it depends on. ``log``: a positive scale, done in log space. Replicates
    without a value (NaN) are left out, and none is claimed where they are more than ``MAX_MISSING``
    of them; infinite ones (+inf: a T* that never comes, or after the last checkpoint; 0 in log
    space: before the first) are left out of the s.e., and more than ``MAX_MISSING`` of them on one
    side leave that end open (null). ``lower``: a bound of the fitted parameter (E >= 0). ``level``: the
    interval's coverage (a multiplicity correction asks for more than ``LEVEL``).

    Parameters
    ----------
    value : float
        The quantity fitted on the data.
    replicates : array, shape (n_boot,)
        Its value on each bootstrap replicate.
    parts : sequence of Draws
        How each part it depends on was resampled.
    log : bool
        Whether the quantity is a positive scale (interval in log space).
    lower : float or None
        A bound of the fitted parameter.
    level : float
        The coverage, in (0, 1).

    Returns
    -------
    dict
        JSON-able.

    Examples
    --------
    >>> base, excess = Draws("base", "fixed", 1, "deterministic curve"), Draws("excess", "seeds", 3)
    >>> t_stat(2.0, [1.0, 2.0, 3.0], [base])["method"]
    'none (deterministic curve)'
    >>> s = t_stat(2.0, [1.0, 2.0, 3.0], [excess])  # s.e. = 1 x sqrt(3/2); t(2) = 4.303
    >>> [round(v, 2) for v in s["interval"]], s["n_draws"], s["dof"], s["method"]
    ([-3.27, 7.27], 3, 2, 't')
    """
    entry = {"value": json_number(value)}
    varying = [d for d in parts if d.mode != "fixed"]
    fixed = [d for d in parts if d.mode == "fixed"]
    if not varying:
        return {**entry, "interval": None, "method": f"none ({fixed[0].reason})", "n_draws": 1}
    binding = min(varying, key=lambda d: d.dof)
    entry |= {"interval": None, "method": "t", "n_draws": binding.n, "draws": binding.mode, "dof": binding.dof}
    if fixed:
        entry["given"] = "; ".join(f"the {d.part} curve, held fixed ({d.reason})" for d in fixed)
    x = np.asarray(replicates, float).ravel()
    v = float(value)
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            v, x = (math.log(v) if v > 0 else math.nan), np.log(x)
    if not math.isfinite(v):
        return {**entry, "method": "none (no finite value)"}
    if x.size == 0:
        return {**entry, "method": "none (no bootstrap replicates)"}
    finite = x[np.isfinite(x)]
    missing, above, below = int(np.isnan(x).sum()), int(np.isposinf(x).sum()), int(np.isneginf(x).sum())
    if missing > MAX_MISSING * x.size or finite.size < 2:
        return {**entry, "method": f"none ({missing + above + below} of {x.size} replicates without a finite value)"}
    seeds = [d.n for d in varying if d.mode == "seeds"]
    scale = math.sqrt(min(seeds) / (min(seeds) - 1)) if seeds else 1.0
    half = float(stats.t.ppf(0.5 + level / 2, binding.dof)) * scale * float(np.std(finite, ddof=1))
    lo, hi = v - half, v + half
    if log:
        lo, hi = math.exp(lo), math.exp(min(hi, 700.0))
    if lower is not None:
        lo = max(lo, lower)
    open_below, open_above = below > MAX_MISSING * x.size, above > MAX_MISSING * x.size
    entry["interval"] = [None if open_below else json_number(lo), None if open_above else json_number(hi)]
    for side, count, is_open in (("below", below, open_below), ("above", above, open_above)):
        if is_open:
            entry["method"] += f", open {side} ({count} of {x.size} replicates unbounded {side})"
    return entry
