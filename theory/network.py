"""Depth-L linear networks M(W) = W_L ... W_2 W_1 (docs/THEORY.md, "Parameterisation and initialisation").

Parameters are a tuple ``Ws = (W_1, ..., W_L)`` with W_k of shape (width_k, width_{k-1}); widths are
``(d_in, h, ..., h, d_out)``. Tuples are pytrees, so every optax optimiser and ``vmap`` applies as is.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from theory import _checks, _random

Params = tuple[jax.Array, ...]


def widths(d_in: int, h: int, d_out: int, depth: int = 2) -> tuple[int, ...]:
    """(d_in, h, ..., h, d_out) with depth - 1 hidden layers of width h (depth 1: (d_in, d_out)).
    Refuses any of them that is not an integer >= 1.

    Parameters
    ----------
    d_in, h, d_out : int
        Input, hidden and output widths (>= 1).
    depth : int
        Number of layers L (>= 1).

    Returns
    -------
    tuple of int
        The L + 1 widths, input first.
    """
    d_in, h, d_out, depth = (
        _checks.positive_int(n, v) for n, v in (("d_in", d_in), ("h", h), ("d_out", d_out), ("depth", depth))
    )
    return (d_in,) + (h,) * (depth - 1) + (d_out,)


def end_to_end(Ws: Sequence[jax.Array]) -> jax.Array:
    """M = W_L ... W_1. Refuses ``Ws`` that ``_checks.weights`` refuses (not finite matrices that chain).

    Parameters
    ----------
    Ws : sequence of arrays
        (W_1, ..., W_L), W_k of shape (width_k, width_{k-1}).

    Returns
    -------
    array, shape (d_out, d_in)
        M, the network's end-to-end map.
    """
    Ws = _checks.weights("Ws", Ws)
    M = Ws[0]
    for W in Ws[1:]:
        M = W @ M
    return M


def task_loss(Ws: Sequence[jax.Array], A: jax.Array) -> jax.Array:
    """Population loss under whitened inputs: L(W) = 1/2 ||M(W) - A||_F^2. Refuses ``Ws`` as
    ``end_to_end`` does and an ``A`` that is not a finite matrix of M's shape.

    Parameters
    ----------
    Ws : sequence of arrays
        (W_1, ..., W_L), W_k of shape (width_k, width_{k-1}).
    A : array, shape (d_out, d_in)
        The teacher matrix.

    Returns
    -------
    scalar array
        L(W).
    """
    M = end_to_end(Ws)
    return 0.5 * jnp.sum((M - _target("A", A, M)) ** 2)


def sample_loss(Ws: Sequence[jax.Array], X: jax.Array, Y: jax.Array) -> jax.Array:
    """Empirical loss 1/(2n) sum_j ||M x_j - y_j||^2 (equals task_loss in expectation, + noise).
    Refuses ``Ws`` as ``end_to_end`` does, and an X (n x d_in) or Y (n x d_out) of other shapes.

    Parameters
    ----------
    Ws : sequence of arrays
        (W_1, ..., W_L), W_k of shape (width_k, width_{k-1}).
    X : array, shape (n, d_in)
        Inputs, one sample a row.
    Y : array, shape (n, d_out)
        Targets, one sample a row.

    Returns
    -------
    scalar array
        The mean squared error over the n samples, halved.
    """
    M = end_to_end(Ws)
    X, Y = _samples(X, Y, M)
    return 0.5 * jnp.mean(jnp.sum((X @ M.T - Y) ** 2, axis=-1))


def _target(name: str, A, M):
    """``A`` as floats of the end-to-end map's shape (d_out x d_in)."""
    A = _checks.floats(name, A, ndim=2)
    _checks.shaped(name, A, M.shape, "d_out x d_in of the network")
    return A


def _samples(X, Y, M):
    """(X, Y) as floats: n inputs (n x d_in) and their n targets (n x d_out) for the map M (d_out x d_in);
    refuses other shapes, and values ``_checks.floats`` refuses."""
    X, Y = _checks.floats("X", X, ndim=2), _checks.floats("Y", Y, ndim=2)
    _checks.shaped("X", X, (X.shape[0], M.shape[1]), "n x d_in")
    _checks.shaped("Y", Y, (X.shape[0], M.shape[0]), "n x d_out, one row per row of X")
    return X, Y


def init_gaussian(key: jax.Array, widths: Sequence[int], sigmas) -> Params:
    """W_k ~ N(0, sigma_k^2) entrywise; ``sigmas`` is one std for all layers or one per layer.

    sigma_k << 1 puts the network in the incremental ("rich") regime. Refuses a ``key`` that is not a
    PRNG key, ``widths`` that are not two or more integers >= 1, and ``sigmas`` that are not > 0 or
    neither one value nor one per layer.

    Parameters
    ----------
    key : PRNG key
        Seeds the draw.
    widths : sequence of int
        (d_in, h, ..., d_out), as ``widths`` returns.
    sigmas : float or sequence of float
        Entry std (> 0): one for every layer, or one per layer.

    Returns
    -------
    tuple of arrays
        (W_1, ..., W_L), W_k of shape (widths[k], widths[k-1]).
    """
    _checks.prng_key("key", key)
    if not isinstance(widths, (tuple, list)) or len(widths) < 2:
        raise ValueError(f"widths={widths!r} must be a tuple of two or more layer widths (d_in, ..., d_out)")
    widths = [_checks.positive_int(f"widths[{k}]", w) for k, w in enumerate(widths)]
    L = len(widths) - 1
    sigmas = _checks.positive("sigmas", sigmas, ndim=(0, 1))
    _checks.broadcast(sigmas=sigmas, layers=np.empty(L))
    sigmas = jnp.broadcast_to(jnp.asarray(sigmas, dtype=jnp.result_type(float)), (L,))
    keys = jax.random.split(key, L)
    return tuple(sigmas[k] * _random.normal(keys[k], (widths[k + 1], widths[k])) for k in range(L))


def init_aligned_balanced(U: jax.Array, V: jax.Array, u0, h: int, depth: int = 2, imbalance: float = 0.0) -> Params:
    """Aligned balanced init: every mode starts at end-to-end strength u0 and the flow decouples by mode.

    Depth 2: W_1 = R diag(sqrt(u0)) V^T, W_2 = U diag(sqrt(u0)) R^T, R the first r columns of I_h.
    Depth L: each layer carries a = u0^(1/L) per mode. ``imbalance`` = delta scales layer k by
    exp(delta * (k - (L+1)/2)) (product unchanged); delta != 0 makes W_2^T W_2 - W_1 W_1^T != 0.
    Refuses U, V that are not finite matrices with the same number r of columns, h < r, depth < 1, a
    ``u0`` that is not > 0 or neither one value nor one per mode, and a non-finite ``imbalance``.

    Parameters
    ----------
    U : array, shape (d_out, r)
        The teacher's left singular vectors (orthonormal columns).
    V : array, shape (d_in, r)
        The teacher's right singular vectors (orthonormal columns).
    u0 : float or array, shape (r,)
        Initial end-to-end strength (> 0): one for every mode, or one per mode.
    h : int
        Hidden width (>= r).
    depth : int
        Number of layers L (>= 1).
    imbalance : float
        delta, the log-scale tilt across layers (0 = balanced).

    Returns
    -------
    tuple of arrays
        (W_1, ..., W_L): W_1 of shape (h, d_in), hidden layers (h, h), W_L of shape (d_out, h).
    """
    U, V = _checks.floats("U", U, ndim=2), _checks.floats("V", V, ndim=2)
    _checks.shaped("V", V, (V.shape[0], U.shape[1]), "d_in x r, r the columns of U")
    h, depth = _checks.positive_int("h", h), _checks.positive_int("depth", depth)
    imbalance = _checks.floats("imbalance", imbalance, ndim=0)
    r = U.shape[1]
    if r > h:
        raise ValueError(f"h={h} must be >= the task rank {r} for an aligned init")
    u0 = _checks.positive("u0", u0, ndim=(0, 1))
    _checks.broadcast(u0=u0, modes=np.empty(r))
    u0 = jnp.broadcast_to(jnp.asarray(u0, U.dtype), (r,))
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
    """||W_k||_F^2 for each layer. Refuses ``Ws`` as ``end_to_end`` does.

    Parameters
    ----------
    Ws : sequence of arrays
        (W_1, ..., W_L).

    Returns
    -------
    array, shape (L,)
        The squared Frobenius norm of each layer.
    """
    Ws = _checks.weights("Ws", Ws)
    return jnp.stack([jnp.sum(W**2) for W in Ws])


def mode_strengths(Ws: Sequence[jax.Array], U: jax.Array, V: jax.Array) -> jax.Array:
    """u_i = U_i^T M V_i: the end-to-end strength along each teacher mode (equals sigma_i(M) when aligned).
    Refuses ``Ws`` as ``end_to_end`` does, and U (d_out x r), V (d_in x r) of other shapes.

    Parameters
    ----------
    Ws : sequence of arrays
        (W_1, ..., W_L), chaining from d_in to d_out.
    U : array, shape (d_out, r)
        The teacher's left singular vectors.
    V : array, shape (d_in, r)
        The teacher's right singular vectors.

    Returns
    -------
    array, shape (r,)
        u_i for each mode.
    """
    M = end_to_end(Ws)
    U, V = _checks.floats("U", U, ndim=2), _checks.floats("V", V, ndim=2)
    _checks.shaped("U", U, (M.shape[0], U.shape[1]), "d_out x r")
    _checks.shaped("V", V, (M.shape[1], U.shape[1]), "d_in x r, r the columns of U")
    return jnp.einsum("oi,oj,ji->i", U, M, V)
