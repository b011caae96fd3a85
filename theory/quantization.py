"""Post-training quantization of a linear network's weights as a modification (docs/THEORY.md).

Symmetric b-bit quantization per output channel: row r of W_k is put on the grid Delta_r x {-q, ...,
q}, q = 2^(b-1) - 1, Delta_r = max_j |W_rj| / q (a zero row stays zero). Round-to-nearest moves every
entry by at most Delta_r / 2; stochastic rounding rounds w / Delta up with probability p =
frac(w / Delta), so it is unbiased, E q(w) = w, with entry variance

    V = Delta^2 p (1 - p),        independent across entries.

So stochastic rounding is the Gaussian protocol with an entrywise variance in place of gamma^2
sigma_k^2, and the exact expected excess carries over (``perturbation.excess``): for noise N with
entry variances V, E[N X N^T] = Diag(V diag(X)), so with M_k the clean partial product

    D_0 = 0,   D_k = W_k D_{k-1} W_k^T + Diag(V_k (diag(M_{k-1} M_{k-1}^T) + diag(D_{k-1}))),

and E[L_A(q(W))] - L_A(W) = tr(D_L) / 2 (white inputs; independent of the task A). At depth 2,
(1/2)[sum_ij V2_ij ||row_j W1||^2 + sum_jk V1_jk ||col_j W2||^2 + sum_ijk V2_ij V1_jk]. Round-to-
nearest is deterministic: its excess is L_A(q(W)) - L_A(W), computed directly. ``quantized_curves``
gives both along a trajectory W(T). Pure JAX, no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from theory import _checks
from theory.network import Params, task_loss

MIN_BITS, MAX_BITS = 2, 16  # 1 bit has no symmetric grid (q = 0); beyond 16 the grid is finer than float32's


def levels(bits: int) -> int:
    """q = 2^(bits - 1) - 1, the largest grid index of symmetric ``bits``-bit quantization. Refuses
    ``bits`` that is not an integer in [MIN_BITS, MAX_BITS]."""
    bits = _checks.integer("bits", bits, MIN_BITS)
    if bits > MAX_BITS:
        raise ValueError(f"bits={bits} must be <= {MAX_BITS}")
    return 2 ** (bits - 1) - 1


def grid_step(W: jax.Array, bits: int) -> jax.Array:
    """Delta_r = max_j |W_rj| / q per output channel (row) of ``W``, shape (rows, 1).

    Parameters
    ----------
    W : array, shape (out, in)
        One layer's weights.
    bits : int
        Bit width (MIN_BITS ... MAX_BITS).
    """
    W = _checks.floats("W", W, ndim=2)
    return jnp.max(jnp.abs(W), axis=1, keepdims=True) / levels(bits)


def _scaled(W, bits):
    """(W / Delta, Delta) with Delta = 1 where a row is zero (its entries are then exact)."""
    step = grid_step(W, bits)
    step = jnp.where(step > 0, step, 1.0)
    return W / step, step


def round_to_nearest(W: jax.Array, bits: int) -> jax.Array:
    """Delta round(W / Delta), per output channel: every entry within Delta / 2 of W."""
    x, step = _scaled(W, bits)
    return jnp.round(x) * step


def stochastic_round(key: jax.Array, W: jax.Array, bits: int) -> jax.Array:
    """Delta (floor(W / Delta) + Bernoulli(frac(W / Delta))): unbiased, entry variance ``rounding_variance``.

    Parameters
    ----------
    key : jax key
        Seeds the rounding.
    W : array, shape (out, in)
        One layer's weights.
    bits : int
        Bit width.
    """
    _checks.prng_key("key", key)
    x, step = _scaled(W, bits)
    low = jnp.floor(x)
    up = jax.random.uniform(key, x.shape, x.dtype) < (x - low)
    return (low + up) * step


def rounding_variance(W: jax.Array, bits: int) -> jax.Array:
    """V = Delta^2 p (1 - p), p = frac(W / Delta): the variance of each entry under stochastic rounding."""
    x, step = _scaled(W, bits)
    p = x - jnp.floor(x)
    return step**2 * p * (1 - p)


def stochastic_excess(Ws: Sequence[jax.Array], bits) -> jax.Array:
    """E[L_A(q(W))] - L_A(W) exactly under stochastic rounding of every layer: ``variance_excess`` with
    each layer's ``rounding_variance``.

    Parameters
    ----------
    Ws : sequence of arrays
        (W_1, ..., W_L), W_k of shape (width_k, width_{k-1}).
    bits : int or sequence of int
        One bit width for every layer, or one per layer.

    Returns
    -------
    scalar array
        The expected excess loss.
    """
    bits = _per_layer(bits, len(Ws))
    return variance_excess(Ws, [rounding_variance(W, b) for W, b in zip(Ws, bits)])


def variance_excess(Ws: Sequence[jax.Array], Vs: Sequence[jax.Array]) -> jax.Array:
    """E[L_A(W + N)] - L_A(W) for independent zero-mean noise N_k with entry variances V_k (module
    docstring): the Gram recursion D_k = W_k D_{k-1} W_k^T + Diag(V_k (diag(M_{k-1} M_{k-1}^T) +
    diag(D_{k-1}))), excess tr(D_L) / 2. One variance everywhere (gamma^2 sigma_k^2) gives
    ``perturbation.excess``.

    Parameters
    ----------
    Ws : sequence of arrays
        (W_1, ..., W_L), W_k of shape (width_k, width_{k-1}).
    Vs : sequence of arrays
        V_k >= 0, each of W_k's shape.
    """
    Ws = [_checks.floats(f"Ws[{k}]", W, ndim=2) for k, W in enumerate(Ws)]
    if not Ws:
        raise ValueError("Ws is empty; give at least one layer")
    widths = [W.shape for W in Ws]
    if any(a[0] != b[1] for a, b in zip(widths, widths[1:])):
        raise ValueError(f"Ws have shapes {widths}; each layer's input width must be the previous one's output")
    Vs = [_checks.non_negative(f"Vs[{k}]", V, ndim=2) for k, V in enumerate(Vs)]
    if [V.shape for V in Vs] != widths:
        raise ValueError(f"Vs have shapes {[V.shape for V in Vs]}; give one per layer, of its shape {widths}")
    d_in = Ws[0].shape[1]
    M = jnp.eye(d_in, dtype=Ws[0].dtype)
    D = jnp.zeros((d_in, d_in), Ws[0].dtype)
    for W, V in zip(Ws, Vs):
        D = W @ D @ W.T + jnp.diag(V @ (jnp.sum(M**2, axis=1) + jnp.diag(D)))
        M = W @ M
    return 0.5 * jnp.trace(D)


def _per_layer(bits, n_layers: int) -> list:
    bits = list(bits) if isinstance(bits, (list, tuple)) else [bits] * n_layers
    if len(bits) != n_layers:
        raise ValueError(f"bits has {len(bits)} entries; give one, or one per layer ({n_layers})")
    return bits


def deterministic_excess(Ws: Sequence[jax.Array], A: jax.Array, bits) -> jax.Array:
    """L_A(q(W)) - L_A(W) under round-to-nearest of every layer (``bits``: one, or one per layer).

    Parameters
    ----------
    Ws : sequence of arrays
        (W_1, ..., W_L).
    A : array, shape (d_out, d_in)
        The teacher.
    bits : int or sequence of int
        Bit widths.
    """
    quantized = [round_to_nearest(W, b) for W, b in zip(Ws, _per_layer(bits, len(Ws)))]
    return task_loss(quantized, A) - task_loss(Ws, A)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class QuantizedCurves:
    """L_A after quantizing every layer to ``bits`` bits, as functions of T (leading axis): round-to-
    nearest (``nearest_*``, computed directly) and the exact expectation under stochastic rounding
    (``stochastic_*``); ``*_excess`` is the loss minus the clean L_A."""

    nearest_loss: jax.Array
    nearest_excess: jax.Array
    stochastic_loss: jax.Array
    stochastic_excess: jax.Array


def quantized_curves(Ws_T: Params, A, bits: int) -> QuantizedCurves:
    """L_A(q(W(T))) for round-to-nearest, L_A(W(T)) + E excess for stochastic rounding, per T.

    Round-to-nearest: ``deterministic_excess``, L_A(q(W)) - L_A(W) computed directly.
    Stochastic rounding: ``stochastic_excess``, the entrywise-variance Gram recursion
    D_k = W_k D_{k-1} W_k^T + Diag(V_k (diag(M_{k-1} M_{k-1}^T) + diag(D_{k-1}))), excess tr(D_L) / 2,
    exact at every depth (nothing is drawn). Refuses ``Ws_T`` as ``protocol.simulated_curves`` does, an ``A``
    of another shape than the network's, and ``bits`` outside [MIN_BITS, MAX_BITS].

    Parameters
    ----------
    Ws_T : tuple of arrays
        The trajectory: layer k of shape (n_t, width_k, width_{k-1}).
    A : array, shape (d_out, d_in)
        The pre-training teacher.
    bits : int
        Bit width of every layer's symmetric per-output-channel grid (a Python int: static).

    Returns
    -------
    QuantizedCurves
        Each field of shape (n_t,).
    """
    Ws_T, A = _checks.trajectory(Ws_T, A)
    levels(bits)

    def at(Ws):
        nearest = deterministic_excess(Ws, A, bits)
        stochastic = stochastic_excess(Ws, bits)
        L_A = task_loss(Ws, A)
        return QuantizedCurves(L_A + nearest, nearest, L_A + stochastic, stochastic)

    return jax.vmap(at)(Ws_T)
