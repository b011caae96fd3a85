"""Measurements along a pre-training trajectory (docs/THEORY.md, "Measurements").

Sharpness is the top eigenvalue of the Hessian of L_A in all weights (power iteration on
Hessian-vector products, no Hessian materialised); the trace is exact by one HVP per coordinate
(cheap at theory sizes) or Hutchinson's estimator; the inflection T* is the argmin of a curve over
the T grid refined by a parabola in log T.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from theory import _checks, _random
from theory.network import Params


def _flat_hvp(loss_fn: Callable[[Params], jax.Array], Ws: Params):
    flat, unravel = ravel_pytree(Ws)
    grad = jax.grad(lambda x: loss_fn(unravel(x)))
    return flat, lambda v: jax.jvp(grad, (flat,), (v,))[1]


def sharpness(loss_fn, Ws: Params, key: jax.Array, n_iter: int = 100) -> jax.Array:
    """lambda_max(Hessian of loss_fn at Ws) by ``n_iter`` steps of power iteration on HVPs.

    Power iteration finds the eigenvalue of largest modulus; near a minimum of L_A the Hessian is
    positive semi-definite there, so this is the top eigenvalue (the sharpness).
    """
    _checks.positive_int("n_iter", n_iter)
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

    For depth 2, tr H(L_A) = d_in ||W_2||_F^2 + d_out ||W_1||_F^2 exactly, whatever the task.
    """
    flat, hvp = _flat_hvp(loss_fn, Ws)
    if n_probes == 0:
        basis = jnp.eye(flat.size, dtype=flat.dtype)
        return jnp.sum(jax.vmap(lambda e: e @ hvp(e))(basis))
    _checks.positive_int("n_probes", n_probes)
    _checks.key_given(key, "Hutchinson's estimator (n_probes > 0) draws Rademacher probes")
    z = jax.random.rademacher(key, (n_probes, flat.size), flat.dtype)
    return jnp.mean(jax.vmap(lambda v: v @ hvp(v))(z))


def inflection(T, values, rtol: float = 1e-4) -> jax.Array:
    """T* = argmin over the grid of ``values``(T), refined by the vertex of a parabola through the
    minimum and its two neighbours in log T; NaN ("none in range") when the minimum is at an end of
    the grid, or when the curve does not rise after it by more than ``rtol`` times the minimum (a
    curve that only levels off, up to rounding or Monte-Carlo noise, has no inflection). Works on the
    last axis, so a batch of curves gives a batch of T*.
    """
    T = jnp.asarray(T)
    values = jnp.asarray(values)
    if T.ndim != 1 or T.shape[0] != values.shape[-1]:
        raise ValueError(f"T has shape {T.shape}; values must end in an axis of the same length, got {values.shape}")
    if T.shape[0] < 3:
        raise ValueError(f"T has {T.shape[0]} points; an inflection needs at least 3")
    _checks.non_negative("rtol", rtol)
    x = jnp.log(T)
    finite = jnp.where(jnp.isfinite(values), values, jnp.inf)
    i = jnp.argmin(finite, axis=-1)
    j = jnp.clip(i, 1, T.shape[0] - 2)

    def take(a, k):
        return jnp.take_along_axis(a, k[..., None], axis=-1)[..., 0]

    y0, y1, y2 = take(values, j - 1), take(values, j), take(values, j + 1)
    x0, x1, x2 = x[j - 1], x[j], x[j + 1]
    # Vertex of the parabola through three points (unequal spacing allowed).
    num = (x1 - x0) ** 2 * (y1 - y2) - (x1 - x2) ** 2 * (y1 - y0)
    den = (x1 - x0) * (y1 - y2) - (x1 - x2) * (y1 - y0)
    vertex = x1 - 0.5 * num / jnp.where(den == 0, 1.0, den)
    vertex = jnp.where(den == 0, x1, jnp.clip(vertex, x0, x2))
    y_min = take(finite, i)
    after = jnp.arange(T.shape[0]) > i[..., None]
    late_rise = jnp.max(jnp.where(after & jnp.isfinite(values), values, -jnp.inf), axis=-1) - y_min
    interior = (i > 0) & (i < T.shape[0] - 1) & (late_rise > rtol * jnp.abs(y_min))
    return jnp.where(interior, jnp.exp(vertex), jnp.nan)
