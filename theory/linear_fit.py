"""The linear model fitted to measured curves: the base curve alone (``fit_linear_model``) or a whole
family at once, base and every size's excess, with or without the link to log-loss (``fit_joint``,
``theory.link``). ``ovt compare`` scores the joint fits against rival models
(``analysis.model_comparison``). NumPy/SciPy drive the least squares; JAX evaluates the model
(``theory.linear_model``) and its Jacobian. No I/O.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize

from analysis.phenomenology import Goodness, goodness
from theory import _checks, link
from theory.linear_model import MODIFICATIONS, N_STARTS, LinearModel, _model, _padded

U0_RATIOS = (1e-6, 1e-4, 1e-3, 1e-2, 1e-1)  # u0 / s1, profiled on the base curve (fit_joint)
U0_RATIO = 1e-3  # where the profile is flat (within PROFILE_FLAT of its best): not identified, fixed here
PROFILE_FLAT = 0.01  # log RMSE of the base fit: 1%, a base curve's checkpoint noise (0.008-0.016 in the study)


def fit_linear_model(T, L, rank: int = 32) -> tuple[LinearModel, Goodness]:
    """Fit (alpha_s, s1, kappa, E) so that E + L_A(kappa T) matches the base curve L in log space, with
    u0 / s1 profiled over ``U0_RATIOS`` (``fit_joint``).

    Bounded least squares (alpha_s in [0.05, 4], E in [0, min L]) from the ``N_STARTS`` best of a grid
    of starts: alpha_s in {0.5, 1, 2}, E in {0, min L / 2}, s1 from the loss drop, kappa placing the
    first mode's learning time at the first or the middle T. Refuses T and L that are not 1-d arrays
    of one length with T > 0 (and what follows), and a rank that is not an integer >= 1.

    Parameters
    ----------
    T : array, shape (n,)
        Pre-training amount of each point (> 0): tokens for an LLM, flow time for a theory curve.
    L : array, shape (n,)
        The base (unmodified) loss at each T, in nats for an LLM.
    rank : int
        Number of modes r of the fitted spectrum (>= 1).

    Returns
    -------
    (LinearModel, Goodness)
        The fitted parameters, and the fit's goodness in log space.
    """
    T, L, rank = _base_checked(T, L, rank)
    fit = _least_squares(
        _Problem(rank, "gaussian", T, L, np.zeros((0, T.size)), np.zeros(0), link=False), base_only=True
    )
    return fit.model, fit.base_goodness


def _base_checked(T, L, rank):
    _checks.same_shape("T", _checks.positive("T", T, ndim=1), "L", _checks.floats("L", L, ndim=1))
    rank = _checks.positive_int("rank", rank)
    T, L = np.asarray(T, float), np.asarray(L, float)
    if np.unique(T).size < 3 or np.any(L <= 0):
        raise ValueError(f"a linear-model fit needs >= 3 distinct T and L > 0; got T={np.unique(T).tolist()}")
    return T, L, rank


# ------------------------------------------------------------------------------------ joint fit


@dataclasses.dataclass(frozen=True)
class JointFit:
    """The linear model fitted to a whole family: the base curve and every size's excess together.

    A size m of the store is the theory size ``ref * m`` (gamma, or fine-tuning time tau); with the
    link (``theory.link``) the quadratic excess Q becomes the log-loss excess ``linked_excess(Q, lam)``
    (Q for Q <= lam, 2 sqrt(Q lam) - lam beyond), without it the excess is Q."""

    model: LinearModel
    modification: str
    ref: float
    lam: float | None  # None: no link
    at_bounds: tuple[str, ...]
    goodness: Goodness  # every fitted point (base and excess), log space
    n_points: int
    profile: dict  # u0 / s1 taken, whether identified, each ratio's base log RMSE (``_profiled``)

    @property
    def name(self) -> str:
        return "linear + link" if self.lam is not None else "linear"

    @property
    def n_params(self) -> int:
        """Free parameters: kappa, alpha_s, s1, E, ref (and lam with the link); u0 / s1 is profiled."""
        return 5 + (self.lam is not None)

    def params(self) -> dict:
        m = self.model
        found = {"kappa": m.kappa, "alpha_s": m.alpha_s, "s1": m.s1, "u0": m.u0, "E": m.E, "ref": self.ref}
        return found | ({"lam": self.lam} if self.lam is not None else {}) | {"rank": m.rank}  # rank: fixed

    def predict(self, T, sizes) -> tuple[np.ndarray, np.ndarray]:
        """(base (n,), excess (k, n)) on the store's axis T for the store's ``sizes``."""
        base, Q = self.model.curves(T, self.modification, np.asarray(sizes, float) * self.ref)
        if self.lam is None:
            return base, Q
        return base, np.asarray(link.linked_excess(Q, self.lam), float)


@dataclasses.dataclass(frozen=True)
class LinearCurves:
    """The linear model as one of ``analysis.model_comparison``'s curve models: ``fit`` a family's
    arrays jointly (``fit_joint``), with or without the link."""

    modification: str
    rank: int = 32
    link: bool = True

    @property
    def name(self) -> str:
        return "linear + link" if self.link else "linear"

    @property
    def n_params(self) -> int:
        return 5 + self.link

    def fit(self, T, base, sizes, S) -> JointFit:
        return fit_joint(T, base, sizes, S, self.modification, rank=self.rank, link=self.link)


def fit_joint(T, base, sizes, S, modification: str, rank: int = 32, link: bool = True) -> JointFit:
    """Fit the linear model to a family's base curve and every size's excess at once, in log space.

    Free: (kappa, alpha_s, s1, E, ref) and, with the link, lam. Profiled: u0 / s1, on the base curve
    over ``U0_RATIOS``: u0 sets only the length of the plateau before the first mode is learned (mode
    i is learned near ln(s_i / u0) / (2 s_i kappa)), a logarithmic correction that a curve starting
    after the plateau does not determine; where every ratio fits the base within ``PROFILE_FLAT`` of
    the best log RMSE, u0 / s1 is fixed at ``U0_RATIO`` (``profile`` holds each ratio's fit). Bounds:
    alpha_s in [0.05, 4], E in [0, min base], lam in [1e-3, 1e3]; a parameter left on a bound is
    named in ``at_bounds`` (``analysis.model_comparison.BOUND_REASONS`` says why). Where the link bends
    no fitted point (moving lam to its upper bound changes no log excess by more than ``LINK_IDLE``),
    lam is reported at that bound, the quadratic limit, and named there too.

    Starts: the base curve fitted alone (``fit_linear_model``'s two best), then ref on a log grid of
    the excess cost for each lam in {0.1, 1, 10, 1e3}; the joint least squares runs from each, the lowest
    cost wins. Points with S <= 0 or NaN are left out. Refuses what ``fit_linear_model`` refuses, an S
    that is not (len(sizes), len(T)), sizes <= 0 and an unknown ``modification``.

    Parameters
    ----------
    T : array, shape (n,)
        Pre-training amounts (> 0).
    base : array, shape (n,)
        The base loss at each T (> 0).
    sizes : array, shape (k,)
        The store's modification sizes (gamma, or lr x steps; > 0).
    S : array, shape (k, n)
        The measured excess of each size over the base.
    modification : str
        "gaussian" or "finetune".
    rank : int
        Number of modes (>= 1).
    link : bool
        Map the quadratic excess to log-loss (``theory.link``).

    Returns
    -------
    JointFit
    """
    _checks.one_of("modification", modification, MODIFICATIONS)
    T, base, rank = _base_checked(T, base, rank)
    sizes = np.asarray(_checks.positive("sizes", sizes, ndim=1), float)
    S = np.asarray(_checks.floats("S", S, ndim=2, finite=False), float)
    if S.shape != (sizes.size, T.size):
        raise ValueError(f"S has shape {S.shape}; it must be (len(sizes), len(T)) = {(sizes.size, T.size)}")
    problem = _Problem(rank, modification, T, base, S, sizes, link=bool(link))
    if not problem.excess_points:
        raise ValueError("a joint fit needs a positive excess at some (size, T)")
    return _least_squares(problem, base_only=False)


NAMES = ("kappa", "alpha_s", "s1", "E", "ref", "lam")
LAM_BOUNDS = (1e-3, 1e3)
LINK_IDLE = 1e-3  # log excess: a link that bends no fitted point by more leaves lam undetermined above them


@dataclasses.dataclass
class _Problem:
    """A family's arrays and the jitted log-model over the free parameters f = (log kappa, alpha_s,
    log s1, E[, log ref[, log lam]])."""

    rank: int
    modification: str
    T: np.ndarray
    base: np.ndarray
    S: np.ndarray
    sizes: np.ndarray
    link: bool
    u0_ratio: float = U0_RATIO

    def __post_init__(self):
        self.T_pad, self.n = _padded(self.T)
        sizes = self.sizes if self.sizes.size else np.ones(1)
        self.sizes_pad, _ = _padded(sizes, least=8)
        excess_ok = np.isfinite(self.S) & (self.S > 0)
        rows, cols = np.nonzero(excess_ok)
        n_pad = self.T_pad.size
        # Indices into the model's flat output (log base, then log excess size by size).
        self.index = np.concatenate([np.arange(self.n), n_pad + rows * n_pad + cols])
        self.y = np.concatenate([np.log(self.base), np.log(self.S[excess_ok])])
        self.excess_points = int(rows.size)

    def bounds(self, base_only: bool):
        L = self.base
        lower = [np.log(1e-12 / self.T.max()), 0.05, np.log(1e-4 * np.sqrt(L.min())), 0.0]
        upper = [np.log(1e12 / self.T.min()), 4.0, np.log(1e4 * np.sqrt(L.max())), float(L.min())]
        if not base_only:
            lower.append(-30.0)
            upper.append(30.0)
            if self.link:
                lower.append(np.log(LAM_BOUNDS[0]))
                upper.append(np.log(LAM_BOUNDS[1]))
        return np.array(lower), np.array(upper)

    def functions(self, base_only: bool):
        """residual(f), jacobian(f) over the points this fit uses."""
        # The base curve is the same under either modification: one compiled model serves both.
        modification = MODIFICATIONS[0] if base_only else self.modification
        value, jac = _log_curves(self.rank, modification, self.link and not base_only, base_only)
        index = self.index[: self.n] if base_only else self.index
        y = self.y[: self.n] if base_only else self.y
        log_u0_ratio = float(np.log(self.u0_ratio))

        def residual(f):
            return np.asarray(value(f, self.T_pad, self.sizes_pad, log_u0_ratio), float)[index] - y

        def jacobian(f):
            return np.asarray(jac(f, self.T_pad, self.sizes_pad, log_u0_ratio), float)[index]

        return residual, jacobian


@functools.cache
def _log_curves(rank: int, modification: str, link_on: bool, base_only: bool):
    """jit(f, T, sizes, log u0/s1) -> concat(log base (n,), log excess (k * n,)), and its Jacobian in f
    (u0 / s1 is an argument, so that every ratio of the profile reuses one compiled model)."""
    model = _model(rank, modification)

    def curves(f, T, sizes, log_u0_ratio):
        q = jnp.stack([f[0], f[1], f[2], log_u0_ratio, f[3]])
        if base_only:
            loss, _ = model(q, T, 0.0)
            return jnp.log(jnp.maximum(loss, 1e-30))
        loss, Q = jax.vmap(model, in_axes=(None, None, 0))(q, T, sizes * jnp.exp(f[4]))
        excess = link.linked_excess(Q, jnp.exp(f[5])) if link_on else Q
        return jnp.concatenate([jnp.log(jnp.maximum(loss[0], 1e-30)), jnp.log(jnp.maximum(excess, 1e-300)).ravel()])

    return jax.jit(curves), jax.jit(jax.jacfwd(curves))


def _base_starts(problem: _Problem, lower, upper) -> list[np.ndarray]:
    """A grid of (log kappa, alpha_s, log s1, E): alpha_s in {0.5, 1, 2}, E in {0, min L / 2}, s1 from
    the loss drop, kappa placing the first mode's learning time at the first or the middle T."""
    T, L, rank = problem.T, problem.base, problem.rank
    t_lo, t_mid, e_max = float(T.min()), float(np.exp(np.mean(np.log(T)))), float(L.min())
    starts = []
    for alpha_s, E, t_first in itertools.product((0.5, 1.0, 2.0), (0.0, 0.5 * e_max), (t_lo, t_mid)):
        norm = float(np.sum(np.arange(1, rank + 1, dtype=float) ** (-2 * alpha_s)))
        s1 = np.sqrt(2 * max(L.max() - E, 1e-6 * L.max()) / norm)
        kappa = np.log(1 / problem.u0_ratio) / (2 * s1) / t_first  # mode 1 learned at t_first
        starts.append(np.clip([np.log(kappa), alpha_s, np.log(s1), E], lower, upper))
    return starts


def _solve(residual, jacobian, starts, lower, upper):
    """The lowest-cost bounded least squares from each start."""
    best = None
    for f0 in starts:
        fit = optimize.least_squares(residual, f0, jac=jacobian, bounds=(lower, upper), x_scale="jac", max_nfev=200)
        if best is None or fit.cost < best.cost:
            best = fit
    return best


def _base_fits(problem: _Problem):
    """The base curve's least squares from the ``N_STARTS`` best starts, best first."""
    lower, upper = problem.bounds(base_only=True)
    residual, jacobian = problem.functions(base_only=True)
    starts = _base_starts(problem, lower, upper)
    # Least squares from the starts that already fit best: the others rarely win and cost most.
    starts.sort(key=lambda f0: float(np.sum(residual(f0) ** 2)))
    fits = [
        optimize.least_squares(residual, f0, jac=jacobian, bounds=(lower, upper), x_scale="jac", max_nfev=200)
        for f0 in starts[:N_STARTS]
    ]
    return sorted(fits, key=lambda fit: fit.cost)


def _profiled(problem: _Problem):
    """``problem`` at the u0 / s1 of ``U0_RATIOS`` whose base fit costs least (``U0_RATIO`` where the
    profile is flat), its base fits, and the profile: the ratio taken, whether the curve identifies
    it, and each ratio's base log RMSE."""
    found = _base_profile(problem.rank, problem.T.tobytes(), problem.base.tobytes())
    rmse = {r: float(np.sqrt(2 * fits[0].cost / problem.n)) for r, fits in found.items()}
    best = min(rmse, key=rmse.get)
    identified = max(rmse.values()) - rmse[best] > PROFILE_FLAT
    best = best if identified else U0_RATIO
    profile = {"u0/s1": best, "identified": bool(identified), "base_log_rmse": {f"{r:g}": v for r, v in rmse.items()}}
    return dataclasses.replace(problem, u0_ratio=best), found[best], profile


@functools.lru_cache(maxsize=64)
def _base_profile(rank: int, T: bytes, base: bytes) -> dict:
    """{u0 / s1: the base curve's fits (``_base_fits``)} for each of ``U0_RATIOS``, for the float64
    arrays T and base given as bytes. Cached: a model comparison fits one family's base curve again for
    every rival model and held-out size, and the profile depends on the base curve alone."""
    T, base = np.frombuffer(T), np.frombuffer(base)
    problem = _Problem(rank, MODIFICATIONS[0], T, base, np.zeros((0, T.size)), np.zeros(0), link=False)
    return {r: tuple(_base_fits(dataclasses.replace(problem, u0_ratio=r))) for r in U0_RATIOS}


def _least_squares(problem: _Problem, base_only: bool):
    problem, fits, profile = _profiled(problem)
    if base_only:
        return _result(problem, fits[0].x, fits[0].fun, _on_bounds(fits[0]), profile)
    starts = [fit.x for fit in fits[:2]]
    return _result(problem, *_quadratic_if_idle(problem, _joint(problem, starts)), profile)


def _on_bounds(fit) -> tuple[str, ...]:
    return tuple(n for n, active in zip(NAMES, fit.active_mask) if active)


def _quadratic_if_idle(problem: _Problem, fit):
    """(f, residuals, names at a bound) of a joint fit, with lam moved to its upper bound (and named)
    where that moves no fitted point's log excess by more than ``LINK_IDLE``: the link then bends no
    point the data hold, every lam above the largest fitted Q fits the same, and the least squares
    leaves lam wherever it started. The bound is the quadratic limit the data allow
    (``analysis.model_comparison.BOUND_REASONS``)."""
    at_bounds = _on_bounds(fit)
    if not problem.link or "lam" in at_bounds:
        return fit.x, fit.fun, at_bounds
    residual, _ = problem.functions(base_only=False)
    f = fit.x.copy()
    f[5] = np.log(LAM_BOUNDS[1])
    quadratic = residual(f)
    if np.max(np.abs(quadratic - fit.fun)) > LINK_IDLE:
        return fit.x, fit.fun, at_bounds
    return f, quadratic, (*at_bounds, "lam")


def _joint(problem: _Problem, base_starts):
    """The joint least squares from each base start, its ref set on a log grid for each lam start."""
    lower, upper = problem.bounds(base_only=False)
    residual, jacobian = problem.functions(base_only=False)
    lams = (0.1, 1.0, 10.0, LAM_BOUNDS[1]) if problem.link else (None,)
    starts = [ref_start(problem, x, lam) for x, lam in itertools.product(base_starts, lams)]
    return _solve(residual, jacobian, starts, lower, upper)


def ref_start(problem: _Problem, x, lam: float | None) -> np.ndarray:
    """A joint start from base parameters ``x``: log ref at the lowest cost of a log grid (1e-12 ...
    1e12, eighth decades), log lam appended where the problem has the link."""
    lower, upper = problem.bounds(base_only=False)
    residual, _ = problem.functions(base_only=False)
    extra = [] if lam is None else [np.log(lam)]
    log_refs = np.linspace(-12.0, 12.0, 97)
    costs = [float(np.sum(residual(np.concatenate([x, [r], extra])) ** 2)) for r in log_refs]
    return np.clip(np.concatenate([x, [log_refs[int(np.argmin(costs))]], extra]), lower, upper)


def _result(problem: _Problem, f, fun, at_bounds, profile):
    """The fit at parameters ``f`` (residuals ``fun``; ``at_bounds`` the names on a bound): the base
    curve's (4 parameters) or the family's."""
    model = LinearModel(
        float(f[1]),
        float(np.exp(f[2])),
        float(np.exp(f[2]) * problem.u0_ratio),
        float(np.exp(f[0])),
        float(f[3]),
        problem.rank,
        at_bounds,
    )
    y_all = problem.y[: problem.n] if len(f) == 4 else problem.y
    good = goodness(y_all, y_all + fun)
    if len(f) == 4:
        return _BaseResult(model, good)
    lam = float(np.exp(f[5])) if problem.link else None
    return JointFit(model, problem.modification, float(np.exp(f[4])), lam, at_bounds, good, int(y_all.size), profile)


@dataclasses.dataclass(frozen=True)
class _BaseResult:
    model: LinearModel
    base_goodness: Goodness
