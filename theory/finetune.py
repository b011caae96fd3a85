"""Fine-tuning from a pre-trained W(T) (docs/THEORY.md, "Modification 2").

Flow or GD on  (1 - r) L_B(W) + r L_A(W) + lambda/2 * sum_k ||W_k - W_k(T)||_F^2  for fine-tuning time
tau = lr * steps: replay r of task A (0: none) and an L2 pull lambda toward W(T) (0: none).
"Fixed learning rate" means the same lr and steps for every T; "tuned" picks, per T, the lr of a grid
that minimises L_B after fine-tuning; a shrinking schedule makes lr a decreasing function of T.
``sample_loss`` (``network``'s) is the empirical loss on n samples, 1/(2n) sum_j ||M x_j - y_j||^2: its
expectation over x ~ N(0, I) and noiseless y = B x is the population L_B = 1/2 ||M - B||_F^2.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from analysis.tuned import tuned_choice as _tuned_choice
from theory import _checks
from theory.network import Params, sample_loss, task_loss


def regularized_objective(
    B: jax.Array,
    W_ref: Params,
    reg,
    data: tuple[jax.Array, jax.Array] | None = None,
    replay=0.0,
    A: jax.Array | None = None,
):
    """W -> (1 - r) L_B(W) + r L_A(W) + reg/2 sum_k ||W_k - W_ref_k||^2: replay r of the pre-training
    task beside the L2 pull toward the pre-trained weights. The two fits are kept as two terms (not
    merged into one target), so the closed form's mixed target (1 - r) b + r s is checked against this
    objective, not built into it. With ``data`` = (X, Y), the empirical loss on those samples of B
    replaces the population L_B; L_A is always the population loss. Refuses a ``B`` or ``A`` that is
    not a finite matrix of B's shape, ``W_ref`` that ``_checks.weights`` refuses, reg < 0, a replay
    outside [0, 1], a replay other than a Python 0 without ``A``, and a ``data`` that is not a pair (X, Y).

    Parameters
    ----------
    B : array, shape (d_out, d_in)
        The fine-tuning task's teacher matrix.
    W_ref : tuple of arrays
        The pre-trained weights (W_1, ..., W_L), W_k of shape (width_k, width_{k-1}): the anchor of
        the pull.
    reg : float
        Strength of the L2 pull (>= 0).
    data : tuple (X, Y), optional
        n samples of B, X of shape (n, d_in) and Y of shape (n, d_out); None for the population loss.
    replay : float
        r, the share of L_A in the fit, in [0, 1] (a Python 0: L_B alone, and ``A`` is not read).
    A : array, shape (d_out, d_in), optional
        The pre-training teacher, required by a replay other than a Python 0.

    Returns
    -------
    callable
        W -> the scalar objective, for weights shaped like ``W_ref``.
    """
    B = _checks.floats("B", B, ndim=2)
    W_ref = _checks.weights("W_ref", W_ref)
    reg = _checks.non_negative("reg", reg, ndim=0)
    replay = _checks.floats("replay", replay, ndim=0, least=0, most=1)
    if data is not None and not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise ValueError(f"data must be a pair (X, Y) of samples, got {type(data).__name__}")
    mixed = not _checks.python_zero(replay)  # a Python 0 keeps L_B alone, exactly
    if mixed and A is None:
        raise ValueError(f"replay={replay!r} mixes in L_A: give A, the pre-training teacher")
    if mixed:
        A = _checks.floats("A", A, ndim=2)
        _checks.shaped("A", A, B.shape, "the shape of B")

    def objective(Ws):
        pull = sum(jnp.sum((W - R) ** 2) for W, R in zip(Ws, W_ref))
        fit = task_loss(Ws, B) if data is None else sample_loss(Ws, *data)
        if mixed:
            fit = (1.0 - replay) * fit + replay * task_loss(Ws, A)
        return fit + 0.5 * reg * pull

    return objective


def finetune_gd(
    W_T: Params,
    B: jax.Array,
    lr,
    steps: int,
    reg=0.0,
    data: tuple[jax.Array, jax.Array] | None = None,
    replay=0.0,
    A: jax.Array | None = None,
) -> Params:
    """``steps`` of full-batch gradient descent at ``lr`` on the regularised objective (tau = lr * steps)
    (1 - r) L_B + r L_A + reg/2 ||W - W_T||^2: on the population L_B, or with ``data`` = (X, Y) on the
    empirical loss of n samples of B (the finite-sample fine-tuning whose held-out loss, the population
    L_B, can rise with lr x steps). Refuses lr <= 0, steps < 1, and what ``regularized_objective`` refuses.

    Parameters
    ----------
    W_T : tuple of arrays
        The pre-trained weights (W_1, ..., W_L) at time T, W_k of shape (width_k, width_{k-1}).
    B : array, shape (d_out, d_in)
        The fine-tuning task's teacher matrix.
    lr : float
        Learning rate (> 0).
    steps : int
        Number of gradient steps (>= 1).
    reg : float
        Strength of the L2 pull toward ``W_T`` (>= 0).
    data : tuple (X, Y), optional
        n samples of B, X of shape (n, d_in) and Y of shape (n, d_out); None for the population loss.
    replay : float
        r, the share of the population L_A in the fit, in [0, 1] (a Python 0: L_B alone).
    A : array, shape (d_out, d_in), optional
        The pre-training teacher, required by a replay other than a Python 0.

    Returns
    -------
    tuple of arrays
        The fine-tuned weights, shaped like ``W_T``.
    """
    lr = _checks.positive("lr", lr, ndim=0)
    steps = _checks.positive_int("steps", steps)
    W_T = _checks.weights("W_T", W_T)
    grad = jax.grad(regularized_objective(B, W_T, reg, data, replay, A))
    opt = optax.sgd(lr)

    def step(carry, _):
        W, s = carry
        updates, s = opt.update(grad(W), s, W)
        return (optax.apply_updates(W, updates), s), None

    (W, _), _ = jax.lax.scan(step, (W_T, opt.init(W_T)), None, length=steps)
    return W


def shrinking_lr(lr0, T, T_ref, power):
    """lr(T) = lr0 * (1 + T/T_ref)^(-power): a fine-tuning rate that shrinks with pre-training time.
    Refuses lr0 <= 0, T < 0, T_ref <= 0 and power < 0.

    Parameters
    ----------
    lr0 : float
        The rate at T = 0 (> 0).
    T : float or array
        Pre-training flow time (>= 0).
    T_ref : float
        The flow time over which the rate shrinks (> 0).
    power : float
        The exponent of the shrink (>= 0; 0 = a fixed rate).

    Returns
    -------
    array
        lr(T), in T's shape.
    """
    lr0 = _checks.positive("lr0", lr0)
    T = _checks.non_negative("T", T)
    T_ref = _checks.positive("T_ref", T_ref)
    power = _checks.non_negative("power", power)
    return lr0 * (1.0 + jnp.asarray(T) / T_ref) ** (-power)


def tuned_choice(finetune_losses, axis: int = 0):
    """Index of the lr minimising the in-task loss L_B after fine-tuning, along ``axis``.

    Non-finite losses (diverged runs) never win; ties go to the first index, so with the lrs in
    ascending order the smallest of the best lrs is chosen. A NumPy array is answered in NumPy
    (``analysis.tuned``, exact on stored float64 tables), anything else in jax.numpy (traceable).
    Refuses non-numbers, an empty array and an ``axis`` it does not have (NaN and inf are allowed).

    Parameters
    ----------
    finetune_losses : array
        L_B after fine-tuning, one entry per lr along ``axis`` (lrs ascending), any other axes.
    axis : int
        The lr axis.

    Returns
    -------
    array of int
        The index of the chosen lr, with ``axis`` removed.
    """
    losses = _checks.numeric("finetune_losses", finetune_losses)
    if not -np.ndim(losses) <= axis < np.ndim(losses):
        raise ValueError(f"axis={axis!r} is not an axis of finetune_losses (shape {np.shape(losses)})")
    if isinstance(finetune_losses, np.ndarray):
        return _tuned_choice(finetune_losses, axis)
    finite = jnp.where(jnp.isfinite(finetune_losses), finetune_losses, jnp.inf)
    return jnp.argmin(finite, axis=axis)
