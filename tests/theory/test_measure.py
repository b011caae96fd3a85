import jax
import jax.numpy as jnp
import numpy as np
import pytest

from theory import closed_form, measure, network, perturbation, protocol, tasks


def test_inflection_recovers_parabola_vertex():
    T = jnp.logspace(0, 3, 13)
    t_star = 37.0
    y = (jnp.log(T) - jnp.log(t_star)) ** 2 + 1.0
    np.testing.assert_allclose(measure.inflection(T, y), t_star, rtol=1e-3)


def test_inflection_none_in_range_and_batched():
    T = jnp.logspace(0, 2, 9)
    curves = jnp.stack([jnp.log(T), -jnp.log(T), (jnp.log(T) - 2.0) ** 2])
    t = measure.inflection(T, curves)
    assert np.isnan(t[0]) and np.isnan(t[1]) and abs(float(t[2]) - np.exp(2.0)) / np.exp(2.0) < 1e-3


def test_hessian_trace_exact_matches_depth2_formula(key):
    k1, k2, k3 = jax.random.split(key, 3)
    W1, W2 = jax.random.normal(k1, (5, 4)), jax.random.normal(k2, (3, 5))
    A = jax.random.normal(k3, (3, 4))

    def loss(W):
        return network.task_loss(W, A)

    expected = 4 * jnp.sum(W2**2) + 3 * jnp.sum(W1**2)
    np.testing.assert_allclose(measure.hessian_trace(loss, (W1, W2)), expected, rtol=1e-4)
    hutch = measure.hessian_trace(loss, (W1, W2), key, n_probes=4000)
    assert abs(float(hutch - expected)) / float(expected) < 0.05


def test_sharpness_matches_dense_hessian(key):
    k1, k2 = jax.random.split(key)
    W1, W2 = 0.5 * jax.random.normal(k1, (4, 3)), 0.5 * jax.random.normal(k2, (2, 4))
    A = W2 @ W1  # at a global minimum the Hessian is PSD

    def loss(W):
        return network.task_loss(W, A)

    from jax.flatten_util import ravel_pytree

    flat, unravel = ravel_pytree((W1, W2))
    H = jax.hessian(lambda x: loss(unravel(x)))(flat)
    top = float(jnp.linalg.eigvalsh(H)[-1])
    np.testing.assert_allclose(measure.sharpness(loss, (W1, W2), key, n_iter=500), top, rtol=1e-3)


def test_inflection_ignores_a_curve_that_only_levels_off():
    T = jnp.logspace(0, 3, 13)
    plateau = jnp.maximum(1.0 - jnp.log(T) / 3.0, 0.2)  # falls, then flat: no late rise
    assert np.isnan(measure.inflection(T, plateau))
    tiny_rise = plateau.at[-1].add(1e-6)
    assert np.isnan(measure.inflection(T, tiny_rise))
    assert np.isfinite(measure.inflection(T, tiny_rise, rtol=0.0))


def _balanced_minimum(key, s, d=6, h=7):
    """An aligned balanced depth-2 network with every mode learned (W_2 W_1 = A) and its teacher."""
    task = tasks.teacher(key, s, d, d)
    return network.init_aligned_balanced(task.U, task.V, s, h), task.matrix


def test_exact_sharpness_has_the_known_answers(key):
    """lambda_max(H) of L_A, exact: 1 for depth 1 (H = I); 2 s_1 at a balanced depth-2 minimum (mode 1's
    block [[b^2, ab], [ab, a^2]] at a = b = sqrt(s_1)); s_1 at the saddle W = 0, where H has +-s_i and
    power iteration (largest modulus) cannot tell +s_1 from -s_1."""
    s = jnp.array([1.5, 0.8, 0.3])
    Ws, A = _balanced_minimum(key, s)

    def loss(W):
        return network.task_loss(W, A)

    np.testing.assert_allclose(measure.sharpness(loss, Ws, n_iter=0), 2 * 1.5, rtol=1e-5)
    zero = tuple(jnp.zeros_like(W) for W in Ws)
    np.testing.assert_allclose(measure.sharpness(loss, zero, n_iter=0), 1.5, rtol=1e-5)
    (W,) = (jax.random.normal(key, (3, 4)),)
    np.testing.assert_allclose(measure.sharpness(lambda V: network.task_loss(V, A[:3, :4]), (W,), n_iter=0), 1.0)


def test_weighted_trace_is_the_small_noise_excess(key):
    """(gamma^2 / 2) tr_sigma(H) is the gamma^2 term of the exact Gaussian excess (perturbation.excess),
    at depth 3 with a sigma per layer: the two agree to O(gamma^2) (relative 1e-4 at gamma = 1e-3, with
    the gamma^4 terms visible at gamma = 0.3), exactly (within rounding) and by Hutchinson's estimate
    with sigma-scaled probes."""
    keys = jax.random.split(key, 4)
    Ws = (jax.random.normal(keys[0], (5, 4)), jax.random.normal(keys[1], (6, 5)), jax.random.normal(keys[2], (3, 6)))
    A = jax.random.normal(keys[3], (3, 4))
    sigmas = (0.5, 0.2, 0.8)

    def loss(W):
        return network.task_loss(W, A)

    trace = float(measure.hessian_trace(loss, Ws, sigmas=sigmas))
    for gamma, rtol in ((1e-3, 1e-4), (0.3, None)):
        excess = float(perturbation.excess(Ws, gamma, sigmas))
        error = abs(excess / (gamma**2 / 2 * trace) - 1)
        assert error < rtol if rtol else error > 1e-2, (gamma, error)
    hutch = float(measure.hessian_trace(loss, Ws, key, n_probes=4000, sigmas=sigmas))
    assert abs(hutch / trace - 1) < 0.05


def test_curvature_curves_on_a_closed_form_trajectory():
    """Along the closed-form trajectory: tr_sigma(H) = sigma^2 (d_in ||W_2||^2 + d_out ||W_1||^2) =
    2 sigma^2 d sum_i u_i(T) (balanced, square), and lambda_max -> 2 s_1 once every mode is learned."""
    s, d, u0, sigma = jnp.array([1.0, 0.5, 0.25]), 5, 1e-3, 0.3
    task = tasks.teacher(jax.random.PRNGKey(3), s, d, d)
    T = jnp.array([1.0, 10.0, 200.0])
    Ws_T = protocol.closed_form_weights(s, u0, T, task.U, task.V, h=d)
    c = measure.curvature_curves(Ws_T, task.matrix, (sigma, sigma))
    u = closed_form.mode_strength(s, u0, T[:, None])
    np.testing.assert_allclose(c.hessian_trace, 2 * sigma**2 * d * u.sum(-1), rtol=1e-4)
    np.testing.assert_allclose(c.top_eigenvalue[-1], 2.0, rtol=1e-4)


def test_weighted_trace_refuses_sigmas_that_are_not_one_per_layer_and_non_negative():
    Ws, A = (jnp.eye(3), jnp.eye(3)), jnp.eye(3)
    for sigmas in ((0.1,), (0.1, -0.2), (0.1, 0.2, 0.3)):
        with pytest.raises(ValueError, match="sigmas"):
            measure.hessian_trace(lambda W: network.task_loss(W, A), Ws, sigmas=sigmas)
