"""Gaussian perturbation of the weights (docs/THEORY.md, "Modification 1").

W_k -> W_k + gamma * sigma_k * E_k with E_k iid N(0, 1) and sigma_k the layer's *init* std (the
paper scales noise by the initialisation covariance). For depth 2 the expected excess is exact;
for any depth ``monte_carlo_loss`` averages draws vmapped in one call.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from theory import _checks, _random
from theory.network import Params, task_loss


def gaussian_excess(W1, W2, gamma, sigma1, sigma2):
    """E[L_A(W~)] - L_A(W) for M = W2 @ W1 (W1: h x d_in, W2: d_out x h), noise std gamma*sigma_k on layer k:

        1/2 * ( gamma^2 sigma_2^2 d_out ||W_1||_F^2 + gamma^2 sigma_1^2 d_in ||W_2||_F^2
                + gamma^4 sigma_1^2 sigma_2^2 d_out h d_in ).

    Exact: the cross terms with the residual have zero mean. Independent of the task A.
    """
    W1, W2 = jnp.asarray(W1), jnp.asarray(W2)
    if W1.ndim != 2 or W2.ndim != 2 or W2.shape[1] != W1.shape[0]:
        raise ValueError(f"W1 (h x d_in) and W2 (d_out x h) shapes do not chain: W1 {W1.shape}, W2 {W2.shape}")
    _checks.non_negative("gamma", gamma)
    _checks.non_negative("sigma1", sigma1)
    _checks.non_negative("sigma2", sigma2)
    h, d_in = W1.shape
    d_out = W2.shape[0]
    return excess_from_norms(jnp.sum(W1**2), jnp.sum(W2**2), gamma, sigma1, sigma2, d_in, h, d_out)


def excess_from_norms(norm1_sq, norm2_sq, gamma, sigma1, sigma2, d_in, h, d_out):
    """The exact depth-2 excess from the layer norms ||W_1||_F^2, ||W_2||_F^2 (see ``gaussian_excess``).

    Along an aligned balanced trajectory ||W_1||^2 = ||W_2||^2 = sum_i u_i(T), so the excess grows
    monotonically with pre-training time: progressive sensitivity.
    """
    g2 = jnp.asarray(gamma) ** 2
    return 0.5 * (
        g2 * sigma2**2 * d_out * norm1_sq
        + g2 * sigma1**2 * d_in * norm2_sq
        + g2**2 * sigma1**2 * sigma2**2 * d_out * h * d_in
    )


def harm_threshold(gamma, sigma1, sigma2, d_in, d_out):
    """Learning mode i lowers the clean loss by ~s_i^2/2 and raises the excess by ~c gamma^2 s_i with
    c = (d_out sigma_2^2 + d_in sigma_1^2)/2, so it hurts the perturbed loss iff s_i < 2 c gamma^2."""
    return (d_out * sigma2**2 + d_in * sigma1**2) * jnp.asarray(gamma) ** 2


def perturb(key: jax.Array, Ws: Params, gamma, sigmas) -> Params:
    """One draw W_k + gamma * sigma_k * E_k (``sigmas``: one std per layer; init-relative or absolute)."""
    keys = jax.random.split(key, len(Ws))
    return tuple(W + gamma * s * _random.normal(k, W.shape, W.dtype) for W, s, k in zip(Ws, sigmas, keys))


def monte_carlo_loss(key: jax.Array, Ws: Params, A: jax.Array, gamma, sigmas, n_draws: int):
    """Mean and standard error of L_A over ``n_draws`` perturbed copies (vmapped draws; any depth)."""
    _checks.positive_int("n_draws", n_draws)
    _checks.non_negative("gamma", gamma)
    if len(sigmas) != len(Ws):
        raise ValueError(f"sigmas has {len(sigmas)} entries but the network has {len(Ws)} layers")
    losses = jax.vmap(lambda k: task_loss(perturb(k, Ws, gamma, sigmas), A))(jax.random.split(key, n_draws))
    return losses.mean(), losses.std() / jnp.sqrt(n_draws)
