"""Measurements along a pre-training trajectory (docs/THEORY.md, "Measurements").

Sharpness is the top eigenvalue of the Hessian of L_A in all weights (power iteration on
Hessian-vector products, no Hessian materialised); the trace is exact by one HVP per coordinate
(cheap at theory sizes) or Hutchinson's estimator; the inflection T* is the argmin of a curve over
the T grid refined by a parabola in log T, and ``inflection_kind`` what a curve without one has
instead (``analysis.inflection``, in NumPy).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from analysis.inflection import RTOL
from analysis.inflection import inflection as _inflection
from analysis.inflection import inflection_kind as _inflection_kind
from theory import _checks, _random
from theory.network import Params


def _flat_hvp(loss_fn: Callable[[Params], jax.Array], Ws: Params):
    _checks.function("loss_fn", loss_fn)
    Ws = _checks.weights("Ws", Ws)
    flat, unravel = ravel_pytree(Ws)
    grad = jax.grad(lambda x: loss_fn(unravel(x)))
    return flat, lambda v: jax.jvp(grad, (flat,), (v,))[1]


def sharpness(loss_fn, Ws: Params, key: jax.Array, n_iter: int = 100) -> jax.Array:
    """lambda_max(Hessian of loss_fn at Ws) by ``n_iter`` steps of power iteration on HVPs.

    Power iteration finds the eigenvalue of largest modulus; near a minimum of L_A the Hessian is
    positive semi-definite there, so this is the top eigenvalue (the sharpness). Refuses a ``loss_fn``
    that cannot be called, ``Ws`` that ``_checks.weights`` refuses, a ``key`` that is not a PRNG key,
    and n_iter < 1.

    Parameters
    ----------
    loss_fn : callable
        Weights -> scalar loss.
    Ws : tuple of arrays
        The weights (W_1, ..., W_L) at which the Hessian is taken.
    key : PRNG key
        Seeds the starting vector of the iteration.
    n_iter : int
        Number of power-iteration steps (>= 1).

    Returns
    -------
    scalar array
        The top Hessian eigenvalue, in loss units per squared weight.
    """
    n_iter = _checks.positive_int("n_iter", n_iter)
    _checks.prng_key("key", key)
    flat, hvp = _flat_hvp(loss_fn, Ws)
    v = _random.normal(key, flat.shape, flat.dtype)

    def body(_, v):
        w = hvp(v)
        return w / jnp.linalg.norm(w)

    v = jax.lax.fori_loop(0, n_iter, body, v / jnp.linalg.norm(v))
    return v @ hvp(v)


def hessian_trace(loss_fn, Ws: Params, key: jax.Array | None = None, n_probes: int = 0) -> jax.Array:
    """tr(H): exact as sum_j e_j^T H e_j (one vmapped HVP per weight) when ``n_probes`` = 0, else
    Hutchinson's unbiased estimate mean_k z_k^T H z_k with Rademacher z_k.

    For depth 2, tr H(L_A) = d_in ||W_2||_F^2 + d_out ||W_1||_F^2 exactly, whatever the task. Refuses
    what ``sharpness`` refuses, n_probes < 0, and no ``key`` when n_probes > 0.

    Parameters
    ----------
    loss_fn : callable
        Weights -> scalar loss.
    Ws : tuple of arrays
        The weights (W_1, ..., W_L) at which the Hessian is taken.
    key : PRNG key, optional
        Seeds the Rademacher probes; required when ``n_probes`` > 0.
    n_probes : int
        0 for the exact trace, else the number of Hutchinson probes.

    Returns
    -------
    scalar array
        tr(H).
    """
    n_probes = _checks.integer("n_probes", n_probes, least=0)
    flat, hvp = _flat_hvp(loss_fn, Ws)
    if n_probes == 0:
        basis = jnp.eye(flat.size, dtype=flat.dtype)
        return jnp.sum(jax.vmap(lambda e: e @ hvp(e))(basis))
    _checks.key_given(key, "Hutchinson's estimator (n_probes > 0) draws Rademacher probes")
    z = jax.random.rademacher(key, (n_probes, flat.size), flat.dtype)
    return jnp.mean(jax.vmap(lambda v: v @ hvp(v))(z))


def _numpy_inputs(T, values):
    """Concrete NumPy copies of ``T`` and ``values`` and the float dtype JAX gives them. Refuses a ``T``
    that is not a 1-d array of finite times > 0 in ascending order, and ``values`` that are not numbers
    with at least one axis (NaN and inf pass: a diverged run)."""
    _checks.ordered("T", _checks.positive("T", T, ndim=1))
    if np.ndim(_checks.numeric("values", values)) == 0:
        raise ValueError("values must have at least one axis (the T grid's)")
    T, values = np.asarray(jnp.asarray(T)), np.asarray(jnp.asarray(values))
    dtype = np.result_type(T, values)
    if not np.issubdtype(dtype, np.floating):
        dtype = jnp.result_type(float)  # JAX's default float
    return T, values, dtype


def inflection(T, values, rtol: float = RTOL, **tolerances) -> jax.Array:
    """T* = argmin over the grid of ``values``(T), refined by the vertex of a parabola through the
    minimum and its two neighbours in log T, where the minimum is an inflection (``inflection_kind``
    "interior"); NaN ("none in range") when the minimum is at an end of the grid, or when the curve
    does not rise after it by more than ``rtol`` times the minimum and the other tolerances of
    ``analysis.inflection`` (``rise_fraction``, ``spread``: a curve that only levels off, up to
    rounding or Monte-Carlo noise, has no inflection). Works on the last axis, so a batch of curves
    gives a batch of T*.

    ``analysis.inflection`` computes it, in NumPy on concrete arrays (not under jit), in the float
    dtype JAX gives the inputs (float32 unless x64 is enabled).

    Parameters
    ----------
    T : array, shape (n_t,)
        The pre-training grid (> 0, ascending): flow time or tokens.
    values : array, shape (..., n_t)
        The curves over T (a loss, perturbed or after fine-tuning).
    rtol : float
        The rise after the minimum, relative to the minimum, below which a curve has no inflection.
    **tolerances
        ``rise_fraction`` and ``spread``, passed to ``analysis.inflection.inflection``.

    Returns
    -------
    array, shape (...)
        T* per curve, in T's units; NaN where there is none in range.
    """
    T, values, dtype = _numpy_inputs(T, values)
    return jnp.asarray(_inflection(T, values, rtol, dtype=dtype, **tolerances))


def inflection_kind(T, values, rtol: float = RTOL, **tolerances) -> np.ndarray:
    """What each curve's minimum is (``analysis.inflection.KINDS``: "interior", "flat", "below",
    "above", "none"), judged as ``inflection`` judges it, in the same dtype; a NumPy string array.

    Parameters
    ----------
    T : array, shape (n_t,)
        The pre-training grid (> 0, ascending).
    values : array, shape (..., n_t)
        The curves over T.
    rtol : float
        As in ``inflection``.
    **tolerances
        As in ``inflection``.

    Returns
    -------
    numpy array of str, shape (...)
        The kind of each curve's minimum.
    """
    T, values, dtype = _numpy_inputs(T, values)
    return _inflection_kind(T, values, rtol, dtype=dtype, **tolerances)
