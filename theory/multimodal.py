"""Multimodal adaptation, the linear analogue (docs/THEORY.md, "Modification 4").

A new modality z (dimension d_z, white) enters the pre-trained network M = W_L ... W_1 through a
projector x = P z; task B reads y = B z. Its loss is L_B(P, W) = 1/2 ||M(W) P - B||_F^2. Stage 1 fits
P alone from P_0 = 0 with W frozen (so L_A cannot change); stage 2 trains P and every W_k jointly, which
is fine-tuning of the depth-(L+1) network (P, W_1, ..., W_L) on B (``finetune.finetune_gd``).

Stage 1 is linear least squares in P, exact for ``steps`` GD steps at ``lr`` on M's singular basis
M = sum_j sigma_j a_j v_j^T: the component v_j^T P relaxes geometrically to a_j^T B / sigma_j,

    v_j^T P_n = v_j^T P_0 + (1 - (1 - lr sigma_j^2)^n) (a_j^T B - sigma_j v_j^T P_0) / sigma_j,

(gradient flow for time tau: exp(-tau sigma_j^2) in place of (1 - lr sigma_j^2)^n); the part of P
outside M's row space stays P_0's, and the part of B outside M's range is never fitted.

The task: B = (c U + sqrt(1 - c^2) U_perp) diag(b) R^T, with U the teacher A's left singular vectors,
U_perp orthonormal directions orthogonal to all of them, R (d_z x r) orthonormal, b B's spectrum and
c = ``overlap`` the cosine of the principal angle between B's output subspace and A's. Pure JAX, no I/O.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from theory import _checks, tasks
from theory.finetune import finetune_gd
from theory.network import Params, end_to_end, task_loss


def modality_task(U: jax.Array, b, overlap, key: jax.Array, d_z: int) -> jax.Array:
    """B = (c U + sqrt(1 - c^2) U_perp) diag(b) R^T, c = ``overlap``: task B of the new modality.

    U_perp is drawn orthogonal to span(U) (``tasks._rotate``, the rotation of the ``rotated`` family)
    and R from ``key``; with P_0 = 0 no result depends on R (z is white and P is free: B -> B Q,
    P -> P Q for an orthogonal Q leaves every loss and GD step unchanged). Refuses a ``U`` that is not
    a matrix, a ``b`` of another length than U's columns or below 0, an ``overlap`` outside [0, 1] (or
    below 1 where d_out < 2 r leaves no room for U_perp), a ``key`` that is not a PRNG key and
    d_z < r.

    Parameters
    ----------
    U : array, shape (d_out, r)
        A's left singular vectors (orthonormal columns).
    b : array, shape (r,)
        B's singular values (>= 0).
    overlap : float
        c in [0, 1]: 1 puts B's outputs on A's modes, 0 orthogonal to everything A outputs.
    key : PRNG key
        Seeds U_perp and R.
    d_z : int
        The modality's dimension (>= r).

    Returns
    -------
    array, shape (d_out, d_z)
    """
    U = _checks.floats("U", U, ndim=2)
    d_out, r = U.shape
    b = _checks.non_negative("b", b, ndim=1)
    _checks.shaped("b", b, (r,), "one value per column of U")
    c = _checks.floats("overlap", overlap, ndim=0, least=0, most=1)
    _checks.prng_key("key", key)
    d_z = _checks.positive_int("d_z", d_z)
    if d_z < r:
        raise ValueError(f"d_z={d_z} must be >= the task rank {r}: B has r independent input directions")
    ku, kr = jax.random.split(jax.random.fold_in(key, 11))
    R = tasks.random_orthonormal(kr, d_z, r).astype(U.dtype)
    if 2 * r > d_out:
        if not _checks._traced(c) and c != 1:
            raise ValueError(f"overlap={c!r} needs d_out >= 2 r = {2 * r} (directions outside A's); only 1 allowed")
        return (U * b) @ R.T
    return (tasks._rotate(ku, U, jnp.arccos(c)) * b) @ R.T


def projector_fit(M: jax.Array, B: jax.Array, lr, steps: int, P0: jax.Array | None = None, flow: bool = False):
    """Stage 1 in closed form: P after ``steps`` GD steps at ``lr`` on 1/2 ||M P - B||^2 from P0 (module
    docstring), or with ``flow`` after gradient flow for time tau = lr * steps. Exact for any M.
    Refuses M, B that are not finite matrices with as many rows, lr <= 0, steps < 0 and a P0 of
    another shape than (d_in, d_z).

    Parameters
    ----------
    M : array, shape (d_out, d_in)
        The frozen network's end-to-end map.
    B : array, shape (d_out, d_z)
        The modality's task.
    lr : float
        Stage-1 learning rate (> 0; GD is stable where lr sigma_max^2 < 2).
    steps : int
        Stage-1 steps (>= 0).
    P0 : array, shape (d_in, d_z), optional
        The projector's start; 0 when None.
    flow : bool
        Gradient flow for tau = lr * steps instead of GD.

    Returns
    -------
    array, shape (d_in, d_z)
    """
    M, B = _checks.floats("M", M, ndim=2), _checks.floats("B", B, ndim=2)
    _checks.shaped("B", B, (M.shape[0], B.shape[1]), "d_out x d_z, d_out the rows of M")
    lr = _checks.positive("lr", lr, ndim=0)
    steps = _checks.integer("steps", steps, 0)
    P0 = jnp.zeros((M.shape[1], B.shape[1]), M.dtype) if P0 is None else _checks.floats("P0", P0, ndim=2)
    _checks.shaped("P0", P0, (M.shape[1], B.shape[1]), "d_in x d_z")
    a, sigma, vT = jnp.linalg.svd(M, full_matrices=False)
    x = lr * sigma**2
    # 1 - (1 - x)^n and its flow limit 1 - e^{-n x}, accurate where x is tiny (an unlearned mode).
    fitted = -jnp.expm1(-steps * x) if flow else -jnp.expm1(steps * jnp.log1p(-x))
    # fitted / sigma, which tends to lr * steps * sigma as sigma -> 0 (a direction M does not read).
    gain = jnp.where(x > 0, fitted / jnp.where(x > 0, sigma, 1.0), lr * steps * sigma)
    return P0 + vT.T @ (gain[:, None] * (a.T @ B - sigma[:, None] * (vT @ P0)))


def fitted_fraction(u, lr, steps: int):
    """g = 1 - (1 - lr u^2)^steps: the share of an in-range target that stage 1 fits along a mode of
    strength u (from P_0 = 0). Refuses u < 0, lr <= 0 and steps < 0."""
    u = _checks.non_negative("u", u)
    lr = _checks.positive("lr", lr, ndim=0)
    steps = _checks.integer("steps", steps, 0)
    return -jnp.expm1(steps * jnp.log1p(-lr * jnp.asarray(u) ** 2))


def learned_mode_damage(b, overlap, g, tau):
    """The rise of L_A that stage 2 causes on a learned mode (u = s), to leading order in its time tau:

        Delta L_A = (tau^2 / 2) g^2 c^2 b^4 [(1 - c^2) + 4 (1 - g)^2 c^2]

    (docs/THEORY.md, "Modification 4"): the first term turns the mode's hidden unit toward B's
    outputs outside A's range, the second stretches the mode by the in-range target stage 1 left.
    Refuses b < 0, an overlap outside [0, 1], g outside [0, 1] and tau < 0.

    Parameters
    ----------
    b : float or array
        B's strength on the mode (>= 0).
    overlap : float
        c in [0, 1].
    g : float or array
        Stage 1's fitted fraction of the mode (``fitted_fraction``).
    tau : float
        Stage-2 time lr * steps (>= 0).
    """
    b = _checks.non_negative("b", b)
    c = _checks.floats("overlap", overlap, least=0, most=1)
    g = _checks.floats("g", g, least=0, most=1)
    tau = _checks.non_negative("tau", tau)
    return 0.5 * tau**2 * g**2 * c**2 * b**4 * ((1 - c**2) + 4 * (1 - g) ** 2 * c**2)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class MultimodalCurves:
    """L_A and L_B after each stage as functions of T (leading axis): ``projector_*`` after stage 1 (P
    alone), ``joint_*`` after stage 2 (P and every W_k); ``*_excess`` is L_A after the stage minus the
    clean L_A(W(T)) (exactly 0 after stage 1)."""

    projector_pretrain_loss: jax.Array
    projector_finetune_loss: jax.Array
    projector_excess: jax.Array
    joint_pretrain_loss: jax.Array
    joint_finetune_loss: jax.Array
    joint_excess: jax.Array


def adapt(Ws: Params, B: jax.Array, *, projector_lr, projector_steps: int, lr, steps: int, reg=0.0):
    """Both stages from one network: (P after stage 1, (P, W_1, ..., W_L) after stage 2). Stage 1 is
    ``projector_fit`` from P_0 = 0; stage 2 is ``finetune_gd`` of (P, W_1, ..., W_L) on B at ``lr`` for
    ``steps``, ``reg`` pulling every matrix toward its value at the start of stage 2."""
    P = projector_fit(end_to_end(Ws), B, projector_lr, projector_steps)
    return P, finetune_gd((P, *Ws), B, lr, steps, reg)


def multimodal_curves(
    Ws_T: Params, A, B, *, projector_lr, projector_steps: int, lr, steps: int, reg=0.0
) -> MultimodalCurves:
    """Both stages at every T of a trajectory W(T) (``adapt``, vmapped): L_A (on the original inputs
    x ~ N(0, I)) and L_B (on z ~ N(0, I)) after each. Refuses ``Ws_T`` as ``protocol.simulated_curves``
    does, an ``A`` other than d_out x d_in, a ``B`` with other than d_out rows, and what
    ``projector_fit`` and ``finetune_gd`` refuse.

    Parameters
    ----------
    Ws_T : tuple of arrays
        The trajectory: layer k of shape (n_t, width_k, width_{k-1}).
    A : array, shape (d_out, d_in)
        The pre-training teacher.
    B : array, shape (d_out, d_z)
        The modality's task (``modality_task``).
    projector_lr : float
        Stage-1 learning rate (> 0).
    projector_steps : int
        Stage-1 GD steps (>= 0; 0 leaves P = 0, where stage 2 starts at a saddle and nothing moves).
    lr : float or array, shape (n_t,)
        Stage-2 learning rate (> 0): one, or one per T.
    steps : int
        Stage-2 GD steps (>= 1).
    reg : float
        L2 pull of stage 2 toward its start (>= 0).

    Returns
    -------
    MultimodalCurves
        Each field of shape (n_t,).
    """
    Ws_T, A = _checks.trajectory(Ws_T, A)
    B = _checks.floats("B", B, ndim=2)
    _checks.shaped("B", B, (A.shape[0], B.shape[1]), "d_out x d_z, d_out the network's")
    lr_T = jnp.broadcast_to(_checks.positive("lr", lr, ndim=(0, 1)), Ws_T[0].shape[:1])

    def at(Ws, lr):
        P, joint = adapt(Ws, B, projector_lr=projector_lr, projector_steps=projector_steps, lr=lr, steps=steps, reg=reg)
        L_A = task_loss(Ws, A)
        M, M_after = end_to_end(Ws), end_to_end(joint[1:])
        # L_A(W') - L_A(W) = 1/2 <M' - M, M' + M - 2A>: no cancellation where the damage is small.
        excess = 0.5 * jnp.sum((M_after - M) * (M_after + M - 2 * A))
        # Stage 1 leaves W untouched: its L_A is the clean L_A itself, its excess exactly 0.
        return MultimodalCurves(
            L_A, task_loss((P, *Ws), B), jnp.zeros_like(L_A), task_loss(joint[1:], A), task_loss(joint, B), excess
        )

    return jax.vmap(at)(Ws_T, lr_T)
