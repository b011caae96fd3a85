"""Gaussian perturbation of the weights (docs/THEORY.md, "Modification 1").

W_k -> W_k + gamma * sigma_k * E_k with E_k iid N(0, 1) and sigma_k the layer's *init* std (the
paper scales noise by the initialisation covariance). The expected excess is exact at every depth
(``excess``, a Gram recursion; ``gaussian_excess`` is its depth-2 form). ``monte_carlo_loss``
averages draws vmapped in one call: it is the test oracle of the exact formulas.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from theory import _checks, _random
from theory.network import Params, task_loss


def gaussian_excess(W1, W2, gamma, sigma1, sigma2):
    """E[L_A(W~)] - L_A(W) for M = W2 @ W1 (W1: h x d_in, W2: d_out x h), noise std gamma*sigma_k on layer k:

        1/2 * ( gamma^2 sigma_2^2 d_out ||W_1||_F^2 + gamma^2 sigma_1^2 d_in ||W_2||_F^2
                + gamma^4 sigma_1^2 sigma_2^2 d_out h d_in ).

    Exact: the cross terms with the residual have zero mean. Independent of the task A. The depth-2
    case of ``excess``. Refuses W1, W2 that are not finite matrices or whose shapes do not chain, and
    gamma, sigma1 or sigma2 < 0.

    Parameters
    ----------
    W1 : array, shape (h, d_in)
        First layer.
    W2 : array, shape (d_out, h)
        Second layer.
    gamma : float or array
        Noise size, in units of the per-layer std (>= 0).
    sigma1, sigma2 : float or array
        Std of each entry's noise on W1 and W2 at gamma = 1 (>= 0), e.g. the init std 1/sqrt(fan-in).

    Returns
    -------
    array
        The expected excess loss, in gamma's shape.
    """
    W1, W2 = _checks.floats("W1", W1, ndim=2), _checks.floats("W2", W2, ndim=2)
    if W2.shape[1] != W1.shape[0]:
        raise ValueError(f"W1 (h x d_in) and W2 (d_out x h) shapes do not chain: W1 {W1.shape}, W2 {W2.shape}")
    h, d_in = W1.shape
    d_out = W2.shape[0]
    return excess_from_norms(jnp.sum(W1**2), jnp.sum(W2**2), gamma, sigma1, sigma2, d_in, h, d_out)


def excess_from_norms(norm1_sq, norm2_sq, gamma, sigma1, sigma2, d_in, h, d_out):
    """The exact depth-2 excess from the layer norms ||W_1||_F^2, ||W_2||_F^2 (see ``gaussian_excess``).

    Along an aligned balanced trajectory ||W_1||^2 = ||W_2||^2 = sum_i u_i(T), so the excess grows
    monotonically with pre-training time: progressive sensitivity. Refuses norms, gamma or sigmas < 0,
    widths that are not integers >= 1, and shapes that do not broadcast together.

    Parameters
    ----------
    norm1_sq, norm2_sq : float or array
        ||W_1||_F^2 and ||W_2||_F^2 (>= 0), e.g. one per T.
    gamma : float or array
        Noise size, in units of the per-layer std (>= 0).
    sigma1, sigma2 : float or array
        Per-entry noise std of each layer at gamma = 1 (>= 0).
    d_in, h, d_out : int
        The network's widths (>= 1).

    Returns
    -------
    array
        The expected excess loss, in the broadcast shape of the inputs.
    """
    norm1_sq, norm2_sq = _checks.non_negative("norm1_sq", norm1_sq), _checks.non_negative("norm2_sq", norm2_sq)
    gamma, sigma1, sigma2, d_in, d_out = _noise(gamma, sigma1, sigma2, d_in, d_out)
    h = _checks.positive_int("h", h)
    _checks.broadcast(norm1_sq=norm1_sq, norm2_sq=norm2_sq, gamma=gamma, sigma1=sigma1, sigma2=sigma2)
    g2 = jnp.asarray(gamma) ** 2
    return 0.5 * (
        g2 * sigma2**2 * d_out * norm1_sq
        + g2 * sigma1**2 * d_in * norm2_sq
        + g2**2 * sigma1**2 * sigma2**2 * d_out * h * d_in
    )


def harm_threshold(gamma, sigma1, sigma2, d_in, d_out):
    """Learning mode i lowers the clean loss by ~s_i^2/2 and raises the excess by ~c gamma^2 s_i with
    c = (d_out sigma_2^2 + d_in sigma_1^2)/2, so it hurts the perturbed loss iff s_i < 2 c gamma^2.
    Refuses gamma, sigma1 or sigma2 < 0 and widths that are not integers >= 1.

    Parameters
    ----------
    gamma : float or array
        Noise size, in units of the per-layer std (>= 0).
    sigma1, sigma2 : float or array
        Per-entry noise std of each layer at gamma = 1 (>= 0).
    d_in, d_out : int
        Input and output widths (>= 1).

    Returns
    -------
    array
        2 c gamma^2: modes with a singular value below it are net-harmful. In gamma's shape.
    """
    gamma, sigma1, sigma2, d_in, d_out = _noise(gamma, sigma1, sigma2, d_in, d_out)
    return (d_out * sigma2**2 + d_in * sigma1**2) * jnp.asarray(gamma) ** 2


def _noise(gamma, sigma1, sigma2, d_in, d_out):
    """The noise of a depth-2 formula, checked: gamma, sigma1, sigma2 >= 0, d_in, d_out integers >= 1."""
    noise = [_checks.non_negative(n, v) for n, v in (("gamma", gamma), ("sigma1", sigma1), ("sigma2", sigma2))]
    return (*noise, _checks.positive_int("d_in", d_in), _checks.positive_int("d_out", d_out))


def _network_noise(Ws: Sequence[jax.Array], gamma, sigmas):
    """(Ws, gamma, sigmas) checked: weights that chain (``_checks.weights``), gamma >= 0 (a scalar), and
    one sigma >= 0 per layer."""
    Ws = _checks.weights("Ws", Ws)
    gamma = _checks.non_negative("gamma", gamma, ndim=0)
    if not isinstance(sigmas, (tuple, list)) and np.ndim(sigmas) != 1:
        raise ValueError(f"sigmas must be one noise std per layer (a tuple), got {type(sigmas).__name__}")
    if len(sigmas) != len(Ws):
        raise ValueError(f"sigmas has {len(sigmas)} entries but the network has {len(Ws)} layers")
    sigmas = tuple(_checks.non_negative(f"sigmas[{k}]", s, ndim=0) for k, s in enumerate(sigmas))
    return Ws, gamma, sigmas


def excess(Ws: Sequence[jax.Array], gamma, sigmas) -> jax.Array:
    """E[L_A(W~)] - L_A(W), exact at any depth L, for noise std gamma * sigma_k on layer k.

    Every noise E_k enters M~ = (W_L + N_L) ... (W_1 + N_1) linearly with zero mean and the layers
    are independent, so E[M~] = M and E[L_A(W~)] = 1/2 (E||M~||_F^2 - 2 <M, A> + ||A||_F^2). The
    Gram matrix Sigma_k = E[P_k P_k^T] of the noisy partial product P_k = (W_k + N_k) P_{k-1} obeys

        Sigma_0 = I_{d_in},  Sigma_k = W_k Sigma_{k-1} W_k^T + gamma^2 sigma_k^2 tr(Sigma_{k-1}) I_{d_k}

    (E[N X N^T] = gamma^2 sigma_k^2 tr(X) I), and E||M~||_F^2 = tr(Sigma_L). Writing
    Sigma_k = M_k M_k^T + D_k with M_k = W_k ... W_1 the clean partial product, the noise part is

        D_0 = 0,  D_k = W_k D_{k-1} W_k^T + gamma^2 sigma_k^2 (||M_{k-1}||_F^2 + tr D_{k-1}) I_{d_k},

    and the excess is 1/2 tr(D_L): no cancellation against ||M||^2, O(L) matrix products, and
    independent of the task A. Depth 1: 1/2 gamma^2 sigma^2 d_in d_out; depth 2: ``gaussian_excess``.
    Pure JAX (``jit`` / ``vmap`` apply); ``sigmas`` holds one std per layer. Refuses what
    ``_network_noise`` refuses (integer weights are cast to float, not gamma to an integer).

    Parameters
    ----------
    Ws : sequence of arrays
        (W_1, ..., W_L), W_k of shape (width_k, width_{k-1}).
    gamma : float or array
        Noise size, in units of the per-layer std (>= 0).
    sigmas : sequence of float
        Per-entry noise std of each layer at gamma = 1 (>= 0), one per layer.

    Returns
    -------
    scalar array
        The expected excess loss.
    """
    Ws, gamma, sigmas = _network_noise(Ws, gamma, sigmas)
    g2 = jnp.asarray(gamma, Ws[0].dtype) ** 2
    d_in = Ws[0].shape[-1]
    M = jnp.eye(d_in, dtype=Ws[0].dtype)
    D = jnp.zeros((d_in, d_in), Ws[0].dtype)
    for W, s in zip(Ws, sigmas):
        noise = g2 * jnp.asarray(s, W.dtype) ** 2 * (jnp.sum(M**2) + jnp.trace(D))
        D = W @ D @ W.T + noise * jnp.eye(W.shape[0], dtype=W.dtype)
        M = W @ M
    return 0.5 * jnp.trace(D)


def expected_loss(Ws: Sequence[jax.Array], A: jax.Array, gamma, sigmas) -> jax.Array:
    """E[L_A(W~)] exactly, any depth: L_A(W) + ``excess`` (= 1/2 (tr Sigma_L - 2 <M, A> + ||A||_F^2)).
    Refuses what ``network.task_loss`` and ``excess`` refuse.

    Parameters
    ----------
    Ws : sequence of arrays
        (W_1, ..., W_L), W_k of shape (width_k, width_{k-1}).
    A : array, shape (d_out, d_in)
        The teacher matrix.
    gamma : float or array
        Noise size, in units of the per-layer std (>= 0).
    sigmas : sequence of float
        Per-entry noise std of each layer at gamma = 1 (>= 0), one per layer.

    Returns
    -------
    scalar array
        E[L_A] under the noise.
    """
    return task_loss(Ws, A) + excess(Ws, gamma, sigmas)


def _excess_by_subsets(Ws: Sequence[jax.Array], gamma, sigmas) -> jax.Array:
    """``excess`` as the sum over non-empty sets S of noisy layers (an independent check, for tests).

    Expanding M~ gives one term X_S per S (the layers in S replaced by their noise N_k); terms of
    different S are uncorrelated and uncorrelated with M - A. Conditioning layer by layer,
    E||C N_k Y||^2 = gamma^2 sigma_k^2 ||C||_F^2 E||Y||^2, so E||X_S||_F^2 is the product of
    gamma^2 sigma_k^2 over k in S and of ||C_j||_F^2 over the clean blocks C_j between them (an
    empty block is an identity, ||I_d||_F^2 = d). The excess is 1/2 of the sum: 2^L - 1 terms.
    """
    Ws, gamma, sigmas = _network_noise(Ws, gamma, sigmas)
    L = len(Ws)
    g2 = jnp.asarray(gamma, Ws[0].dtype) ** 2
    dims = [Ws[0].shape[-1]] + [W.shape[0] for W in Ws]

    def block_sq(lo: int, hi: int):
        """||W_hi ... W_{lo+1}||_F^2 (layers lo+1 .. hi, 1-based); the identity on d_lo if empty."""
        if lo == hi:
            return jnp.asarray(dims[lo], Ws[0].dtype)
        C = Ws[lo]
        for W in Ws[lo + 1 : hi]:
            C = W @ C
        return jnp.sum(C**2)

    total = jnp.zeros((), Ws[0].dtype)
    for size in range(1, L + 1):
        for S in itertools.combinations(range(1, L + 1), size):
            term = jnp.ones((), Ws[0].dtype)
            for k in S:
                term = term * g2 * jnp.asarray(sigmas[k - 1], Ws[0].dtype) ** 2
            # The clean blocks: layers 1 .. S_1 - 1, S_i + 1 .. S_{i+1} - 1, S_last + 1 .. L.
            for lo, hi in zip((0,) + S, tuple(k - 1 for k in S) + (L,)):
                term = term * block_sq(lo, hi)
            total = total + term
    return 0.5 * total


def perturb(key: jax.Array, Ws: Params, gamma, sigmas) -> Params:
    """One draw W_k + gamma * sigma_k * E_k (``sigmas``: one std per layer; init-relative or absolute).
    Refuses a ``key`` that is not a PRNG key and what ``_network_noise`` refuses.

    Parameters
    ----------
    key : PRNG key
        Seeds the draw.
    Ws : tuple of arrays
        (W_1, ..., W_L).
    gamma : float or array
        Noise size, in units of the per-layer std (>= 0).
    sigmas : sequence of float
        Per-entry noise std of each layer at gamma = 1 (>= 0), one per layer.

    Returns
    -------
    tuple of arrays
        The perturbed weights, shaped like ``Ws``.
    """
    _checks.prng_key("key", key)
    Ws, gamma, sigmas = _network_noise(Ws, gamma, sigmas)
    keys = jax.random.split(key, len(Ws))
    return tuple(W + gamma * s * _random.normal(k, W.shape, W.dtype) for W, s, k in zip(Ws, sigmas, keys))


def monte_carlo_loss(key: jax.Array, Ws: Params, A: jax.Array, gamma, sigmas, n_draws: int):
    """Mean and standard error of L_A over ``n_draws`` perturbed copies (vmapped draws; any depth).
    Refuses what ``perturb`` and ``network.task_loss`` refuse, and n_draws < 1.

    Parameters
    ----------
    key : PRNG key
        Seeds the draws.
    Ws : tuple of arrays
        (W_1, ..., W_L).
    A : array, shape (d_out, d_in)
        The teacher matrix.
    gamma : float or array
        Noise size, in units of the per-layer std (>= 0).
    sigmas : sequence of float
        Per-entry noise std of each layer at gamma = 1 (>= 0), one per layer.
    n_draws : int
        Number of perturbed copies (>= 1).

    Returns
    -------
    (scalar array, scalar array)
        The mean of L_A over the draws and its standard error.
    """
    n_draws = _checks.positive_int("n_draws", n_draws)
    _checks.prng_key("key", key)
    Ws, gamma, sigmas = _network_noise(Ws, gamma, sigmas)
    task_loss(Ws, A)  # refuses an A of another shape before the draws
    losses = jax.vmap(lambda k: task_loss(perturb(k, Ws, gamma, sigmas), A))(jax.random.split(key, n_draws))
    return losses.mean(), losses.std() / jnp.sqrt(n_draws)
