"""From the linear model's quadratic excess to a softmax model's log-loss excess (docs/THEORY.md, "The
link to log-loss").

A softmax model with logits z and predicted distribution p = softmax(z), its logits moved by noise
eps, pays the cross-entropy excess (for the label y)

    CE(z + eps) - CE(z) = -eps_y + log sum_k p_k exp(eps_k).

For eps_k iid N(0, v) (weight noise on a softmax regression is exactly that: G x with G iid) the
expectation does not depend on y:

    Phi(v; p) = E log sum_k p_k exp(eps_k)          (exact)
              = (v / 2) (1 - sum_k p_k^2) + O(v^2)  (small v: quadratic in the noise size)

For p uniform over K = e^lam classes, as K grows with v / lam fixed, Phi tends to the random energy
model's free energy (Derrida 1981):

    Phi_lam(v) = v / 2                     for v <= 2 lam,
               = sqrt(2 v lam) - lam       beyond              (continuous with its slope at 2 lam)

quadratic in the noise size below the threshold and linear in it (sqrt v) above. To second order in
the noise every loss pays (gamma^2 / 2) tr_sigma H (the small-noise identity), so the linear model's
quadratic excess Q, fitted in nats, is the log-loss excess there: Phi'(0) = 1/2 gives v = 2 Q, and the
link maps Q to ``rem_excess(2 Q, lam)`` with one parameter lam, the log-number of tokens that compete
with the model's choice. No I/O.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from theory import _checks, _random


def rem_excess(v, lam):
    """Phi_lam(v): v/2 for v <= 2 lam, sqrt(2 v lam) - lam beyond (module docstring). Works under jit
    and grad (the branch not taken is kept finite). Refuses, where concrete, v < 0 and lam <= 0.

    Parameters
    ----------
    v : float or array
        Variance of the noise on each logit (>= 0).
    lam : float or array
        Log-number of competing classes, ln K (> 0).

    Returns
    -------
    array
        The expected log-loss excess, in nats.
    """
    v, lam = jnp.asarray(_checks.non_negative("v", v)), jnp.asarray(_checks.positive("lam", lam))
    saturated = jnp.sqrt(2 * jnp.maximum(v, 2 * lam) * lam) - lam
    return jnp.where(v <= 2 * lam, v / 2, saturated)


def linked_excess(Q, lam):
    """The log-loss excess of the linear model's excess ``Q``: ``rem_excess(2 Q, lam)``, i.e. Q for
    Q <= lam and 2 sqrt(Q lam) - lam beyond. The factor 2 makes the link the identity to second order
    in the noise, as the small-noise identity requires (both excesses are (gamma^2 / 2) tr_sigma H
    there); it departs from Q where a softmax saturates. A negative Q (fine-tuning that lowers the
    loss) is in the identity's range and passes unchanged.

    Parameters
    ----------
    Q : float or array
        The linear model's excess, in nats on the fitted axis.
    lam : float
        Log-number of competing classes (> 0).
    """
    Q = jnp.asarray(_checks.floats("Q", Q))
    return jnp.where(Q < 0, Q, rem_excess(2 * jnp.maximum(Q, 0.0), lam))


def logit_noise_excess(p, v, n_draws: int = 4096, key=None) -> tuple[float, float]:
    """Monte-Carlo of Phi(v; p) = E log sum_k p_k exp(eps_k), eps_k iid N(0, v): its mean over
    ``n_draws`` draws and the standard error of that mean. Refuses a ``p`` that is not a probability
    vector, v < 0 and n_draws < 2.

    Parameters
    ----------
    p : array, shape (K,)
        A predicted distribution (entries >= 0, summing to 1).
    v : float
        Variance of the noise on each logit (>= 0).
    n_draws : int
        Noise draws (>= 2).
    key : jax key, optional
        Seeds the draws (default key 0).

    Returns
    -------
    (float, float)
        The estimate and its standard error, in nats.
    """
    p = np.asarray(_checks.non_negative("p", p, ndim=1), float)
    if abs(p.sum() - 1) > 1e-6:
        raise ValueError(f"p sums to {p.sum():.6g}; a predicted distribution sums to 1")
    v = float(_checks.non_negative("v", v, ndim=0))
    n_draws = _checks.positive_int("n_draws", n_draws)
    if n_draws < 2:
        raise ValueError(f"n_draws={n_draws} must be >= 2 for a standard error")
    key = jax.random.key(0) if key is None else key
    eps = np.sqrt(v) * np.asarray(_random.normal(key, (n_draws, p.size)), float)
    keep = p > 0
    values = _log_sum_exp(eps[:, keep] + np.log(p[keep]))
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(n_draws))


def _log_sum_exp(x: np.ndarray) -> np.ndarray:
    top = x.max(axis=-1)
    return top + np.log(np.exp(x - top[..., None]).sum(axis=-1))
