"""Measurements along a pre-training trajectory (docs/THEORY.md, "Measurements").

Sharpness is the top eigenvalue of the Hessian of L_A in all weights (power iteration on
Hessian-vector products, no Hessian materialised, or exact from the dense Hessian where it is small);
the trace, plain or sigma-weighted, is exact by one HVP per coordinate (cheap at theory sizes) or
Hutchinson's estimator. The sigma-weighted trace is the curvature the small-noise excess reads: for
noise gamma sigma_k E_k on layer k (E_k iid N(0, 1)),

    E[L(W + gamma sigma E)] - L(W) = (gamma^2 / 2) tr_sigma(H) + O(gamma^4),
    tr_sigma(H) = sum_p sigma_p^2 H_pp,

exactly so for the linear network's L_A, whose gamma^2 term has no higher-order correction
(``perturbation.excess``). The inflection T* is the argmin of a curve over the T grid refined by a
parabola in log T, and ``inflection_kind`` what a curve without one has instead
(``analysis.inflection``, in NumPy).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from analysis.inflection import RTOL
from analysis.inflection import inflection as _inflection
from analysis.inflection import inflection_kind as _inflection_kind
from theory import _checks, _random
from theory.network import Params, task_loss


def _flat_hvp(loss_fn: Callable[[Params], jax.Array], Ws: Params):
    _checks.function("loss_fn", loss_fn)
    Ws = _checks.weights("Ws", Ws)
    flat, unravel = ravel_pytree(Ws)
    grad = jax.grad(lambda x: loss_fn(unravel(x)))
    return flat, lambda v: jax.jvp(grad, (flat,), (v,))[1]


def sharpness(loss_fn, Ws: Params, key: jax.Array | None = None, n_iter: int = 100) -> jax.Array:
    """lambda_max(Hessian of loss_fn at Ws): exact when ``n_iter`` = 0, else by ``n_iter`` steps of
    power iteration on HVPs.

    Exact: the largest eigenvalue of the dense Hessian (``jnp.linalg.eigvalsh``), P^2 entries for P
    weights; the top eigenvalue in the algebraic order, so also away from a minimum, where the
    Hessian has negative eigenvalues (near the saddle at W = 0 it has +-s_i). Power iteration finds
    the eigenvalue of largest modulus; near a minimum of L_A the Hessian is positive semi-definite
    there, so this is the top eigenvalue (the sharpness). Refuses a ``loss_fn`` that cannot be
    called, ``Ws`` that ``_checks.weights`` refuses, n_iter < 0, and, when n_iter > 0, a ``key`` that
    is not a PRNG key.

    Parameters
    ----------
    loss_fn : callable
        Weights -> scalar loss.
    Ws : tuple of arrays
        The weights (W_1, ..., W_L) at which the Hessian is taken.
    key : PRNG key, optional
        Seeds the starting vector of the iteration; required when ``n_iter`` > 0.
    n_iter : int
        0 for the exact eigenvalue, else the number of power-iteration steps.

    Returns
    -------
    scalar array
        The top Hessian eigenvalue, in loss units per squared weight.
    """
    n_iter = _checks.integer("n_iter", n_iter, least=0)
    flat, hvp = _flat_hvp(loss_fn, Ws)
    if n_iter == 0:
        return jnp.linalg.eigvalsh(_dense(hvp, flat))[-1]
    _checks.key_given(key, "power iteration (n_iter > 0) starts from a random vector")
    v = _random.normal(key, flat.shape, flat.dtype)

    def body(_, v):
        w = hvp(v)
        return w / jnp.linalg.norm(w)

    v = jax.lax.fori_loop(0, n_iter, body, v / jnp.linalg.norm(v))
    return v @ hvp(v)


def _dense(hvp, flat):
    """The Hessian as a P x P matrix, one HVP per basis vector (symmetric up to rounding: symmetrised)."""
    H = jax.vmap(hvp)(jnp.eye(flat.size, dtype=flat.dtype))
    return (H + H.T) / 2


def hessian_trace(loss_fn, Ws: Params, key: jax.Array | None = None, n_probes: int = 0, sigmas=None) -> jax.Array:
    """tr(H), or with ``sigmas`` the sigma-weighted tr_sigma(H) = sum_p sigma_p^2 H_pp: exact as
    sum_j sigma_j^2 e_j^T H e_j (one vmapped HVP per weight) when ``n_probes`` = 0, else Hutchinson's
    unbiased estimate mean_k v_k^T H v_k with v = sigma * z, z Rademacher (E[v v^T] = diag(sigma^2)).

    For depth 2, tr H(L_A) = d_in ||W_2||_F^2 + d_out ||W_1||_F^2 exactly, whatever the task. Refuses
    what ``sharpness`` refuses, n_probes < 0, no ``key`` when n_probes > 0, and ``sigmas`` that are
    not one value >= 0 per layer.

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
    sigmas : sequence of float, optional
        sigma_k of each layer, the std its entries are perturbed with (``perturbation.excess``'s
        ``sigmas``); None for the plain trace (every sigma 1).

    Returns
    -------
    scalar array
        tr(H) or tr_sigma(H).
    """
    n_probes = _checks.integer("n_probes", n_probes, least=0)
    flat, hvp = _flat_hvp(loss_fn, Ws)
    scale = jnp.ones_like(flat)
    if sigmas is not None:
        sigmas = _checks.non_negative("sigmas", sigmas, ndim=1)
        _checks.shaped("sigmas", sigmas, (len(Ws),), "one per layer")
        scale = ravel_pytree([jnp.full(jnp.shape(W), s, flat.dtype) for W, s in zip(Ws, sigmas)])[0]
    if n_probes == 0:
        basis = jnp.eye(flat.size, dtype=flat.dtype)
        return jnp.sum(scale**2 * jax.vmap(lambda e: e @ hvp(e))(basis))
    _checks.key_given(key, "Hutchinson's estimator (n_probes > 0) draws Rademacher probes")
    z = scale * jax.random.rademacher(key, (n_probes, flat.size), flat.dtype)
    return jnp.mean(jax.vmap(lambda v: v @ hvp(v))(z))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class CurvatureCurves:
    """The Hessian of L_A at W(T) (leading axis: T): its top eigenvalue and its sigma-weighted trace."""

    top_eigenvalue: jax.Array
    hessian_trace: jax.Array


def curvature_curves(Ws_T: Params, A, sigmas) -> CurvatureCurves:
    """lambda_max(H) and tr_sigma(H) = sum_p sigma_p^2 H_pp of H = Hessian of L_A at each W(T), both
    exact from the dense Hessian (``sharpness`` with n_iter = 0, ``hessian_trace``).
    (gamma^2 / 2) tr_sigma(H) is the gamma^2 term of the Gaussian excess with noise std gamma sigma_k.
    One T at a time (``lax.map``): the dense Hessian has P^2 entries for P weights. Refuses ``Ws_T``
    and ``A`` as ``quantization.quantized_curves`` does and ``sigmas`` that are not one value >= 0 per layer.

    Parameters
    ----------
    Ws_T : tuple of arrays
        The trajectory: layer k of shape (n_t, width_k, width_{k-1}).
    A : array, shape (d_out, d_in)
        The pre-training teacher.
    sigmas : sequence of float
        sigma_k per layer, as ``protocol.simulated_curves`` takes them.

    Returns
    -------
    CurvatureCurves
        Each field of shape (n_t,).
    """
    Ws_T, A = _checks.trajectory(Ws_T, A)

    def at(Ws):
        def loss(W):
            return task_loss(W, A)

        return CurvatureCurves(sharpness(loss, Ws, n_iter=0), hessian_trace(loss, Ws, sigmas=sigmas))

    return jax.lax.map(at, Ws_T)


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
