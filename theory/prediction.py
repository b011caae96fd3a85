"""Analytic prediction of the Gaussian inflection T* in the aligned depth-2 model (docs/THEORY.md,
"Predicting T*").

Along the aligned balanced trajectory ||W_1||^2 = ||W_2||^2 = sum_i u_i(T), so the expected
perturbed loss is a sum over modes (``perturbation.excess_from_norms``):

    E L_A(W~(T)) = sum_i [ (s_i - u_i)^2 / 2 + c gamma^2 u_i ] + const,   c = (d_out sigma_2^2 + d_in sigma_1^2) / 2.

Learning mode i fully (u_i: 0 -> s_i) changes it by s_i (c gamma^2 - s_i / 2): a net benefit iff
s_i > 2 c gamma^2 (``perturbation.harm_threshold``). Modes are learned one after another, mode i
around its half-time t_i = ln(s_i/u0 - 1) / (2 s_i) (``closed_form.learning_time``), so the perturbed
loss falls while the net-beneficial modes are learned and rises once the harmful ones are:

    T*_pred(gamma) = t_k,   k = the last mode (in learning order) with s_k >= 2 c gamma^2.

It is NaN when no mode is beneficial (the loss rises from the start) and +inf when every mode is (it
never rises). On the default setup (s_i = 1/i, d = 32, sigma = 1/sqrt(32), u0 = 1e-6) it lands within
9% of the exact T* for gamma = 0.15 ... 0.6 (``tests/theory/test_prediction.py`` measures it); the
error is largest where the last beneficial mode is barely so (s_k just above the threshold), because
the next, harmful mode starts rising before mode k is half learned.

Fine-tuning has no such closed form: the post-fine-tuning L_A mixes every mode's logistic law toward
B over time tau with its pre-training strength, and its minimum over T is not one mode's learning
time (no prediction is offered there).
"""

from __future__ import annotations

import jax.numpy as jnp

from theory import _checks
from theory.closed_form import learning_time
from theory.perturbation import harm_threshold


def gaussian_t_star(s, u0, gamma, sigma1, sigma2, d_in: int, d_out: int):
    """T*_pred: the half-time of the slowest-learned mode whose s_i >= 2 c gamma^2 (module docstring).

    ``s``: the task's singular values (one axis, any order); the result has ``gamma``'s shape. Refuses
    an ``s`` that is not a non-empty 1-d array of values > 0, a non-scalar u0 or one <= 0, and what
    ``perturbation.harm_threshold`` refuses (gamma, sigma1, sigma2 < 0; widths not integers >= 1).

    Parameters
    ----------
    s : array, shape (r,)
        The task's singular values (> 0).
    u0 : float
        Initial strength of every mode (> 0).
    gamma : float or array
        Noise size, in units of the per-layer std (>= 0).
    sigma1, sigma2 : float
        Per-entry noise std of the first and second layer at gamma = 1 (>= 0).
    d_in, d_out : int
        Input and output widths (>= 1).

    Returns
    -------
    array
        T*_pred in flow time, in gamma's shape: NaN when no mode is beneficial, +inf when every mode is.
    """
    s = jnp.asarray(_checks.positive("s", s, ndim=1))
    u0 = _checks.positive("u0", u0, ndim=0)
    beneficial = s >= harm_threshold(jnp.asarray(gamma), sigma1, sigma2, d_in, d_out)[..., None]
    times = jnp.where(beneficial, learning_time(s, u0), -jnp.inf)
    last = jnp.max(times, axis=-1)  # the slowest beneficial mode: smallest beneficial s
    return jnp.where(~jnp.any(beneficial, axis=-1), jnp.nan, jnp.where(jnp.all(beneficial, axis=-1), jnp.inf, last))
