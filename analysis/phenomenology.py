"""Fitting the theory to measured curves: the power-law decomposition, and the reference
scale of a fitted linear model. NumPy/SciPy, no JAX, no I/O.

The decomposition is the theory's own: a modified model's loss is the base loss plus a sensitivity,

    L(T) = E + A T^(-alpha),        S(T, m) = C m^p T^beta,

with m the modification size (gamma for Gaussian noise, lr x steps for fine-tuning). Setting
d(L + S)/dT = -alpha A T^(-alpha-1) + beta C m^p T^(beta-1) = 0 gives the minimum of L + S,

    T*(m) = (alpha A / (beta C m^p))^(1 / (alpha + beta)),

a closed-form inflection that moves earlier as m^(-p / (alpha + beta)). Both parts are fitted in log
space: L by bounded least squares from a few starts, log S = log C + p log m + beta log T by
ordinary least squares.

The linear model itself (``theory.linear_model``: the aligned balanced network read on an empirical
axis) is evaluated by JAX; ``fit_reference`` only needs its ``curves`` method.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
from scipy import optimize

# ------------------------------------------------------------------------- power-law decomposition


@dataclasses.dataclass(frozen=True)
class Decomposition:
    """L(T) = E + A T^(-alpha) and S(T, m) = C m^p T^beta (T and m in the data's own units)."""

    E: float
    A: float
    alpha: float
    C: float
    p: float
    beta: float

    def base(self, T):
        return self.E + self.A * np.asarray(T, float) ** (-self.alpha)

    def excess(self, T, m):
        return self.C * np.asarray(m, float) ** self.p * np.asarray(T, float) ** self.beta

    def modified(self, T, m):
        return self.base(T) + self.excess(T, m)

    def t_star(self, m):
        return inflection_time(m, self.A, self.alpha, self.C, self.p, self.beta)


def inflection_time(m, A, alpha, C, p, beta):
    """T*(m) = (alpha A / (beta C m^p))^(1/(alpha + beta)): the argmin over T of E + A T^-alpha + C m^p T^beta.

    Infinite where the sensitivity does not grow (beta <= 0 or C <= 0): then L + S only falls.

    Parameters
    ----------
    m : float or array
        The modification size (gamma, or lr x steps).
    A, alpha : float
        Scale and exponent of the base curve's decay (alpha > 0).
    C, p, beta : float
        Scale, size exponent and time exponent of the sensitivity.

    Returns
    -------
    array
        T*(m), in the units of T the fit used; +inf where the sensitivity does not grow.

    Examples
    --------
    >>> round(float(inflection_time(1.0, A=1.0, alpha=1.0, C=1.0, p=2.0, beta=1.0)), 6)
    1.0
    """
    m = np.asarray(m, float)
    if not (beta > 0 and C > 0 and alpha > 0 and A > 0):
        return np.full(m.shape, np.inf)[()]
    with np.errstate(over="ignore"):  # exponents near 0 put T* beyond any float: infinity, "never"
        return (alpha * A / (beta * C * m**p)) ** (1.0 / (alpha + beta))


@dataclasses.dataclass(frozen=True)
class Goodness:
    """Residuals in log space: root mean square and R^2 of the log values."""

    rmse_log: float
    r2_log: float
    n: int


def goodness(log_observed, log_predicted) -> Goodness:
    """Root-mean-square error and R^2 of a fit in log space.

    Parameters
    ----------
    log_observed : array, shape (n,)
        The observed values' logs.
    log_predicted : array, shape (n,)
        The fitted values' logs.

    Returns
    -------
    Goodness
        ``rmse_log``, ``r2_log`` (NaN for a constant curve) and ``n``.
    """
    y, f = np.asarray(log_observed, float), np.asarray(log_predicted, float)
    ss_res = float(np.sum((y - f) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return Goodness(float(np.sqrt(ss_res / y.size)), 1.0 - ss_res / ss_tot if ss_tot > 0 else np.nan, int(y.size))


def fit_base(T, L, start: tuple[float, float, float] | None = None) -> tuple[tuple[float, float, float], Goodness]:
    """(E, A, alpha) of L = E + A T^-alpha by least squares on log L, E in [0, min L], alpha in (0, 10].

    Needs >= 3 distinct T. Starts from ``start`` alone, else from a small grid of (E, alpha) and keeps
    the lowest cost. T is scaled by its geometric mean inside, so A is well conditioned; A is returned
    in the units of T.

    Parameters
    ----------
    T : array, shape (n,)
        Pre-training amounts (> 0): flow time or tokens.
    L : array, shape (n,)
        The base loss at each T (> 0), in nats for an LLM.
    start : (E, A, alpha) or None
        A starting point for the least squares.

    Returns
    -------
    ((float, float, float), Goodness)
    """
    T, L = np.asarray(T, float), np.asarray(L, float)
    if np.unique(T).size < 3 or np.any(L <= 0) or np.any(T <= 0):
        raise ValueError(f"a base fit needs >= 3 distinct T > 0 and L > 0; got T={np.unique(T).tolist()}")
    t_ref = float(np.exp(np.mean(np.log(T))))
    x, y, e_max = np.log(T / t_ref), np.log(L), float(L.min())

    def residual(q):
        return np.log(q[0] + np.exp(q[1] - q[2] * x)) - y

    def jacobian(q):
        power = np.exp(q[1] - q[2] * x)
        f = q[0] + power
        return np.stack([1.0 / f, power / f, -x * power / f], axis=1)

    lower, upper = [0.0, -60.0, 1e-4], [e_max, 60.0, 10.0]
    if start is not None:
        E0, A0, alpha0 = start
        starts = [(min(max(E0, 0.0), e_max), np.log(A0 / t_ref**alpha0), alpha0)]
    else:
        level = float(np.exp(np.mean(y)))
        starts = [
            (E, np.log(max(level - E, 1e-3 * level)), a)
            for E, a in itertools.product((0.0, 0.5 * e_max, 0.9 * e_max), (0.3, 1.0, 2.0))
        ]
    best = None
    for q0 in starts:
        q0 = np.clip(q0, lower, upper)
        fit = optimize.least_squares(residual, q0, jac=jacobian, bounds=(lower, upper), x_scale="jac", max_nfev=200)
        if best is None or fit.cost < best.cost:
            best = fit
    E, log_a, alpha = best.x
    return (float(E), float(np.exp(log_a) * t_ref**alpha), float(alpha)), goodness(y, y + best.fun)


def fit_sensitivity(T, m, S) -> tuple[tuple[float, float, float], Goodness]:
    """(C, p, beta) of S = C m^p T^beta by ordinary least squares on log S over points with S > 0.

    Needs >= 2 distinct m and >= 2 distinct T among them (else p or beta is not identified).

    Parameters
    ----------
    T : array, shape (n,)
        Pre-training amount of each point (> 0).
    m : array, shape (n,)
        Modification size of each point (> 0).
    S : array, shape (n,)
        The excess of the modified loss over the base loss at each point.

    Returns
    -------
    ((float, float, float), Goodness)
    """
    T, m, S = (np.asarray(v, float).ravel() for v in (T, m, S))
    keep = (S > 0) & np.isfinite(S)
    T, m, S = T[keep], m[keep], S[keep]
    if np.unique(m).size < 2 or np.unique(T).size < 2:
        raise ValueError(f"a sensitivity fit needs >= 2 sizes and >= 2 times with S > 0; got m={np.unique(m).tolist()}")
    X = np.stack([np.ones_like(T), np.log(m), np.log(T)], axis=1)
    y = np.log(S)
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    return (float(np.exp(coef[0])), float(coef[1]), float(coef[2])), goodness(y, X @ coef)


def fit_reference(model, modification: str, T, size: float, S) -> float:
    """The one reference scale (theory gamma, or tau, per unit of the size) whose predicted excess best
    matches the measured excess S(T) of one size in log space; points with S <= 0 are left out.
    ``model`` is any fitted linear model with ``curves(T, modification, sizes)`` (``theory.linear_model``).

    A grid of 97 values of ref * size (1e-6 .. 1e6, eighth decades), then a bounded refinement
    around the best.

    Parameters
    ----------
    model : linear model
        A fitted model with ``curves(T, modification, sizes)``.
    modification : str
        "gaussian" or "finetune".
    T : array, shape (n,)
        Pre-training amounts (> 0), in the units the model was fitted in.
    size : float
        The measured modification size (gamma, or lr x steps).
    S : array, shape (n,)
        The measured excess at each T.

    Returns
    -------
    float
        The reference scale.
    """
    T, S = np.asarray(T, float), np.asarray(S, float)
    keep = S > 0
    if not keep.any():
        raise ValueError(f"size {size:g} has no positive excess to fit the {modification} reference on")
    T, y = T[keep], np.log(S[keep])

    def cost(log_theory_sizes):
        _, excess = model.curves(T, modification, np.exp(np.atleast_1d(log_theory_sizes)))
        return np.sum((np.log(np.maximum(excess, 1e-30)) - y) ** 2, axis=-1)

    grid = np.log(np.logspace(-6, 6, 97))
    i = int(np.argmin(cost(grid)))
    step = grid[1] - grid[0]
    best = optimize.minimize_scalar(
        lambda v: float(cost(v)[0]), bounds=(grid[i] - step, grid[i] + step), method="bounded"
    )
    return float(np.exp(best.x) / size)
