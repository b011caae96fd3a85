import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from theory import closed_form, network, simulate, tasks
from theory.finetune import finetune_gd, regularized_objective


def rel_err(a, b):
    return float(jnp.max(jnp.abs(a - b) / jnp.abs(b)))


def test_mode_strength_extreme_time_is_exact():
    u = closed_form.mode_strength(1.0, 1e-12, 1e6)
    assert np.isfinite(u) and float(u) == 1.0


def test_mode_strength_endpoints_and_broadcast():
    s = jnp.array([2.0, 1.0, 0.1])
    t = jnp.array([[0.0], [1e8]])
    u = closed_form.mode_strength(s, 1e-3, t)
    assert u.shape == (2, 3)
    np.testing.assert_allclose(u[0], 1e-3, rtol=1e-6)
    np.testing.assert_allclose(u[1], s, rtol=1e-6)


def test_mode_strength_solves_its_ode():
    s, u0, t = 0.7, 1e-3, jnp.linspace(0.0, 20.0, 9)
    du_dt = jax.vmap(jax.grad(lambda t: closed_form.mode_strength(s, u0, t)))(t)
    u = closed_form.mode_strength(s, u0, t)
    np.testing.assert_allclose(du_dt, 2 * u * (s - u), rtol=2e-3, atol=1e-7)


def _aligned_problem(key, d=8, h=10, r=4, u0=1e-3):
    s = tasks.power_law_spectrum(r, 1.0, 1.0)
    task = tasks.teacher(key, s, d, d)
    Ws0 = network.init_aligned_balanced(task.U, task.V, u0, h)
    return task, Ws0


def test_closed_form_matches_simulated_gradient_flow(key):
    task, Ws0 = _aligned_problem(key)
    learn = closed_form.learning_time(task.s, 1e-3)
    T = jnp.array([0.0, float(learn[1]), float(learn[-1]), 60.0])  # start, mid-course, late, converged
    Ws = simulate.gradient_flow(lambda W: network.task_loss(W, task.matrix), Ws0, T)
    u_sim = jax.vmap(lambda W: network.mode_strengths(W, task.U, task.V))(Ws)
    u_exact = closed_form.mode_strength(task.s, 1e-3, T[:, None])
    assert rel_err(u_sim, u_exact) < 1e-3


def test_small_lr_gradient_descent_tracks_the_flow(key):
    task, Ws0 = _aligned_problem(key)
    lr, steps = 2e-3, 4000  # T = lr * steps = 8
    Ws = simulate.train(simulate.population_objective(task.matrix), Ws0, optax.sgd(lr), steps, 1000)
    u_gd = jax.vmap(lambda W: network.mode_strengths(W, task.U, task.V))(Ws)
    T = lr * 1000 * jnp.arange(1, 5)
    u_exact = closed_form.mode_strength(task.s, 1e-3, T[:, None])
    assert rel_err(u_gd, u_exact) < 1e-2


def test_finetune_strength_matches_flow_on_B(key):
    task, Ws0 = _aligned_problem(key)
    W_T = jax.tree.map(
        lambda w: w[0], simulate.gradient_flow(lambda W: network.task_loss(W, task.matrix), Ws0, jnp.array([6.0]))
    )
    u_T = network.mode_strengths(W_T, task.U, task.V)
    b = tasks.reversed_spectrum(task.s)
    B = tasks.with_spectrum(task, b)
    tau = jnp.array([0.5, 3.0])
    Ws = simulate.gradient_flow(lambda W: network.task_loss(W, B.matrix), W_T, tau)
    u_sim = jax.vmap(lambda W: network.mode_strengths(W, task.U, task.V))(Ws)
    assert rel_err(u_sim, closed_form.finetune_strength(b, u_T, tau[:, None])) < 1e-3


def test_mode_flow_depth2_equals_logistic():
    s = jnp.array([1.0, 0.3])
    T = jnp.array([1.0, 10.0, 40.0])
    u_ode = closed_form.mode_flow(jnp.sqrt(jnp.full(2, 1e-3)), s, T, depth=2)
    assert rel_err(u_ode, closed_form.mode_strength(s, 1e-3, T[:, None])) < 1e-4


@pytest.mark.parametrize("depth", [1, 3])
def test_mode_flow_depth_L_matches_matrix_flow(key, depth):
    s = tasks.power_law_spectrum(3, 1.0, 1.0)
    task = tasks.teacher(key, s, 6, 6)
    u0 = 1e-2
    Ws0 = network.init_aligned_balanced(task.U, task.V, u0, 6, depth)
    T = jnp.array([2.0, 8.0, 30.0])
    Ws = simulate.gradient_flow(lambda W: network.task_loss(W, task.matrix), Ws0, T)
    u_sim = jax.vmap(lambda W: network.mode_strengths(W, task.U, task.V))(Ws)
    u_ode = closed_form.mode_flow(jnp.full(3, u0 ** (1 / depth)), s, T, depth=depth)
    assert rel_err(u_sim, u_ode) < 1e-3


def test_mode_flow_with_pull_matches_matrix_flow(key):
    task, Ws0 = _aligned_problem(key)
    W_T = jax.tree.map(
        lambda w: w[0], simulate.gradient_flow(lambda W: network.task_loss(W, task.matrix), Ws0, jnp.array([8.0]))
    )
    u_T = network.mode_strengths(W_T, task.U, task.V)
    b = tasks.reversed_spectrum(task.s)
    B = tasks.with_spectrum(task, b).matrix
    reg, tau = 0.3, jnp.array([1.0, 4.0])
    Ws = simulate.gradient_flow(regularized_objective(B, W_T, reg), W_T, tau)
    u_sim = jax.vmap(lambda W: network.mode_strengths(W, task.U, task.V))(Ws)
    a_T = jnp.sqrt(u_T)
    u_ode = closed_form.mode_flow(a_T, b, tau, depth=2, reg=reg, a_ref=a_T)
    assert rel_err(u_sim, u_ode) < 1e-3


def test_finetune_gd_tracks_logistic(key):
    task, Ws0 = _aligned_problem(key)
    W_T = jax.tree.map(
        lambda w: w[0], simulate.gradient_flow(lambda W: network.task_loss(W, task.matrix), Ws0, jnp.array([6.0]))
    )
    u_T = network.mode_strengths(W_T, task.U, task.V)
    b = tasks.reversed_spectrum(task.s)
    W_ft = finetune_gd(W_T, tasks.with_spectrum(task, b).matrix, 1e-3, 2000)
    u_ft = network.mode_strengths(W_ft, task.U, task.V)
    assert rel_err(u_ft, closed_form.finetune_strength(b, u_T, 2.0)) < 1e-2


def test_learning_time_is_half_strength():
    s, u0 = jnp.array([1.0, 0.2]), 1e-4
    u = closed_form.mode_strength(s, u0, closed_form.learning_time(s, u0))
    np.testing.assert_allclose(u, s / 2, rtol=1e-4)


def test_closed_form_weights_are_the_aligned_network_at_u_of_T(key):
    """protocol.closed_form_weights: in the teacher's own bases, mode strengths u_i(T) and L_A(W(T)) equal
    the closed form's, at depth 2 and (by the per-mode ODE) depth 3; and W(T) equals the simulated flow."""
    from theory import protocol

    task, Ws0 = _aligned_problem(key)
    T = jnp.array([0.0, 5.0, 20.0, 60.0])
    for depth in (2, 3):
        Ws_T = protocol.closed_form_weights(task.s, 1e-3, T, task.U, task.V, h=10, depth=depth)
        u = jax.vmap(lambda W: network.mode_strengths(W, task.U, task.V))(Ws_T)
        expected = protocol.pretrained_strengths(task.s, 1e-3, T, depth)
        np.testing.assert_allclose(u, expected, rtol=1e-4, atol=1e-7)
        L_A = jax.vmap(lambda W: network.task_loss(W, task.matrix))(Ws_T)
        np.testing.assert_allclose(L_A, closed_form.loss_from_strengths(task.s, expected), rtol=1e-4, atol=1e-7)
    Ws_T = protocol.closed_form_weights(task.s, 1e-3, T, task.U, task.V, h=10)
    flow = simulate.gradient_flow(lambda W: network.task_loss(W, task.matrix), Ws0, T)
    for W, V in zip(Ws_T, flow):
        np.testing.assert_allclose(W, V, atol=2e-4)
