"""The linear model fitted to a measured base curve (used by ``ovt compare``).

The linear model is the aligned balanced depth-2 network of ``protocol.closed_form_curves`` with a
power-law spectrum s_i = s1 i^(-alpha_s) (i = 1..rank), square widths d = rank and noise std
sigma = 1/sqrt(rank), read on an empirical axis through T_flow = kappa * T and an additive floor E
(the irreducible loss of real data). A modification enters through one reference scale: Gaussian
noise of size gamma is theory noise ``ref * gamma``; fine-tuning of size m = lr x steps is flow time
``ref * m`` toward B = the reversed spectrum (fitted by ``analysis.phenomenology.fit_reference``).
NumPy/SciPy drive the fit; JAX evaluates the model and its Jacobian. No I/O.
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
from theory import _checks, protocol, tasks

MODIFICATIONS = ("gaussian", "finetune")
N_STARTS = 6

# ------------------------------------------------------------------------------------ linear model


@dataclasses.dataclass(frozen=True)
class LinearModel:
    """s_i = s1 i^(-alpha_s), init strength u0, T_flow = kappa * T, floor E, ``rank`` modes."""

    alpha_s: float
    s1: float
    u0: float
    kappa: float
    E: float
    rank: int
    at_bounds: tuple[str, ...] = ()  # parameters the fit left on a bound of its box: not identified

    def __post_init__(self):
        """Refuses s1, u0 or kappa <= 0, alpha_s or E < 0, and a rank that is not an integer >= 1."""
        for name in ("s1", "u0", "kappa"):
            _checks.positive(name, getattr(self, name), ndim=0)
        for name in ("alpha_s", "E"):
            _checks.non_negative(name, getattr(self, name), ndim=0)
        _checks.positive_int("rank", self.rank)

    @property
    def q(self) -> np.ndarray:
        """The fitted coordinates (log kappa, alpha_s, log s1, log u0/s1, E)."""
        return np.array([np.log(self.kappa), self.alpha_s, np.log(self.s1), np.log(self.u0 / self.s1), self.E])

    def curves(self, T, modification: str = "gaussian", sizes=(0.0,)):
        """(E + L_A(kappa T), excess under each theory size): the clean loss on the empirical axis T and
        one excess curve per entry of ``sizes`` (the theory's gamma, or its fine-tuning time tau).
        Refuses a ``T`` that is not times >= 0, an unknown ``modification`` and sizes < 0."""
        _checks.one_of("modification", modification, MODIFICATIONS)
        _checks.non_negative("T", T, ndim=(0, 1))  # checked only: T and sizes are padded in float64
        _checks.non_negative("sizes", sizes, ndim=(0, 1))
        T_pad, n = _padded(T)
        sizes_pad, k = _padded(sizes)
        loss, excess = _batched(self.rank, modification)(jnp.asarray(self.q), T_pad, sizes_pad)
        return np.asarray(loss[0, :n], float), np.asarray(excess[:k, :n], float)


def _padded(x, least: int = 128):
    """``x`` repeated at its end up to a power-of-two length (>= ``least``), and its true length: every
    grid then reuses one of a few compiled shapes instead of compiling its own."""
    x = np.atleast_1d(np.asarray(x, float))
    size = max(least, 1 << (x.size - 1).bit_length())
    return jnp.asarray(np.concatenate([x, np.full(size - x.size, x[-1])])), x.size


def _model(rank: int, modification: str):
    """(q, T, theory size) -> (E + L_A(kappa T), excess), q = (log kappa, alpha_s, log s1, log u0/s1, E)."""
    if modification not in MODIFICATIONS:
        raise ValueError(f"modification={modification!r} is not allowed; choose one of: {', '.join(MODIFICATIONS)}")
    sigma = rank**-0.5

    def model(q, T, size):
        s = tasks.power_law_spectrum(rank, jnp.exp(q[2]), q[1])
        c = protocol.closed_form_curves(
            s,
            tasks.reversed_spectrum(s),
            jnp.exp(q[2] + q[3]),
            jnp.exp(q[0]) * T,
            gamma=size if modification == "gaussian" else 0.0,
            sigma1=sigma,
            sigma2=sigma,
            d_in=rank,
            h=rank,
            d_out=rank,
            tau=size if modification == "finetune" else 0.0,
        )
        excess = c.excess if modification == "gaussian" else c.finetuned_pretrain_loss - c.pretrain_loss
        return q[4] + c.pretrain_loss, excess

    return model


@functools.cache
def _batched(rank: int, modification: str):
    """jit(q, T, sizes) -> the model vmapped over theory sizes."""
    return jax.jit(jax.vmap(_model(rank, modification), in_axes=(None, None, 0)))


@functools.cache
def _log_base(rank: int):
    """jit(q, T) -> log(E + L_A(kappa T)), and its Jacobian in q."""
    model = _model(rank, "gaussian")

    def log_base(q, T):
        return jnp.log(jnp.maximum(model(q, T, 0.0)[0], 1e-30))

    return jax.jit(log_base), jax.jit(jax.jacfwd(log_base))


def fit_linear_model(T, L, rank: int = 32) -> tuple[LinearModel, Goodness]:
    """Fit (alpha_s, s1, u0, kappa, E) so that E + L_A(kappa T) matches the base curve L in log space.

    Bounded least squares (alpha_s in [0.05, 4], u0/s1 in [1e-12, 0.1], E in [0, min L]) from the
    ``N_STARTS`` best of a grid of log-spaced starts: alpha_s in {0.5, 1, 2}, u0/s1 in {1e-6, 1e-3},
    E in {0, min L / 2}, s1 from the loss drop, kappa placing the first mode's learning time at the
    first or the middle T. Refuses T and L that are not 1-d arrays of one length with T > 0 (and what
    follows), and a rank that is not an integer >= 1.

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
    _checks.same_shape("T", _checks.positive("T", T, ndim=1), "L", _checks.floats("L", L, ndim=1))
    rank = _checks.positive_int("rank", rank)
    T, L = np.asarray(T, float), np.asarray(L, float)
    if np.unique(T).size < 3 or np.any(L <= 0):
        raise ValueError(f"a linear-model fit needs >= 3 distinct T and L > 0; got T={np.unique(T).tolist()}")
    residual_of, jacobian_of = _log_base(rank)
    y, e_max = np.log(L), float(L.min())
    T_pad, n = _padded(T)

    def residual(q):
        return np.asarray(residual_of(jnp.asarray(q), T_pad), float)[:n] - y

    def jacobian(q):
        return np.asarray(jacobian_of(jnp.asarray(q), T_pad), float)[:n]

    t_lo, t_mid = float(T.min()), float(np.exp(np.mean(np.log(T))))
    lower = [np.log(1e-12 / T.max()), 0.05, np.log(1e-4 * np.sqrt(e_max)), np.log(1e-12), 0.0]
    upper = [np.log(1e12 / t_lo), 4.0, np.log(1e4 * np.sqrt(L.max())), np.log(0.1), e_max]
    starts = []
    grid = itertools.product((0.5, 1.0, 2.0), (1e-6, 1e-3), (0.0, 0.5 * e_max), (t_lo, t_mid))
    for alpha_s, ratio, E, t_first in grid:
        norm = float(np.sum(np.arange(1, rank + 1, dtype=float) ** (-2 * alpha_s)))
        s1 = np.sqrt(2 * max(L.max() - E, 1e-6 * L.max()) / norm)
        kappa = np.log(1 / ratio) / (2 * s1) / t_first  # mode 1 learned at t_first
        starts.append(np.clip([np.log(kappa), alpha_s, np.log(s1), np.log(ratio), E], lower, upper))
    # Least squares from the N_STARTS starts that already fit best: the others rarely win and cost most.
    starts.sort(key=lambda q0: float(np.sum(residual(q0) ** 2)))
    best = None
    for q0 in starts[:N_STARTS]:
        fit = optimize.least_squares(residual, q0, jac=jacobian, bounds=(lower, upper), x_scale="jac", max_nfev=200)
        if best is None or fit.cost < best.cost:
            best = fit
    log_kappa, alpha_s, log_s1, log_ratio, E = best.x
    names = ("kappa", "alpha_s", "s1", "u0/s1", "E")
    at_bounds = tuple(n for n, active in zip(names, best.active_mask) if active)
    model = LinearModel(
        float(alpha_s),
        float(np.exp(log_s1)),
        float(np.exp(log_s1 + log_ratio)),
        float(np.exp(log_kappa)),
        float(E),
        rank,
        at_bounds,
    )
    return model, goodness(y, y + best.fun)
