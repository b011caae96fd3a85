"""Per-mode laws of the aligned, balanced linear network (Saxe et al. 2014; docs/THEORY.md).

Under aligned balanced init every teacher mode i evolves alone. For depth 2 its end-to-end strength
u obeys du/dt = 2u(s - u), solved by the logistic law
    u(t) = s / (1 + (s/u0 - 1) exp(-2 s t)).
Mode i is learned around t_i ~ ln(s_i/u0) / (2 s_i): large singular values first. Weight decay lambda
in pre-training keeps the law with target s - lambda (``mode_strength``). Depth L and an L2 pull
toward a reference have no closed form; ``mode_flow`` integrates their scalar ODE per mode.
"""

from __future__ import annotations

import jax.numpy as jnp

from theory import _checks
from theory.ode import rk4_solve


def logistic_strength(target, u_start, t):
    """Solution of du/dt = 2u(c - u) from u(0) = u_start, for every finite target c and t >= 0.

    With e = exp(-2|c|t) <= 1 and g = (1 - e)/|c| (g = 2t at c = 0) it is written without a growing
    exponential:
        c >= 0:  u(t) = u_start / (e + u_start g)         (s / (1 + (s/u0 - 1) exp(-2st)) times u0/s),
        c < 0:   u(t) = u_start e / (1 + u_start g)       (the same, times exp(2ct)/exp(2ct)),
    so nothing overflows at large t. u(t) -> c for c > 0; c = 0 (a mode fine-tuning switches off)
    decays as u/(1 + 2ut); c < 0 (weight decay above the mode's singular value) decays to 0 as
    exp(-2|c|t). Refuses a target that is not finite, u_start or t < 0, and shapes that do not
    broadcast together.

    Parameters
    ----------
    target : float or array
        c, the strength the mode heads for: a singular value of the task (>= 0), or s - lambda under
        weight decay lambda (any sign).
    u_start : float or array
        u(0), the strength at the start (>= 0).
    t : float or array
        Flow time (>= 0): learning rate x steps of the gradient descent this flow stands for.

    Returns
    -------
    array
        u(t), in the broadcast shape of the three inputs.
    """
    named = {"target": _checks.floats("target", target)}
    named |= {name: _checks.non_negative(name, x) for name, x in (("u_start", u_start), ("t", t))}
    _checks.broadcast(**named)
    c, u, t = _arrays(*named.values())
    # Each branch on inputs it is finite at: the unused branch's gradient must not be inf x 0 = NaN.
    grows = c >= 0
    size = jnp.where(grows, 1.0, -c)
    e = jnp.exp(-2.0 * size * t)
    shrinking = u * e / (1.0 + u * (-jnp.expm1(-2.0 * size * t) / size))
    return jnp.where(grows, _growing(jnp.where(grows, c, 0.0), u, t), shrinking)


def _arrays(*xs):
    return jnp.broadcast_arrays(*(jnp.asarray(x, dtype=jnp.result_type(float)) for x in xs))


def _growing(b, u, t):
    """``logistic_strength`` for a target b >= 0 (unchecked): u / (exp(-2bt) + u (1 - exp(-2bt))/b).
    The laws whose target cannot be negative (no weight decay) call it alone: no branch for c < 0
    enters their computation, nor the gradient ``theory.linear_fit`` takes through them."""
    b, u, t = _arrays(b, u, t)
    decay = jnp.exp(-2.0 * b * t)
    safe_b = jnp.where(b > 0, b, 1.0)
    g = jnp.where(b > 0, -jnp.expm1(-2.0 * b * t) / safe_b, 2.0 * t)
    return u / (decay + u * g)


def mode_strength(s, u0, t, weight_decay=0.0):
    """u(t) = c / (1 + (c/u0 - 1) exp(-2 c t)), c = s - lambda: a depth-2 mode under gradient flow on
    task A with weight decay lambda (``logistic_strength``).

    Gradient flow on L_A + lambda/2 (||W_1||^2 + ||W_2||^2) keeps an aligned balanced network aligned
    and balanced; a mode with per-layer amplitude a (u = a^2) follows the flow of
    1/2 (s - a^2)^2 + lambda a^2, da/dt = a (s - a^2) - lambda a, so du/dt = 2u(s - lambda - u): the
    logistic law with target s - lambda. lambda = 0 is the plain law; a mode with s <= lambda is never
    learned (it decays to 0). Broadcasts over s, u0, t, weight_decay; exact and finite for every
    t >= 0. Refuses s <= 0, u0 <= 0, t < 0, weight_decay < 0 and shapes that do not broadcast together.

    Parameters
    ----------
    s : float or array
        Singular value of task A along the mode (> 0), shape ``(..., r)`` for r modes.
    u0 : float or array
        Initial end-to-end strength of every mode (> 0).
    t : float or array
        Pre-training flow time (>= 0).
    weight_decay : float or array
        lambda, the coupled L2 decay of every layer during pre-training (>= 0).

    Returns
    -------
    array
        u(t), in the broadcast shape of s, u0, t and weight_decay.

    Examples
    --------
    >>> float(mode_strength(1.0, 1e-12, 1e6))
    1.0
    >>> round(float(mode_strength(1.0, 1e-12, 1e6, weight_decay=0.25)), 6)
    0.75
    """
    s, u0, t = _checks.positive("s", s), _checks.positive("u0", u0), _checks.non_negative("t", t)
    weight_decay = _checks.non_negative("weight_decay", weight_decay)
    _checks.broadcast(s=s, u0=u0, t=t, weight_decay=weight_decay)
    if _checks.python_zero(weight_decay):
        return _growing(s, u0, t)
    return logistic_strength(jnp.asarray(s) - weight_decay, u0, t)


def learning_time(s, u0):
    """t_i = ln(s_i/u0 - 1) / (2 s_i): when mode i reaches half its target (exact for the logistic law;
    negative when u0 > s_i/2, NaN when u0 >= s_i: such a mode never crosses half its target). Refuses
    s <= 0, u0 <= 0 and shapes that do not broadcast together.

    Parameters
    ----------
    s : float or array
        Singular values s_i of the task (> 0).
    u0 : float or array
        Initial strength of every mode (> 0).

    Returns
    -------
    array
        t_i in flow time, in the broadcast shape of s and u0.
    """
    s, u0 = _checks.positive("s", s), _checks.positive("u0", u0)
    _checks.broadcast(s=s, u0=u0)
    return jnp.log(jnp.asarray(s) / u0 - 1.0) / (2.0 * jnp.asarray(s))


def loss_from_strengths(target, u):
    """L = 1/2 sum_i (target_i - u_i)^2 over the last axis (aligned modes; off-mode terms are zero).
    Refuses non-finite values and shapes that do not broadcast together.

    Parameters
    ----------
    target : array, shape (..., r)
        The task's strength per mode (its singular values).
    u : array, shape (..., r)
        The network's strength per mode.

    Returns
    -------
    array, shape (...)
        The loss, summed over the r modes.
    """
    target, u = _checks.floats("target", target), _checks.floats("u", u)
    _checks.broadcast(target=target, u=u)
    return 0.5 * jnp.sum((jnp.asarray(target) - u) ** 2, axis=-1)


def finetune_strength(b, u_T, tau):
    """u_ft = b / (1 + (b/u(T) - 1) exp(-2 b tau)): aligned fine-tuning for time tau = lr * steps, lambda = 0.

    A learned mode (large u(T)) moves fast; an unlearned one (u ~ u0) barely moves. Refuses b, u_T or
    tau < 0, and shapes that do not broadcast together.

    Parameters
    ----------
    b : float or array
        Singular value of task B along the mode (>= 0).
    u_T : float or array
        Strength after pre-training to time T (>= 0): where fine-tuning starts.
    tau : float or array
        Fine-tuning flow time lr x steps (>= 0).

    Returns
    -------
    array
        u_ft, in the broadcast shape of b, u_T and tau.
    """
    named = {name: _checks.non_negative(name, x) for name, x in (("b", b), ("u_T", u_T), ("tau", tau))}
    _checks.broadcast(**named)
    return _growing(*named.values())


def mode_flow(a_start, target, t_grid, depth: int = 2, reg=0.0, a_ref=None, dt_max: float = 0.02, rate=1.0):
    """Integrate the per-layer mode amplitude a (u = a^depth) of a balanced aligned depth-L network:

        da/dt = a^(L-1) (b - a^L) - reg * (a - a_ref),

    i.e. gradient flow on 1/2 (b - a^L)^2 + reg/2 * L * (a - a_ref)^2 (each of the L layers pulled
    toward its reference). L = 2, reg = 0 gives du/dt = 2u(b - u); general L gives
    du/dt = L u^(2 - 2/L) (b - u). Runge-Kutta 4 with steps of at most ``dt_max``.
    ``rate`` (broadcast against a) multiplies the right-hand side: integrating to t = 1 at rate tau
    is integrating to tau, which lets every mode or T carry its own fine-tuning time.
    Returns u = a^L at every time in ``t_grid`` (shape t_grid.shape + a_start.shape). Refuses a_start
    < 0, a ``target`` or ``a_ref`` that is not finite or does not broadcast with a_start, depth < 1,
    reg < 0, rate < 0, and what ``ode.rk4_solve`` refuses (t_grid, dt_max).

    Parameters
    ----------
    a_start : array
        Per-layer amplitude a(0) of each mode (>= 0), any shape (one entry per mode, per T, ...).
    target : float or array
        b, the task's strength per mode, broadcast against ``a_start``.
    t_grid : array, shape (n_t,)
        Flow times at which u is returned, ascending from 0.
    depth : int
        L, the number of layers (>= 1).
    reg : float
        Strength of the L2 pull toward ``a_ref`` (>= 0; 0 = no pull).
    a_ref : float or array, optional
        Per-layer amplitude the pull acts toward, broadcast against ``a_start``; defaults to ``a_start``.
    dt_max : float
        Largest RK4 step in flow time (> 0).
    rate : float or array
        Multiplier of the right-hand side (>= 0), broadcast against ``a_start``.

    Returns
    -------
    array, shape t_grid.shape + a_start.shape
        u = a^L at every time of ``t_grid``.
    """
    depth = _checks.positive_int("depth", depth)
    a_start, target = _checks.non_negative("a_start", a_start), _checks.floats("target", target)
    _checks.broadcast(a_start=a_start, target=target)
    a_start, target = jnp.broadcast_arrays(jnp.asarray(a_start, dtype=jnp.result_type(float)), jnp.asarray(target))
    if a_ref is not None:
        a_ref = _checks.floats("a_ref", a_ref)
        _checks.broadcast(a_ref=a_ref, a_start=a_start)
    a_ref = a_start if a_ref is None else jnp.broadcast_to(jnp.asarray(a_ref, a_start.dtype), a_start.shape)
    reg = jnp.asarray(_checks.non_negative("reg", reg), a_start.dtype)
    rate = _checks.non_negative("rate", rate)

    def rhs(a):
        return rate * (a ** (depth - 1) * (target - a**depth) - reg * (a - a_ref))

    return rk4_solve(rhs, a_start, jnp.asarray(t_grid, a_start.dtype), dt_max) ** depth
