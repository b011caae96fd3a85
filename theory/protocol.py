"""The protocol of docs/ARCHITECTURE.md on linear networks: pre-train to many times T, modify, measure.

Two paths give the same ``Curves``:
- ``closed_form_curves``: aligned balanced networks, per-mode laws, a whole T grid in one call;
- ``simulated_curves``: any network and task, from a stored trajectory of weights (gradient flow,
  GD or a budget series), fine-tuning by GD.
Both use the exact Gaussian excess (``perturbation.excess``) at every depth: nothing is drawn.
Both are pure functions of arrays, so ``jit`` and ``vmap`` over cells apply unchanged.
``closed_form_weights`` gives the closed form's trajectory as weights, for the measurements that need
them (``quantization.quantized_curves``, ``measure.curvature_curves``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from theory import _checks, closed_form, perturbation
from theory.finetune import finetune_gd
from theory.network import Params, init_aligned_balanced, layer_norms_sq, task_loss


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Curves:
    """Every measurement as a function of pre-training time (leading axis: the T grid).

    ``pretrain_loss`` / ``finetune_loss`` are L_A / L_B of the clean model; ``perturbed_*`` the
    expected losses after Gaussian noise; ``finetuned_*`` the losses after fine-tuning on B.
    """

    pretrain_loss: jax.Array
    finetune_loss: jax.Array
    excess: jax.Array
    perturbed_pretrain_loss: jax.Array
    perturbed_finetune_loss: jax.Array
    finetuned_pretrain_loss: jax.Array
    finetuned_finetune_loss: jax.Array
    layer_norm_sq: jax.Array  # (T, depth)

    def by_modification(self) -> dict[tuple[str, str], jax.Array]:
        """{(modification, metric): curve} in the result store's vocabulary."""
        return {
            ("none", "pretrain_loss"): self.pretrain_loss,
            ("none", "finetune_loss"): self.finetune_loss,
            ("gaussian", "pretrain_loss"): self.perturbed_pretrain_loss,
            ("gaussian", "finetune_loss"): self.perturbed_finetune_loss,
            ("gaussian", "excess"): self.excess,
            ("finetune", "pretrain_loss"): self.finetuned_pretrain_loss,
            ("finetune", "finetune_loss"): self.finetuned_finetune_loss,
        }


def _embedded_network(u, depth: int, d_in: int, h: int, d_out: int) -> Params:
    """Balanced aligned weights of widths (d_in, h, ..., d_out) with strengths u on the first modes
    of the canonical bases (losses are rotation invariant, so U = V = I loses nothing)."""
    r = u.shape[-1]
    return init_aligned_balanced(jnp.eye(d_out, r, dtype=u.dtype), jnp.eye(d_in, r, dtype=u.dtype), u, h, depth)


def pretrained_strengths(s, u0, T, depth: int = 2, dt_max: float = 0.02, weight_decay=0.0) -> jax.Array:
    """Strengths u_i(T) = a_i(T)^L of an aligned balanced network pre-trained on A + weight decay
    lambda/2 sum_k ||W_k||^2 for flow times T: u(T) = c / (1 + (c/u0 - 1) e^{-2cT}), c = s - lambda, at
    depth 2 (``closed_form.logistic_strength``), else the per-mode ODE
    da/dt = a^(L-1) (s - a^L) - lambda a from a_i(0) = u0^(1/L) (``closed_form.mode_flow``, pull toward
    a_ref = 0). Unchecked: ``closed_form_curves`` checks its arguments and calls it.

    Parameters
    ----------
    s : array, shape (r,)
        Singular values of A (> 0; 0 for a padded mode, which stays 0).
    u0 : float or array, shape (r,)
        Initial strength of every mode (> 0).
    T : array, shape (n_t,)
        Pre-training flow times (>= 0).
    depth : int
        Number of layers L (>= 1).
    dt_max : float
        Largest RK4 step of the per-mode ODE (> 0).
    weight_decay : float
        lambda, the coupled L2 decay of every layer during pre-training (>= 0).

    Returns
    -------
    array, shape (n_t, r)
    """
    if depth == 2 and _checks.python_zero(weight_decay):
        return closed_form.mode_strength(s, u0, T[:, None])
    if depth == 2:  # s = 0 (a padded mode) with u0 = 0 stays 0 under every lambda
        return closed_form.logistic_strength(jnp.asarray(s) - weight_decay, u0, T[:, None])
    a0 = jnp.full_like(s, u0 ** (1.0 / depth))
    if _checks.python_zero(weight_decay):
        return closed_form.mode_flow(a0, s, T, depth, dt_max=dt_max)
    return closed_form.mode_flow(a0, s, T, depth, reg=weight_decay, a_ref=0.0, dt_max=dt_max)


def _finetuned_strengths(u, b, tau, depth: int, reg, dt_max: float):
    """Strengths after fine-tuning time tau: the logistic law (depth 2, reg = 0) or the per-mode ODE."""
    if depth == 2 and _checks.python_zero(reg):
        return closed_form.finetune_strength(b, u, tau)
    # Integrate to t = 1 at rate tau: each T may carry its own fine-tuning time tau(T).
    a_T = u ** (1.0 / depth)
    tau = jnp.asarray(tau, u.dtype)
    return closed_form.mode_flow(
        a_T, b, jnp.ones(1, u.dtype), depth, reg, a_ref=a_T, dt_max=dt_max / jnp.maximum(jnp.max(tau), 1e-12), rate=tau
    )[0]


def closed_form_curves(
    s,
    b,
    u0,
    T,
    *,
    gamma,
    sigma1,
    sigma2,
    d_in: int,
    h: int,
    d_out: int,
    tau,
    reg=0.0,
    depth: int = 2,
    dt_max: float = 0.02,
    weight_decay=0.0,
    replay=0.0,
) -> Curves:
    """All curves for an aligned balanced network on A = U diag(s) V^T, B = U diag(b) V^T.

    Pre-training with weight decay lambda_wd: u(T) = c / (1 + (c/u0 - 1) e^{-2cT}), c = s - lambda_wd,
    at depth 2, else the per-mode ODE (``pretrained_strengths``).
    Gaussian (noise std gamma * sigma_1 on W_1, gamma * sigma_2 on every later layer): the exact
    excess, from ||W_1||^2 = ||W_2||^2 = sum_i u_i(T) at depth 2, else ``perturbation.excess`` on
    the embedded network. Nothing is drawn.
    Fine-tuning for tau = lr * steps on (1 - r) L_B + r L_A (replay r): since
    (1 - r)/2 ||M - B||^2 + r/2 ||M - A||^2 = 1/2 ||M - ((1 - r) B + r A)||^2 + const, each mode heads
    for (1 - r) b_i + r s_i, by the logistic law from u(T) when reg = 0 and depth = 2, else the per-mode
    ODE with the L2 pull reg toward the pre-trained weights. L_B after fine-tuning stays the population
    L_B of B (the task's cost), L_A after it the forgetting.

    Refuses an ``s`` that is not a non-empty 1-d array of values > 0, a ``b`` of another shape or with
    values < 0, a ``T`` that is not a 1-d array of times >= 0, more modes than min(d_in, h, d_out),
    a replay outside [0, 1], and what the laws refuse (u0 <= 0; gamma, sigmas, tau, reg or weight_decay
    < 0; widths, depth < 1; dt_max <= 0).

    Parameters
    ----------
    s : array, shape (r,)
        Singular values of the pre-training task A (> 0).
    b : array, shape (r,)
        Singular values of the fine-tuning task B along the same modes (>= 0).
    u0 : float
        Initial strength of every mode (> 0).
    T : array, shape (n_t,)
        Pre-training flow times (>= 0).
    gamma : float
        Noise size, in units of the per-layer std (>= 0).
    sigma1, sigma2 : float
        Per-entry noise std of the first layer and of every later layer at gamma = 1 (>= 0).
    d_in, h, d_out : int
        The network's widths (>= r each).
    tau : float
        Fine-tuning flow time lr x steps (>= 0).
    reg : float
        Strength of the L2 pull toward the pre-trained weights during fine-tuning (>= 0).
    depth : int
        Number of layers L (>= 1).
    dt_max : float
        Largest RK4 step of the per-mode ODE (> 0).
    weight_decay : float
        Coupled L2 decay lambda/2 sum_k ||W_k||^2 of every layer during pre-training (>= 0).
    replay : float
        r, the share of L_A in the fine-tuning loss (1 - r) L_B + r L_A, in [0, 1].

    Returns
    -------
    Curves
        Every curve of the protocol on ``T``.
    """
    s = jnp.asarray(_checks.positive("s", s, ndim=1))
    b = _checks.non_negative("b", b, ndim=1)
    _checks.same_shape("b", b, "s", s)
    b = jnp.asarray(b, s.dtype)
    T = jnp.asarray(_checks.non_negative("T", T, ndim=1), s.dtype)
    d_in, h, d_out, depth = (
        _checks.positive_int(n, v) for n, v in (("d_in", d_in), ("h", h), ("d_out", d_out), ("depth", depth))
    )
    if s.shape[0] > min(d_in, h, d_out):
        raise ValueError(f"s has {s.shape[0]} modes; allowed: <= min(d_in, h, d_out)={min(d_in, h, d_out)}")
    u0 = _checks.positive("u0", u0)
    _checks.broadcast(u0=u0, s=s)
    tau = _checks.non_negative("tau", tau)
    _checks.broadcast(tau=tau, T_by_mode=np.empty((T.shape[0], s.shape[0])))
    _checks.non_negative("reg", reg, ndim=0)
    dt_max = _checks.positive("dt_max", dt_max, ndim=0)
    weight_decay = _checks.non_negative("weight_decay", weight_decay, ndim=0)
    replay = _checks.floats("replay", replay, ndim=0, least=0, most=1)
    u = pretrained_strengths(s, u0, T, depth, dt_max, weight_decay)
    target = b if _checks.python_zero(replay) else (1.0 - replay) * b + replay * s
    u_ft = _finetuned_strengths(u, target, tau, depth, reg, dt_max)
    if depth == 2:
        norm = jnp.sum(u, axis=-1)
        excess = perturbation.excess_from_norms(norm, norm, gamma, sigma1, sigma2, d_in, h, d_out)
        norms = jnp.stack([norm, norm], axis=-1)
    else:
        sigmas = (sigma1,) + (sigma2,) * (depth - 1)
        nets = jax.vmap(lambda u_T: _embedded_network(u_T, depth, d_in, h, d_out))(u)
        excess = jax.vmap(lambda Ws: perturbation.excess(Ws, gamma, sigmas))(nets)
        norms = jax.vmap(layer_norms_sq)(nets)
    L_A = closed_form.loss_from_strengths(s, u)
    L_B = closed_form.loss_from_strengths(b, u)
    return Curves(
        pretrain_loss=L_A,
        finetune_loss=L_B,
        excess=excess,
        perturbed_pretrain_loss=L_A + excess,
        perturbed_finetune_loss=L_B + excess,
        finetuned_pretrain_loss=closed_form.loss_from_strengths(s, u_ft),
        finetuned_finetune_loss=closed_form.loss_from_strengths(b, u_ft),
        layer_norm_sq=norms,
    )


def simulated_curves(
    Ws_T: Params,
    A,
    B,
    *,
    gamma,
    sigmas,
    lr,
    steps: int,
    reg=0.0,
    finetune_data: tuple[jax.Array, jax.Array] | None = None,
    replay=0.0,
) -> Curves:
    """All curves from a stored trajectory ``Ws_T`` (each layer with a leading axis over T).

    Gaussian: the exact excess (``perturbation.excess``) at every depth, noise std gamma * sigma_k
    on layer k (nothing is drawn).
    Fine-tuning: ``steps`` of GD at ``lr`` (a scalar, or one rate per T) on
    (1 - r) L_B + r L_A + reg/2 ||W - W(T)||^2 (replay r: ``finetune.regularized_objective``), with
    ``finetune_data`` = (X, Y) the empirical loss of those samples of B in place of L_B; the stored L_B
    after fine-tuning is the population loss (held out), the stored L_A after it the forgetting.

    Refuses ``Ws_T`` that ``_checks.weights`` refuses (with the leading T axis), A and B that are not
    finite matrices of the network's shape, an ``lr`` that is not > 0 or neither a scalar nor one per
    T, and what ``perturbation.excess`` and ``finetune.finetune_gd`` refuse (a replay outside [0, 1]).

    Parameters
    ----------
    Ws_T : tuple of arrays
        The trajectory: layer k of shape (n_t, width_k, width_{k-1}), one slice per pre-training time.
    A : array, shape (d_out, d_in)
        The pre-training teacher.
    B : array, shape (d_out, d_in)
        The fine-tuning teacher.
    gamma : float
        Noise size, in units of the per-layer std (>= 0).
    sigmas : sequence of float
        Per-entry noise std of each layer at gamma = 1 (>= 0), one per layer.
    lr : float or array, shape (n_t,)
        Fine-tuning learning rate (> 0).
    steps : int
        Fine-tuning gradient steps (>= 1).
    reg : float
        Strength of the L2 pull toward W(T) (>= 0).
    finetune_data : tuple (X, Y), optional
        n samples of B, X of shape (n, d_in) and Y of shape (n, d_out); None for the population loss.
    replay : float
        r, the share of the population L_A in the fine-tuning loss, in [0, 1] (a Python 0: L_B alone).

    Returns
    -------
    Curves
        Every curve of the protocol, one value per slice of ``Ws_T``.
    """
    Ws_T = _checks.weights("Ws_T", Ws_T, batch_axes=1)
    shape = (Ws_T[-1].shape[-2], Ws_T[0].shape[-1])
    A, B = _checks.floats("A", A, ndim=2), _checks.floats("B", B, ndim=2)
    _checks.shaped("A", A, shape, "d_out x d_in of the network")
    _checks.shaped("B", B, shape, "d_out x d_in of the network")
    lr = _checks.positive("lr", lr, ndim=(0, 1))
    _checks.broadcast(lr=lr, T=np.empty(Ws_T[0].shape[:1]))
    steps = _checks.positive_int("steps", steps)
    lr_T = jnp.broadcast_to(jnp.asarray(lr, Ws_T[0].dtype), Ws_T[0].shape[:1])  # scalar, or one lr per T

    def at(Ws, lr):
        excess = perturbation.excess(Ws, gamma, sigmas)
        W_ft = finetune_gd(Ws, B, lr, steps, reg, finetune_data, replay=replay, A=A)
        L_A, L_B = task_loss(Ws, A), task_loss(Ws, B)
        return Curves(
            pretrain_loss=L_A,
            finetune_loss=L_B,
            excess=excess,
            perturbed_pretrain_loss=L_A + excess,
            perturbed_finetune_loss=L_B + excess,
            finetuned_pretrain_loss=task_loss(W_ft, A),
            finetuned_finetune_loss=task_loss(W_ft, B),
            layer_norm_sq=layer_norms_sq(Ws),
        )

    return jax.vmap(at)(Ws_T, lr_T)


def closed_form_weights(s, u0, T, U, V, *, h: int, depth: int = 2, dt_max: float = 0.02, weight_decay=0.0) -> Params:
    """The weights of the aligned balanced network along its closed-form trajectory: at each T,
    ``network.init_aligned_balanced`` with the strengths u_i(T) (``pretrained_strengths``) in the
    teacher's own singular vectors U, V. Gradient flow keeps an aligned balanced network aligned and
    balanced, so these are W(T) exactly; unlike the canonical bases the losses alone may use, the
    teacher's bases matter to anything that is not rotation invariant (per-channel quantization).
    Refuses what ``init_aligned_balanced`` refuses, an ``s`` that is not 1-d values > 0 and
    weight_decay < 0.

    Parameters
    ----------
    s : array, shape (r,)
        Singular values of A (> 0).
    u0 : float
        Initial strength of every mode (> 0).
    T : array, shape (n_t,)
        Pre-training flow times (>= 0).
    U, V : arrays, shapes (d_out, r) and (d_in, r)
        The teacher's singular vectors.
    h : int
        Hidden width (>= r).
    depth : int
        Number of layers L (>= 1).
    dt_max : float
        Largest RK4 step of the per-mode ODE (depth != 2).
    weight_decay : float
        Coupled L2 decay of every layer during pre-training (>= 0): the law ``pretrained_strengths`` follows.

    Returns
    -------
    tuple of arrays
        (W_1, ..., W_L), each with a leading T axis.
    """
    s = jnp.asarray(_checks.positive("s", s, ndim=1))
    T = jnp.asarray(_checks.non_negative("T", T, ndim=1), s.dtype)
    weight_decay = _checks.non_negative("weight_decay", weight_decay, ndim=0)
    u = pretrained_strengths(s, u0, T, depth, dt_max, weight_decay)
    return jax.vmap(lambda u_T: init_aligned_balanced(U, V, u_T, h, depth))(u)
