"""The problems the theory benchmarks time: full-batch and minibatch GD on two-layer linear networks,
written in JAX and as plain NumPy loops with the gradient spelled out.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from theory import network, simulate, tasks

F32 = jnp.float32


def gd_problem(d: int, cells: int, sigma: float = 0.05):
    """Teacher A (power-law spectrum, random singular vectors) and ``cells`` Gaussian inits, float32."""
    A = tasks.teacher(jax.random.PRNGKey(0), tasks.power_law_spectrum(d), d, d).matrix.astype(F32)
    keys = jax.random.split(jax.random.PRNGKey(1), cells)
    W0 = jax.vmap(lambda k: network.init_gaussian(k, network.widths(d, d, d), sigma))(keys)
    return A, tuple(w.astype(F32) for w in W0)


def jax_gd(A, lr: float, n_steps: int):
    """jit(vmap over cells of simulate.train), one snapshot at the end (record_every = n_steps)."""
    objective = simulate.population_objective(A)
    opt = optax.sgd(lr)
    return jax.jit(jax.vmap(lambda W: simulate.train(objective, W, opt, n_steps, n_steps)))


def numpy_gd(A: np.ndarray, W0, lr: float, n_steps: int):
    """Plain NumPy: a Python loop over steps, batched matmuls over the cells (axis 0)."""
    W1, W2 = np.array(W0[0]), np.array(W0[1])
    for _ in range(n_steps):
        R = W2 @ W1 - A  # (C, d_out, d_in) residual M - A
        g2 = R @ W1.transpose(0, 2, 1)  # dL/dW2 = R W1^T
        g1 = W2.transpose(0, 2, 1) @ R  # dL/dW1 = W2^T R
        W1 -= lr * g1
        W2 -= lr * g2
    return W1, W2


def numpy_gd_per_cell(A: np.ndarray, W0, lr: float, n_steps: int):
    """Plain NumPy, one cell at a time (the naive variant)."""
    W1s, W2s = np.array(W0[0]), np.array(W0[1])
    for c in range(W1s.shape[0]):
        W1, W2 = W1s[c], W2s[c]
        for _ in range(n_steps):
            R = W2 @ W1 - A
            g2 = R @ W1.T
            g1 = W2.T @ R
            W1 -= lr * g1
            W2 -= lr * g2
    return W1s, W2s


def np_loss(W1, W2, A):
    return 0.5 * np.sum((W2 @ W1 - A) ** 2, axis=(1, 2))


def orthogonal_batch(key: jax.Array, cells: int, d: int) -> jax.Array:
    """``cells`` random d x d orthogonal matrices: a chain of products with them neither grows nor decays,
    so a scan of matmuls alone runs on normal floats (no denormal slow path) without an elementwise op."""
    Q, _ = jnp.linalg.qr(jax.random.normal(key, (cells, d, d), F32))
    return Q


def scan_and_loop(jax_body, numpy_body, X, Xn, n_steps: int):
    """Callables running ``x <- body(x)`` ``n_steps`` times from X: a compiled JAX scan, a NumPy loop."""
    compiled = jax.jit(lambda x: jax.lax.scan(lambda c, _: (jax_body(c), None), x, None, length=n_steps)[0])
    compiled = compiled.lower(X).compile()

    def numpy_loop():
        x = Xn.copy()
        for _ in range(n_steps):
            x = numpy_body(x)

    return lambda: jax.block_until_ready(compiled(X)), numpy_loop


def numpy_minibatch(W0, X, Y, opt: str, lr: float, b1=0.9, b2=0.999, eps=1e-8):
    """Plain NumPy minibatch training of the 2-layer linear net, batched over cells (axis 0).

    Loss 1/(2b) sum_j ||M x_j - y_j||^2 with M = W2 W1: E = X M^T - Y, G = E^T X / b = dL/dM,
    dW2 = G W1^T, dW1 = W2^T G; SGD, or Adam as optax.adam (bias-corrected moments, eps outside the root).
    """
    W = [np.array(W0[0]), np.array(W0[1])]
    m = [np.zeros_like(w) for w in W]
    v = [np.zeros_like(w) for w in W]
    b = X.shape[1]
    for t in range(X.shape[0]):
        M = W[1] @ W[0]
        E = X[t] @ M.transpose(0, 2, 1) - Y[t]  # (cells, b, d_out)
        G = E.transpose(0, 2, 1) @ X[t] / np.float32(b)
        grads = [W[1].transpose(0, 2, 1) @ G, G @ W[0].transpose(0, 2, 1)]
        for k in range(2):
            if opt == "sgd":
                W[k] -= np.float32(lr) * grads[k]
            else:
                m[k] = np.float32(b1) * m[k] + np.float32(1 - b1) * grads[k]
                v[k] = np.float32(b2) * v[k] + np.float32(1 - b2) * grads[k] ** 2
                m_hat = m[k] / np.float32(1 - b1 ** (t + 1))
                v_hat = v[k] / np.float32(1 - b2 ** (t + 1))
                W[k] -= np.float32(lr) * m_hat / (np.sqrt(v_hat) + np.float32(eps))
    return W


def minibatch_run(W, X, Y, tx, n_steps: int):
    """``simulate.train`` on given batches (X, Y): the minibatch objective with its draws taken out."""
    objective = simulate.Objective(lambda W, batch: network.sample_loss(W, *batch), lambda _key, _n: (X, Y))
    return simulate.train(objective, W, tx, n_steps, n_steps)
