import jax
import jax.numpy as jnp
import numpy as np

from theory import measure, network


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
