"""Teacher tasks: the pre-training map A and the fine-tuning map B (docs/THEORY.md, "Tasks and loss").

Inputs are whitened, x ~ N(0, I_d), so the population loss of a linear predictor M is
    L(M) = 1/2 ||M - A||_F^2  (+ a constant from label noise).
A = U diag(s) V^T with a decaying spectrum s; B is "misaligned" with A in one of three families:
another spectrum on the same singular vectors, singular subspaces rotated by a principal angle theta,
or B = sqrt(1 - rho^2) A_perp + rho A.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from theory import _checks, _random


def power_law_spectrum(n: int, s1: float = 1.0, alpha: float = 1.0) -> jax.Array:
    """s_i = s_1 * i^(-alpha), i = 1..n (descending for alpha >= 0). Refuses n < 1, s1 <= 0, alpha < 0.

    Parameters
    ----------
    n : int
        Number of modes (>= 1).
    s1 : float
        The largest singular value (> 0).
    alpha : float
        The decay exponent (>= 0).

    Returns
    -------
    array, shape (n,)
    """
    n = _checks.positive_int("n", n)
    s1 = _checks.positive("s1", s1, ndim=0)
    alpha = _checks.non_negative("alpha", alpha, ndim=0)
    return s1 * jnp.arange(1, n + 1, dtype=jnp.result_type(float)) ** (-alpha)


def exponential_spectrum(n: int, s1: float = 1.0, rate: float = 0.1) -> jax.Array:
    """s_i = s_1 * exp(-rate * (i - 1)), i = 1..n. Refuses n < 1, s1 <= 0, rate < 0.

    Parameters
    ----------
    n : int
        Number of modes (>= 1).
    s1 : float
        The largest singular value (> 0).
    rate : float
        The decay rate per mode (>= 0).

    Returns
    -------
    array, shape (n,)
    """
    n = _checks.positive_int("n", n)
    s1 = _checks.positive("s1", s1, ndim=0)
    rate = _checks.non_negative("rate", rate, ndim=0)
    return s1 * jnp.exp(-rate * jnp.arange(n, dtype=jnp.result_type(float)))


def explicit_spectrum(values) -> jax.Array:
    """A user-given spectrum: a non-empty 1-d list of values > 0, sorted in descending order.

    Parameters
    ----------
    values : sequence of float
        The singular values (> 0, descending).

    Returns
    -------
    array, shape (len(values),)
    """
    s = _checks.positive("values", values, ndim=1)
    _checks.ordered("values", s, descending=True)
    return jnp.asarray(s)


def reversed_spectrum(s: jax.Array) -> jax.Array:
    """b = s[::-1]: the strongest pre-training mode becomes the weakest fine-tuning mode. Refuses an
    ``s`` that is not a non-empty 1-d array of values >= 0.

    Parameters
    ----------
    s : array, shape (r,)
        Singular values of the pre-training task (>= 0).

    Returns
    -------
    array, shape (r,)
    """
    return jnp.asarray(_checks.non_negative("s", s, ndim=1))[::-1]


def permuted_spectrum(s: jax.Array, permutation) -> jax.Array:
    """b_i = s_{pi(i)} for a permutation pi of range(len(s)). Refuses an ``s`` that is not a non-empty
    1-d array of values >= 0, and a ``permutation`` that is not one of 0..len(s)-1 (integers).

    Parameters
    ----------
    s : array, shape (r,)
        Singular values of the pre-training task (>= 0).
    permutation : sequence of int
        pi, a permutation of 0 .. r - 1.

    Returns
    -------
    array, shape (r,)
    """
    s = jnp.asarray(_checks.non_negative("s", s, ndim=1))
    return s[jnp.asarray(_checks.permutation("permutation", permutation, s.shape[0]))]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Task:
    """A linear teacher y = M x with M = U diag(s) V^T (U: d_out x r, V: d_in x r orthonormal columns)."""

    U: jax.Array
    s: jax.Array
    V: jax.Array

    @property
    def matrix(self) -> jax.Array:
        return (self.U * self.s) @ self.V.T

    @property
    def d_out(self) -> int:
        return self.U.shape[0]

    @property
    def d_in(self) -> int:
        return self.V.shape[0]


def random_orthonormal(key: jax.Array, n: int, r: int) -> jax.Array:
    """n x r matrix with orthonormal columns, Haar-distributed (QR of a Gaussian with sign fix).
    Refuses a ``key`` that is not a PRNG key, n or r < 1, and r > n.

    Parameters
    ----------
    key : PRNG key
        Seeds the draw.
    n : int
        Rows (>= 1).
    r : int
        Columns (1 <= r <= n).

    Returns
    -------
    array, shape (n, r)
    """
    _checks.prng_key("key", key)
    n, r = _checks.positive_int("n", n), _checks.positive_int("r", r)
    if r > n:
        raise ValueError(f"r={r} orthonormal columns need n >= r, got n={n}")
    q, rr = jnp.linalg.qr(_random.normal(key, (n, r)))
    return q * jnp.sign(jnp.diagonal(rr))


def teacher(key: jax.Array, s: jax.Array, d_out: int, d_in: int) -> Task:
    """A = U diag(s) V^T with Haar-random singular vectors; rank r = len(s) <= min(d_out, d_in).
    Refuses an ``s`` that is not a non-empty 1-d array of values >= 0, widths < 1 and len(s) beyond them.

    Parameters
    ----------
    key : PRNG key
        Seeds the singular vectors.
    s : array, shape (r,)
        Singular values of the pre-training task (>= 0).
    d_out, d_in : int
        Output and input widths (>= len(s)).

    Returns
    -------
    Task
        The matrix with its singular values and vectors.
    """
    _checks.prng_key("key", key)
    d_out, d_in = _checks.positive_int("d_out", d_out), _checks.positive_int("d_in", d_in)
    s = jnp.asarray(_checks.non_negative("s", s, ndim=1))
    if s.shape[0] > min(d_out, d_in):
        raise ValueError(f"len(s)={s.shape[0]} exceeds min(d_out, d_in)={min(d_out, d_in)}")
    ku, kv = jax.random.split(key)
    return Task(random_orthonormal(ku, d_out, s.shape[0]), s, random_orthonormal(kv, d_in, s.shape[0]))


def with_spectrum(task: Task, b: jax.Array) -> Task:
    """Family 1: B = U diag(b) V^T, the same singular vectors as A and another spectrum. Refuses a
    ``task`` that is not a ``Task`` and a ``b`` of another shape than task.s or with values < 0.

    Parameters
    ----------
    task : Task
        The pre-training task A.
    b : array, shape (r,)
        B's singular values (>= 0).

    Returns
    -------
    Task
    """
    _checks.instance("task", task, Task)
    b = _checks.non_negative("b", b, ndim=1)
    _checks.same_shape("b", b, "task.s", task.s)
    return dataclasses.replace(task, s=jnp.asarray(b, task.s.dtype))


def _rotate(key: jax.Array, Q: jax.Array, theta) -> jax.Array:
    """Q cos(theta) + Q_perp sin(theta): every principal angle between span(Q) and the result is theta."""
    n, r = Q.shape
    if 2 * r > n:
        raise ValueError(f"rotating a rank-{r} subspace needs dimension >= {2 * r}, got {n}")
    G = _random.normal(key, (n, r), Q.dtype)
    G = G - Q @ (Q.T @ G)
    Q_perp, _ = jnp.linalg.qr(G)
    return Q * jnp.cos(theta) + Q_perp * jnp.sin(theta)


def rotated(task: Task, theta, key: jax.Array, b: jax.Array | None = None) -> Task:
    """Family 2: singular subspaces of B rotated from those of A by principal angle theta (0: aligned).
    Refuses a ``task`` that is not a ``Task``, a non-finite or non-scalar ``theta``, a ``key`` that is
    not a PRNG key, and a ``b`` that ``with_spectrum`` refuses.

    Parameters
    ----------
    task : Task
        The pre-training task A.
    theta : float
        Principal angle between A's and B's singular subspaces, in radians.
    key : PRNG key
        Seeds the rotation's direction.
    b : array, shape (r,), optional
        B's singular values (>= 0); A's when None.

    Returns
    -------
    Task
    """
    _checks.instance("task", task, Task)
    theta = _checks.floats("theta", theta, ndim=0)
    _checks.prng_key("key", key)
    if b is not None:
        b = with_spectrum(task, b).s
    # fold_in: a stream unlike teacher()'s split, so passing the teacher's key still gives fresh directions.
    ku, kv = jax.random.split(jax.random.fold_in(key, 1))
    s = task.s if b is None else jnp.asarray(b, task.s.dtype)
    return Task(_rotate(ku, task.U, theta), s, _rotate(kv, task.V, theta))


def correlated_matrix(task: Task, rho, key: jax.Array) -> jax.Array:
    """Family 3: B = sqrt(1 - rho^2) A_perp + rho A, A_perp a teacher with A's spectrum and random vectors.
    Refuses a ``task`` that is not a ``Task``, a ``rho`` outside [-1, 1] and a ``key`` that is not a PRNG key.

    Parameters
    ----------
    task : Task
        The pre-training task A.
    rho : float
        The weight of A in B, in [-1, 1] (1: B = A).
    key : PRNG key
        Seeds A_perp's singular vectors.

    Returns
    -------
    array, shape (d_out, d_in)
        B.
    """
    _checks.instance("task", task, Task)
    rho = _checks.floats("rho", rho, ndim=0, least=-1, most=1)
    _checks.prng_key("key", key)
    perp = teacher(jax.random.fold_in(key, 2), task.s, task.d_out, task.d_in)
    return jnp.sqrt(1.0 - rho**2) * perp.matrix + rho * task.matrix


def sample_dataset(key: jax.Array, A: jax.Array, n: int, label_noise: float = 0.0):
    """Finite-sample variant: X (n x d_in) ~ N(0, I), Y = X A^T + label_noise * N(0, I). Refuses a
    ``key`` that is not a PRNG key, an ``A`` that is not a finite matrix, n < 1 and label_noise < 0.

    Parameters
    ----------
    key : PRNG key
        Seeds the draw.
    A : array, shape (d_out, d_in)
        The teacher matrix.
    n : int
        Number of samples (>= 1).
    label_noise : float
        Std of the Gaussian noise on each target entry (>= 0).

    Returns
    -------
    (array, array)
        X of shape (n, d_in) and Y of shape (n, d_out).
    """
    _checks.prng_key("key", key)
    A = _checks.floats("A", A, ndim=2)
    n = _checks.positive_int("n", n)
    label_noise = _checks.non_negative("label_noise", label_noise, ndim=0)
    kx, ke = jax.random.split(key)
    X = _random.normal(kx, (n, A.shape[1]), A.dtype)
    return X, X @ A.T + label_noise * _random.normal(ke, (n, A.shape[0]), A.dtype)


def padded_orthonormal(key: jax.Array, n: int, rank, width: int, rotate_from: jax.Array | None = None) -> jax.Array:
    """``random_orthonormal(key, n, rank)`` for a ``rank`` that may be traced, padded with zero columns
    to ``width``; given ``rotate_from`` = Q (n, width), the Q_perp that ``rotated`` draws instead.

    The (n, r) draw of the ``rbg`` stream is the first n r numbers of a longer draw (row-major), so one
    (n, width) draw is masked to those r columns; Householder QR keeps a zero column zero and gives the
    first r columns as the (n, r) QR does, to rounding.

    Parameters
    ----------
    key : PRNG key
    n : int
        Rows (the dimension of the space).
    rank : int or traced int
        Columns that are real, r <= width.
    width : int
        Columns of the result (static).
    rotate_from : array, shape (n, width), optional
        An orthonormal Q padded as this function pads it.

    Returns
    -------
    array, shape (n, width)
    """
    flat = _random.normal(key, (n * width,))
    i, j = jnp.arange(n)[:, None], jnp.arange(width)[None, :]
    real = j < rank
    G = jnp.where(real, flat[jnp.where(real, i * rank + j, 0)], 0.0)
    if rotate_from is not None:  # _rotate: the part of G orthogonal to span(Q), no sign fix
        G = G - rotate_from @ (rotate_from.T @ G)
        return jnp.where(real, jnp.linalg.qr(G)[0], 0.0)
    q, r = jnp.linalg.qr(G)
    return q * jnp.sign(jnp.diagonal(r))  # sign(0) = 0: the padded columns stay zero


def padded_task_pair(key: jax.Array, rank, s: jax.Array, b: jax.Array, theta, rho, rotated):
    """(U, V, A, B) of a misaligned pair for a ``rank`` that may be traced, every factor padded to
    ``s.shape[0]`` modes: A = ``teacher(key, s[:rank], n, n)``, and B = ``rotated(A, theta,
    fold_in(key, 7), b)`` where ``rotated`` is true, else ``correlated_matrix(A, rho, fold_in(key, 7))``,
    to float rounding. Spectra beyond ``rank`` must be 0 (padded modes add nothing).

    Parameters
    ----------
    key : PRNG key
        The teacher's key.
    rank : int or traced int
    s, b : array, shape (n,)
        A's and B's singular values, zero beyond ``rank``.
    theta, rho : float
        The rotation angle (rotated) or the correlation (correlated).
    rotated : bool or traced bool

    Returns
    -------
    tuple of arrays, shapes (n, n), (n, n), (n, n), (n, n)
    """
    n = s.shape[0]
    ku, kv = jax.random.split(key)
    U, V = padded_orthonormal(ku, n, rank, n), padded_orthonormal(kv, n, rank, n)
    A = (U * s) @ V.T
    task_key = jax.random.fold_in(key, 7)
    ru, rv = jax.random.split(jax.random.fold_in(task_key, 1))

    def rotate(k, Q):  # _rotate
        return Q * jnp.cos(theta) + padded_orthonormal(k, n, rank, n, Q) * jnp.sin(theta)

    pu, pv = jax.random.split(jax.random.fold_in(task_key, 2))
    perp = (padded_orthonormal(pu, n, rank, n) * s) @ padded_orthonormal(pv, n, rank, n).T
    B = jnp.where(rotated, (rotate(ru, U) * b) @ rotate(rv, V).T, jnp.sqrt(1.0 - rho**2) * perp + rho * A)
    return U, V, A, B
