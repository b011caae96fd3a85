"""Depth-L linear networks M(W) = W_L ... W_2 W_1 (docs/THEORY.md, "Parameterisation and initialisation").

Parameters are a tuple ``Ws = (W_1, ..., W_L)`` with W_k of shape (width_k, width_{k-1}); widths are
``(d_in, h, ..., h, d_out)``. Tuples are pytrees, so every optax optimiser and ``vmap`` applies as is.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from theory import _checks, _random

Params = tuple[jax.Array, ...]


def widths(d_in: int, h: int, d_out: int, depth: int = 2) -> tuple[int, ...]:
    """(d_in, h, ..., h, d_out) with depth - 1 hidden layers of width h (depth 1: (d_in, d_out))."""
    for name, v in (("d_in", d_in), ("h", h), ("d_out", d_out), ("depth", depth)):
        _checks.positive_int(name, v)
    return (d_in,) + (h,) * (depth - 1) + (d_out,)


def end_to_end(Ws: Sequence[jax.Array]) -> jax.Array:
    """M = W_L ... W_1."""
    M = Ws[0]
    for W in Ws[1:]:
        M = W @ M
    return M


def task_loss(Ws: Sequence[jax.Array], A: jax.Array) -> jax.Array:
    """Population loss under whitened inputs: L(W) = 1/2 ||M(W) - A||_F^2."""
    return 0.5 * jnp.sum((end_to_end(Ws) - A) ** 2)


def sample_loss(Ws: Sequence[jax.Array], X: jax.Array, Y: jax.Array) -> jax.Array:
    """Empirical loss 1/(2n) sum_j ||M x_j - y_j||^2 (equals task_loss in expectation, + noise)."""
    return 0.5 * jnp.mean(jnp.sum((X @ end_to_end(Ws).T - Y) ** 2, axis=-1))


def init_gaussian(key: jax.Array, widths: Sequence[int], sigmas) -> Params:
    """W_k ~ N(0, sigma_k^2) entrywise; ``sigmas`` is one std for all layers or one per layer.

    sigma_k << 1 puts the network in the incremental ("rich") regime.
    """
    L = len(widths) - 1
    sigmas = jnp.broadcast_to(jnp.asarray(sigmas, dtype=jnp.result_type(float)), (L,))
    _checks.positive("sigmas", sigmas)
    keys = jax.random.split(key, L)
    return tuple(sigmas[k] * _random.normal(keys[k], (widths[k + 1], widths[k])) for k in range(L))


def init_aligned_balanced(U: jax.Array, V: jax.Array, u0, h: int, depth: int = 2, imbalance: float = 0.0) -> Params:
    """Aligned balanced init: every mode starts at end-to-end strength u0 and the flow decouples by mode.

    Depth 2: W_1 = R diag(sqrt(u0)) V^T, W_2 = U diag(sqrt(u0)) R^T, R the first r columns of I_h.
    Depth L: each layer carries a = u0^(1/L) per mode. ``imbalance`` = delta scales layer k by
    exp(delta * (k - (L+1)/2)) (product unchanged); delta != 0 makes W_2^T W_2 - W_1 W_1^T != 0.
    """
    _checks.positive_int("h", h)
    _checks.positive_int("depth", depth)
    r = U.shape[1]
    if r > h:
        raise ValueError(f"h={h} must be >= the task rank {r} for an aligned init")
    u0 = jnp.broadcast_to(jnp.asarray(u0, U.dtype), (r,))
    _checks.positive("u0", u0)
    a = u0 ** (1.0 / depth)
    R = jnp.eye(h, r, dtype=U.dtype)
    if depth == 1:
        return ((U * u0) @ V.T,)
    scale = [jnp.exp(imbalance * (k - (depth - 1) / 2)) for k in range(depth)]
    Ws = [scale[0] * (R * a) @ V.T]
    Ws += [scale[k] * (R * a) @ R.T for k in range(1, depth - 1)]
    Ws += [scale[-1] * (U * a) @ R.T]
    return tuple(Ws)


def layer_norms_sq(Ws: Sequence[jax.Array]) -> jax.Array:
    """||W_k||_F^2 for each layer."""
    return jnp.stack([jnp.sum(W**2) for W in Ws])


def mode_strengths(Ws: Sequence[jax.Array], U: jax.Array, V: jax.Array) -> jax.Array:
    """u_i = U_i^T M V_i: the end-to-end strength along each teacher mode (equals sigma_i(M) when aligned)."""
    return jnp.einsum("oi,oj,ji->i", U, end_to_end(Ws), V)
