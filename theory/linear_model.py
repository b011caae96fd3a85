"""The linear model read on a measured axis (fitted by ``theory.linear_fit``, used by ``ovt compare``).

The linear model is the aligned balanced depth-2 network of ``protocol.closed_form_curves`` with a
power-law spectrum s_i = s1 i^(-alpha_s) (i = 1..rank), square widths d = rank and noise std
sigma = 1/sqrt(rank), read on an empirical axis through T_flow = kappa * T and an additive floor E
(the irreducible loss of real data). A modification enters through one reference scale: Gaussian
noise of size gamma is theory noise ``ref * gamma``; fine-tuning of size m = lr x steps is flow time
``ref * m`` toward B = the reversed spectrum. JAX evaluates the model; no I/O.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

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
    at_bounds: tuple[str, ...] = ()  # left on a bound of the fit's box (model_comparison.BOUND_REASONS)

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
