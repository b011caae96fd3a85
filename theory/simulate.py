"""Simulated training of linear networks: gradient flow and optax optimisers (docs/THEORY.md, "Pre-training").

Everything runs under ``lax.scan`` over steps, so one compile serves a whole trajectory and ``vmap``
over cells (seeds, hyperparameters, budgets) adds no Python loop. Pre-training time is flow time:
for gradient descent T = lr * steps. The pre-training mitigations enter as ``optimizer``'s weight decay
and ``train``'s sam_rho (``theory.mitigation``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from theory import _checks, _random
from theory.mitigation import sam_gradient
from theory.network import Params, sample_loss, task_loss
from theory.ode import rk4_solve

LossFn = Callable[[Params], jax.Array]
SCHEDULES = ("constant", "cosine", "wsd")
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")


def gradient_flow(loss_fn: LossFn, Ws0: Params, t_grid, dt_max: float = 0.01) -> Params:
    """dW/dt = -grad L(W), integrated by Runge-Kutta 4 with steps of at most ``dt_max``.

    Returns the parameters at every time of ``t_grid`` (a leading axis of len(t_grid) on each layer).
    Refuses a ``loss_fn`` that cannot be called, ``Ws0`` that ``_checks.weights`` refuses, and what
    ``ode.rk4_solve`` refuses (t_grid, dt_max).

    Parameters
    ----------
    loss_fn : callable
        Weights -> scalar loss.
    Ws0 : tuple of arrays
        The weights at t = 0.
    t_grid : array, shape (n_t,)
        The flow times at which W is returned (>= 0, ascending).
    dt_max : float
        Largest RK4 step (> 0).

    Returns
    -------
    tuple of arrays
        Each layer with a leading axis of n_t.
    """
    _checks.function("loss_fn", loss_fn)
    Ws0 = _checks.weights("Ws0", Ws0)
    t_grid = jnp.asarray(_checks.non_negative("t_grid", t_grid, ndim=1), Ws0[0].dtype)
    grad = jax.grad(loss_fn)
    return rk4_solve(lambda W: jax.tree.map(jnp.negative, grad(W)), Ws0, t_grid, dt_max)


def schedule(kind: str, peak_lr, budget, warmup=0, decay_fraction: float = 0.2) -> optax.Schedule:
    """Learning rate as a function of the step count, annealed to exactly zero at step ``budget``.

    constant: lr(t) = peak for t < budget.
    cosine:   linear warmup over ``warmup`` steps, then lr(t) = peak * 1/2 (1 + cos(pi (t - w)/(budget - w))).
    wsd:      warmup, stable at peak, then linear decay to zero over the last ``decay_fraction`` of budget.
    After ``budget`` steps lr = 0 for every kind, so a run padded to a longer scan is exactly the run
    of length ``budget``: this is how budgets of different lengths share one vmapped scan.
    ``budget`` and ``warmup`` may be traced (vmapped over a series of budgets). Refuses an unknown
    ``kind``, peak_lr <= 0, budget <= 0, warmup < 0 and a decay_fraction outside [0, 1].

    Parameters
    ----------
    kind : str
        "constant", "cosine" or "wsd".
    peak_lr : float
        The largest rate (> 0).
    budget : int or traced int
        The step at which the rate reaches zero (> 0).
    warmup : int or traced int
        Steps of linear warmup (>= 0).
    decay_fraction : float
        The share of ``budget`` over which "wsd" decays, in [0, 1].

    Returns
    -------
    optax.Schedule
        Step count -> learning rate.
    """
    _checks.one_of("schedule", kind, SCHEDULES)
    peak_lr = _checks.positive("lr", peak_lr, ndim=0)
    budget = _checks.positive("budget", budget, ndim=0)
    warmup = _checks.non_negative("warmup", warmup, ndim=0)
    decay_fraction = _checks.floats("decay_fraction", decay_fraction, ndim=0, least=0, most=1)

    def lr(count):
        t = jnp.asarray(count, jnp.result_type(float))
        w = jnp.asarray(warmup, t.dtype)
        warm = jnp.where(w > 0, jnp.minimum(1.0, (t + 1.0) / jnp.maximum(w, 1.0)), 1.0)
        if kind == "constant":
            shape = 1.0
        elif kind == "cosine":
            progress = jnp.clip((t - w) / jnp.maximum(budget - w, 1.0), 0.0, 1.0)
            shape = 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
        else:
            decay_start = budget * (1.0 - decay_fraction)
            shape = jnp.clip((budget - t) / jnp.maximum(budget - decay_start, 1.0), 0.0, 1.0)
        return jnp.where(t < budget, peak_lr * warm * shape, 0.0)

    return lr


def optimizer(
    name: str, learning_rate, momentum: float = 0.9, weight_decay: float = 0.0
) -> optax.GradientTransformation:
    """The optax optimiser ``name`` (sgd, momentum, adam, adamw) at a float or schedule learning rate.
    Refuses an unknown ``name``, a learning_rate that is neither a function nor a number > 0, a
    momentum outside [0, 1] and weight_decay < 0.

    Parameters
    ----------
    name : str
        "sgd", "momentum", "adam" or "adamw".
    learning_rate : float or optax.Schedule
        A rate (> 0) or a step -> rate function.
    momentum : float
        Momentum of "momentum", in [0, 1].
    weight_decay : float
        lambda (>= 0): decoupled weight decay of "adamw"; for the others coupled L2, lambda W added to
        the gradient (the gradient of lambda/2 ||W||^2), so under "sgd" the flow is that of
        ``with_weight_decay``.

    Returns
    -------
    optax.GradientTransformation
    """
    _checks.one_of("optimizer", name, OPTIMIZERS)
    if not callable(learning_rate):
        learning_rate = _checks.positive("learning_rate", learning_rate, ndim=0)
    momentum = _checks.floats("momentum", momentum, ndim=0, least=0, most=1)
    weight_decay = _checks.non_negative("weight_decay", weight_decay, ndim=0)
    decayed = not _checks.python_zero(weight_decay)  # traced: decayed
    if name == "sgd":
        opt = optax.sgd(learning_rate)
    elif name == "momentum":
        opt = optax.sgd(learning_rate, momentum=momentum)
    elif name == "adam":
        opt = optax.adam(learning_rate)
    else:
        opt = optax.adamw(learning_rate, weight_decay=weight_decay)
    if decayed and name != "adamw":
        # Coupled L2 decay added to the gradient, so it follows the schedule and stops at lr = 0.
        opt = optax.chain(optax.add_decayed_weights(weight_decay), opt)
    return opt


Batch = Any  # a pytree of arrays with a leading step axis: one minibatch per step (e.g. (X, Y))


class Objective(NamedTuple):
    """A training loss ``loss(W, batch)`` and ``sample(key, n_steps)`` drawing every step's batch at once.

    Drawing all batches in one vectorised call, outside the step loop, keeps the random-number code
    out of the scanned body: the same numbers, a fraction of the compile time.
    """

    loss: Callable[[Params, Batch], jax.Array]
    sample: Callable[[jax.Array, int], Batch]


def train(
    objective: Objective,
    Ws0: Params,
    opt: optax.GradientTransformation,
    n_steps: int,
    record_every: int,
    key: jax.Array | None = None,
    sam_rho: float = 0.0,
) -> Params:
    """Run ``opt`` for ``n_steps`` on ``objective``; return W every ``record_every`` steps.

    The result has a leading axis of n_steps // record_every snapshots (after steps record_every,
    2 record_every, ...). ``key`` seeds the batches; an objective that draws (minibatch) requires it.
    With ``sam_rho`` > 0 the optimiser is fed ``sam_gradient`` (sharpness-aware minimisation, two
    gradients a step) instead of the gradient. Refuses an ``objective`` that is not an ``Objective``,
    ``Ws0`` that ``_checks.weights`` refuses, an ``opt`` that is not an optax transformation, n_steps
    or record_every < 1, a ``key`` that is neither None nor a PRNG key and sam_rho < 0.

    Parameters
    ----------
    objective : Objective
        The loss and whether it draws batches.
    Ws0 : tuple of arrays
        The weights at step 0.
    opt : optax.GradientTransformation
        The optimiser, with its schedule.
    n_steps : int
        Steps to run (>= 1).
    record_every : int
        Steps between two snapshots (>= 1).
    key : PRNG key, optional
        Seeds the batches; required by a minibatch objective.
    sam_rho : float
        SAM's ascent radius rho (>= 0; 0 = the plain gradient).

    Returns
    -------
    tuple of arrays
        Each layer with a leading axis of n_steps // record_every.
    """
    _checks.instance("objective", objective, Objective)
    Ws0 = _checks.weights("Ws0", Ws0)
    _checks.instance("opt", opt, optax.GradientTransformation)
    n_steps = _checks.positive_int("n_steps", n_steps)
    record_every = _checks.positive_int("record_every", record_every)
    if key is not None:
        _checks.prng_key("key", key)
    if n_steps % record_every:
        raise ValueError(f"n_steps={n_steps} must be a multiple of record_every={record_every}")
    sam_rho = _checks.non_negative("sam_rho", sam_rho, ndim=0)
    grad = jax.grad(objective.loss)
    if not _checks.python_zero(sam_rho):
        plain, grad = grad, lambda W, batch: sam_gradient(plain, W, batch, sam_rho)

    def step(carry, batch):
        W, s = carry
        updates, s = opt.update(grad(W, batch), s, W)
        return (optax.apply_updates(W, updates), s), None

    def block(carry, batches):
        carry, _ = jax.lax.scan(step, carry, batches)
        return carry, carry[0]

    batches = jax.tree.map(
        lambda x: x.reshape((n_steps // record_every, record_every) + x.shape[1:]), objective.sample(key, n_steps)
    )
    _, Ws = jax.lax.scan(block, (Ws0, opt.init(Ws0)), batches)
    return Ws


def population_objective(A: jax.Array) -> Objective:
    """Full-batch (population) loss 1/2 ||M(W) - A||_F^2; no data. Refuses an ``A`` that is not a
    finite matrix.

    Parameters
    ----------
    A : array, shape (d_out, d_in)
        The teacher matrix.

    Returns
    -------
    Objective
    """
    A = _checks.floats("A", A, ndim=2)
    return Objective(lambda W, _batch: task_loss(W, A), lambda _key, n_steps: jnp.zeros((n_steps,), A.dtype))


def minibatch_objective(A: jax.Array, batch_size: int, label_noise: float = 0.0) -> Objective:
    """Online SGD: a fresh batch x ~ N(0, I), y = A x + noise each step; unbiased for the population loss.
    Refuses an ``A`` that is not a finite matrix, batch_size < 1 and label_noise < 0.

    Parameters
    ----------
    A : array, shape (d_out, d_in)
        The teacher matrix.
    batch_size : int
        Samples per step (>= 1).
    label_noise : float
        Std of the Gaussian noise added to each target entry (>= 0).

    Returns
    -------
    Objective
    """
    A = _checks.floats("A", A, ndim=2)
    batch_size = _checks.positive_int("batch_size", batch_size)
    label_noise = _checks.non_negative("label_noise", label_noise, ndim=0)

    def sample(key, n_steps):
        _checks.key_given(key, "a minibatch objective draws a fresh batch every step")
        kx, ke = jax.random.split(key)
        X = _random.normal(kx, (n_steps, batch_size, A.shape[1]), A.dtype)
        Y = X @ A.T + label_noise * _random.normal(ke, (n_steps, batch_size, A.shape[0]), A.dtype)
        return X, Y

    return Objective(lambda W, batch: sample_loss(W, *batch), sample)


def budget_series(
    objective: Objective,
    Ws0: Params,
    budgets,
    mode: str,
    opt_name: str = "sgd",
    peak_lr: float = 0.05,
    kind: str = "cosine",
    warmup_fraction: float = 0.0,
    key: jax.Array | None = None,
    weight_decay: float = 0.0,
    sam_rho: float = 0.0,
    decay_fraction: float = 0.2,
) -> Params:
    """A checkpoint series over step budgets, built the two ways docs/THEORY.md names.

    mode="separate": every budget its own run from Ws0, its schedule annealed to zero at that budget
    (the paper's controlled design); the runs share one vmapped scan padded with lr = 0.
    mode="single": one run whose schedule reaches zero at the largest budget, snapshots at each budget
    (how public checkpoints are made: intermediate ones are not annealed).
    Returns parameters with a leading axis over budgets. Same ``key`` in both modes: same batches
    (a minibatch objective requires one). Pre-training mitigations: coupled weight decay
    (``optimizer``), SAM (``train``'s sam_rho) and the WSD schedule's ``decay_fraction`` (0: constant
    lr up to the budget). Refuses an unknown ``mode``, ``budgets`` that are not step counts >= 1 in
    ascending order, a warmup_fraction outside [0, 1], and what ``train``, ``schedule`` and
    ``optimizer`` refuse.

    Parameters
    ----------
    objective : Objective
        The loss and whether it draws batches.
    Ws0 : tuple of arrays
        The weights at step 0, shared by every budget.
    budgets : sequence of int
        Step budgets (>= 1, ascending).
    mode : str
        "separate" or "single".
    opt_name : str
        The optimiser, as ``optimizer`` names it.
    peak_lr : float
        The schedule's largest rate (> 0).
    kind : str
        The schedule, as ``schedule`` names it.
    warmup_fraction : float
        Warmup steps as a share of each budget, in [0, 1].
    key : PRNG key, optional
        Seeds the batches; required by a minibatch objective.
    weight_decay : float
        Weight decay of the optimiser (>= 0; coupled L2 but for adamw's decoupled decay).
    sam_rho : float
        SAM's ascent radius (>= 0; 0 = plain gradients).
    decay_fraction : float
        The share of each budget over which "wsd" decays, in [0, 1].

    Returns
    -------
    tuple of arrays
        Each layer with a leading axis of len(budgets).
    """
    _checks.one_of("mode", mode, ("separate", "single"))
    if isinstance(budgets, (str, bytes)) or not hasattr(budgets, "__iter__") or not list(budgets):
        raise ValueError(f"budgets={budgets!r} must be a non-empty list of positive step counts")
    budgets = [_checks.positive_int(f"budgets[{k}]", b) for k, b in enumerate(budgets)]
    if budgets != sorted(budgets):
        raise ValueError(f"budgets={budgets} must be sorted ascending")
    _checks.floats("warmup_fraction", warmup_fraction, ndim=0, least=0, most=1)
    n = budgets[-1]
    step_gcd = math.gcd(*budgets)
    index = jnp.asarray([b // step_gcd - 1 for b in budgets])

    def run(budget, record_every):
        lr = schedule(kind, peak_lr, budget, warmup_fraction * budget, decay_fraction)
        return train(objective, Ws0, optimizer(opt_name, lr, weight_decay=weight_decay), n, record_every, key, sam_rho)

    if mode == "single":
        Ws = run(jnp.asarray(float(n)), step_gcd)
        return jax.tree.map(lambda w: w[index], Ws)
    # Run j, past its budget, holds still (lr = 0), so its one snapshot at step n is its annealed endpoint.
    Ws = jax.vmap(lambda b: run(b, n))(jnp.asarray(budgets, jnp.result_type(float)))
    return jax.tree.map(lambda w: w[:, 0], Ws)
