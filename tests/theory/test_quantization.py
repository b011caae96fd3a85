"""Quantization as a modification: the grid, the rounding, and the exact stochastic-rounding excess
against Monte-Carlo at depths 2 and 3."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from theory import perturbation, quantization
from theory.network import task_loss


def _network(widths, seed=0, scale=0.6):
    keys = jax.random.split(jax.random.key(seed), len(widths) - 1)
    return [scale * jax.random.normal(k, (o, i)) for k, i, o in zip(keys, widths[:-1], widths[1:])]


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_round_to_nearest_stays_within_half_a_step_per_channel(bits):
    """Every entry moves by at most Delta_r / 2 of its row, lands on the row's grid, and the row's
    largest entry is kept exactly."""
    (W,) = _network([12, 7], seed=bits)
    q = np.asarray(quantization.round_to_nearest(W, bits))
    step = np.asarray(quantization.grid_step(W, bits))
    assert np.all(np.abs(q - np.asarray(W)) <= step / 2 * (1 + 1e-6))
    np.testing.assert_allclose(np.round(q / step), q / step, atol=1e-4)
    assert np.abs(q / step).max() <= quantization.levels(bits) + 1e-4
    np.testing.assert_allclose(np.abs(q).max(axis=1), np.abs(np.asarray(W)).max(axis=1), rtol=1e-6)


def test_stochastic_rounding_is_unbiased_with_the_stated_variance():
    """Over 4,000 draws the mean of q(W) is W (within 4 s.e.) and the variance is Delta^2 p (1 - p)
    (within 5 s.e. of a sample variance), entry by entry."""
    (W,) = _network([6, 5], seed=3)
    draws = jax.vmap(lambda k: quantization.stochastic_round(k, W, 3))(jax.random.split(jax.random.key(1), 4000))
    draws = np.asarray(draws, float)
    V = np.asarray(quantization.rounding_variance(W, 3), float)
    se = np.sqrt(V / draws.shape[0]) + 1e-7
    assert np.all(np.abs(draws.mean(0) - np.asarray(W)) <= 4 * se)
    # The sample variance of a scaled Bernoulli(p): its s.e. from the fourth central moment.
    x, step = np.asarray(W, float) / np.asarray(quantization.grid_step(W, 3)), np.asarray(quantization.grid_step(W, 3))
    p = x - np.floor(x)
    fourth = p * (1 - p) * ((1 - p) ** 3 + p**3)
    se_var = step**2 * np.sqrt(np.maximum(fourth - (p * (1 - p)) ** 2, 0) / draws.shape[0])
    assert np.all(np.abs(draws.var(0) - V) <= 5 * se_var + 1e-9)


@pytest.mark.parametrize("widths", [(5, 4, 3), (4, 5, 3, 2)], ids=["L=2", "L=3"])
def test_stochastic_excess_is_exact_against_monte_carlo(widths):
    """E[L_A(q(W))] - L_A(W) from the entrywise-variance Gram recursion equals the mean over 20,000
    stochastic roundings of every layer at 2 bits (|z| <= 3). At 2 bits the terms where noises meet
    are 10-25% of the excess, 11-24 standard errors: the recursion without them fails this test."""
    Ws = _network(list(widths), seed=len(widths))
    A = jax.random.normal(jax.random.key(9), (widths[-1], widths[0]))
    exact = float(quantization.stochastic_excess(Ws, 2))

    def one(key):
        keys = jax.random.split(key, len(Ws))
        return task_loss([quantization.stochastic_round(k, W, 2) for k, W in zip(keys, Ws)], A) - task_loss(Ws, A)

    samples = np.asarray(jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(2), 20_000)), float)
    z = (samples.mean() - exact) / (samples.std(ddof=1) / np.sqrt(samples.size))
    assert exact > 0 and abs(z) <= 3


def test_stochastic_excess_reduces_to_the_gaussian_excess_and_the_depth_2_sum():
    """With one entry variance everywhere the recursion is ``perturbation.excess``; at depth 2 it is
    (1/2)[sum V2_ij ||row_j W1||^2 + sum V1_jk ||col_j W2||^2 + sum V2_ij V1_jk]."""
    W1, W2 = _network([5, 4, 3], seed=7)
    V1 = np.asarray(quantization.rounding_variance(W1, 4), float)
    V2 = np.asarray(quantization.rounding_variance(W2, 4), float)
    w1, w2 = np.asarray(W1, float), np.asarray(W2, float)
    by_sum = 0.5 * (
        np.sum(V2 * np.sum(w1**2, axis=1)[None, :]) + np.sum(V1 * np.sum(w2**2, axis=0)[:, None]) + np.sum(V2 @ V1)
    )
    assert float(quantization.stochastic_excess([W1, W2], 4)) == pytest.approx(by_sum, rel=1e-5)
    # One variance everywhere: the Gaussian excess of noise std 0.1 on both layers.
    constant = quantization.variance_excess([W1, W2], [jnp.full(W1.shape, 0.01), jnp.full(W2.shape, 0.01)])
    gaussian = perturbation.excess([W1, W2], 0.1, [1.0, 1.0])
    assert float(constant) == pytest.approx(float(gaussian), rel=1e-5)


def test_deterministic_excess_is_the_direct_loss_difference():
    """Round-to-nearest's excess is L_A(q(W)) - L_A(W) of the rounded layers, and it shrinks as the
    grid refines (3 -> 8 bits)."""
    Ws = _network([5, 4, 3], seed=11)
    A = jax.random.normal(jax.random.key(4), (3, 5))
    direct = task_loss([quantization.round_to_nearest(W, 4) for W in Ws], A) - task_loss(Ws, A)
    assert float(quantization.deterministic_excess(Ws, A, 4)) == pytest.approx(float(direct), rel=1e-6)
    coarse, fine = (abs(float(quantization.deterministic_excess(Ws, A, b))) for b in (3, 8))
    assert fine < coarse


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: quantization.levels(1), r"bits=1 must be an integer >= 2"),
        (lambda: quantization.levels(17), r"bits=17 must be <= 16"),
        (lambda: quantization.levels(4.0), r"bits=4.0 must be an integer"),
        (lambda: quantization.stochastic_excess([jnp.ones((3, 2)), jnp.ones((2, 4))], 4), r"input width"),
        (lambda: quantization.stochastic_excess([jnp.ones((3, 2))], [4, 4]), r"bits has 2 entries"),
        (lambda: quantization.stochastic_round(0, jnp.ones((2, 2)), 4), r"key=0 is not a PRNG key"),
        (lambda: quantization.variance_excess([jnp.ones((3, 2))], [jnp.ones((2, 3))]), r"Vs have shapes"),
        (lambda: quantization.variance_excess([jnp.ones((3, 2))], [-jnp.ones((3, 2))]), r"Vs\[0\]=.* must be >= 0"),
    ],
)
def test_bad_input_is_refused_by_name(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_quantized_curves_are_each_ts_direct_computation():
    """Along a trajectory (a leading T axis), the round-to-nearest rows are L_A of the rounded layers and
    the stochastic rows L_A + the exact expected excess, slice by slice, jitted."""
    Ws = _network([5, 4, 3], seed=13)
    A = jax.random.normal(jax.random.key(5), (3, 5))
    scales = jnp.array([0.1, 0.5, 1.0, 2.0])
    Ws_T = [scales[:, None, None] * W[None] for W in Ws]
    c = jax.jit(quantization.quantized_curves, static_argnums=2)(Ws_T, A, 3)
    for t, scale in enumerate(scales):
        W_t = [scale * W for W in Ws]
        rounded = task_loss([quantization.round_to_nearest(W, 3) for W in W_t], A)
        assert float(c.nearest_loss[t]) == pytest.approx(float(rounded), rel=1e-5)
        expected = task_loss(W_t, A) + quantization.stochastic_excess(W_t, 3)
        assert float(c.stochastic_loss[t]) == pytest.approx(float(expected), rel=1e-5)
        clean = float(task_loss(W_t, A))  # the excess is a difference of losses this large: float32 rounding
        assert float(c.nearest_excess[t]) == pytest.approx(float(c.nearest_loss[t]) - clean, abs=1e-6 * clean)


def test_round_to_nearest_costs_half_of_stochastic_rounding_at_a_minimum():
    """At a minimum of L_A (W_2 W_1 = A: no first-order term) a fine grid's rounding errors act as noise:
    round-to-nearest's of variance Delta^2 / 12 (uniform on +-Delta/2), stochastic rounding's
    Delta^2 p (1 - p), on average Delta^2 / 6. So the excess ratio is about 1/2 at 8 bits (0.4..0.6 on
    2 x 24 x 24 entries); away from a minimum round-to-nearest's excess has a first-order term
    <grad L_A, q(W) - W> of either sign, and no such ratio holds."""
    Ws = _network([24, 24, 24], seed=17, scale=0.3)
    A = Ws[1] @ Ws[0]
    ratio = float(quantization.deterministic_excess(Ws, A, 8) / quantization.stochastic_excess(Ws, 8))
    assert 0.4 < ratio < 0.6, ratio
