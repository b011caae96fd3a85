"""Fixed-step fourth-order Runge-Kutta on pytrees, sampled on a time grid.

Shared by the per-mode ODEs (``closed_form.mode_flow``) and the matrix gradient flow
(``simulate.gradient_flow``). Each grid interval is cut into ceil(dt / dt_max) equal steps, so a
log-spaced grid costs steps in proportion to the time it spans, and late wide intervals stay stable.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from theory import _checks


def rk4_solve(rhs, y0, t_grid, dt_max: float):
    """y(t) for every t in ``t_grid`` (non-decreasing, from t = 0) with dy/dt = rhs(y), y(0) = y0.

    Returns a pytree like ``y0`` with a leading axis of len(t_grid). Refuses an ``rhs`` that cannot be
    called, a ``t_grid`` that is not a non-empty 1-d array of times >= 0 in ascending order, and
    dt_max <= 0.

    Parameters
    ----------
    rhs : callable
        y -> dy/dt, on pytrees shaped like ``y0`` (autonomous: no time argument).
    y0 : pytree of arrays
        The state at t = 0.
    t_grid : array, shape (n_t,)
        The times at which y is returned (>= 0, ascending).
    dt_max : float
        Largest step (> 0); each interval of ``t_grid`` is cut into equal steps no longer than it.

    Returns
    -------
    pytree of arrays
        y at every time, each leaf with a leading axis of n_t.
    """
    _checks.function("rhs", rhs)
    t_grid = _checks.non_negative("t_grid", t_grid, ndim=1)
    _checks.ordered("t_grid", t_grid)
    dt_max = _checks.positive("dt_max", dt_max, ndim=0)

    def axpy(a, x, y):
        return jax.tree.map(lambda xi, yi: yi + a * xi, x, y)

    def rk4(y, dt):
        k1 = rhs(y)
        k2 = rhs(axpy(0.5 * dt, k1, y))
        k3 = rhs(axpy(0.5 * dt, k2, y))
        k4 = rhs(axpy(dt, k3, y))
        return axpy(dt / 6.0, jax.tree.map(lambda a, b, c, d: a + 2 * b + 2 * c + d, k1, k2, k3, k4), y)

    def interval(carry, t_next):
        y, t = carry
        n = jnp.maximum(jnp.ceil((t_next - t) / dt_max), 1.0)
        dt = (t_next - t) / n
        y = jax.lax.fori_loop(0, n.astype(jnp.int32), lambda _, x: rk4(x, dt), y)
        return (y, t_next), y

    t_grid = jnp.asarray(t_grid)
    _, ys = jax.lax.scan(interval, (y0, jnp.zeros((), t_grid.dtype)), t_grid)
    return ys
