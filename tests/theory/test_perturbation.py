import jax
import jax.numpy as jnp
import numpy as np
import pytest

from theory import closed_form, network, perturbation, protocol, tasks


def test_exact_excess_matches_monte_carlo(key):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    d_in, h, d_out = 6, 5, 4
    W1 = 0.5 * jax.random.normal(k1, (h, d_in))
    W2 = 0.5 * jax.random.normal(k2, (d_out, h))
    A = jax.random.normal(k3, (d_out, d_in))
    gamma, s1, s2 = 0.4, 0.3, 0.5
    exact = perturbation.gaussian_excess(W1, W2, gamma, s1, s2)
    mean, se = perturbation.monte_carlo_loss(k4, (W1, W2), A, gamma, (s1, s2), 8192)
    mc_excess = mean - network.task_loss((W1, W2), A)
    assert abs(float(mc_excess - exact)) < 3 * float(se)
    assert float(se) < 0.1 * float(exact)  # the check has power: the excess is resolved


def test_excess_formula_terms():
    W1, W2 = jnp.ones((3, 2)), 2 * jnp.ones((4, 3))
    gamma, s1, s2 = 0.5, 0.1, 0.2
    g2 = gamma**2
    expected = 0.5 * (g2 * s2**2 * 4 * 6 + g2 * s1**2 * 2 * 48 + g2**2 * s1**2 * s2**2 * 4 * 3 * 2)
    np.testing.assert_allclose(perturbation.gaussian_excess(W1, W2, gamma, s1, s2), expected, rtol=1e-6)


def test_depth3_closed_form_curves_use_the_exact_excess(default_setup):
    """Depth 3 draws nothing: the excess is ``perturbation.excess`` on the embedded network, grows
    with T, vanishes at gamma = 0, and needs no key."""
    st = default_setup
    T = jnp.array([1.0, 30.0, 300.0])
    kw = dict(sigma1=st["sigma"], sigma2=st["sigma"], d_in=st["d"], h=st["d"], d_out=st["d"], tau=1.0, depth=3)
    c = protocol.closed_form_curves(st["s"], st["b"], 1e-3, T, gamma=0.2, **kw)
    assert bool(jnp.all(jnp.diff(c.excess) > 0))
    eye = jnp.eye(st["d"])
    nets = jax.vmap(lambda u: network.init_aligned_balanced(eye, eye, u, st["d"], 3))(
        closed_form.mode_flow(jnp.full_like(st["s"], 1e-3 ** (1 / 3)), st["s"], T, 3, dt_max=0.02)
    )
    direct = jax.vmap(lambda Ws: perturbation.excess(Ws, 0.2, (st["sigma"],) * 3))(nets)
    np.testing.assert_allclose(c.excess, direct, rtol=1e-5)
    c0 = protocol.closed_form_curves(st["s"], st["b"], 1e-3, T, gamma=0.0, **kw)
    np.testing.assert_array_equal(c0.excess, 0.0)


def test_simulated_curves_agree_with_closed_form(key):
    """The matrix path (stored weights + exact excess + GD fine-tuning) reproduces the per-mode path."""
    d, s = 8, tasks.power_law_spectrum(8, 1.0, 1.0)
    b = tasks.reversed_spectrum(s)
    T = jnp.array([2.0, 10.0, 40.0])
    u = closed_form.mode_strength(s, 1e-3, T[:, None])
    eye = jnp.eye(d)
    Ws_T = jax.vmap(lambda uT: network.init_aligned_balanced(eye, eye, uT, d))(u)
    sim = protocol.simulated_curves(Ws_T, jnp.diag(s), jnp.diag(b), gamma=0.3, sigmas=(0.2, 0.2), lr=1e-3, steps=1000)
    cf = protocol.closed_form_curves(s, b, 1e-3, T, gamma=0.3, sigma1=0.2, sigma2=0.2, d_in=d, h=d, d_out=d, tau=1.0)
    np.testing.assert_allclose(sim.excess, cf.excess, rtol=1e-4)
    np.testing.assert_allclose(sim.pretrain_loss, cf.pretrain_loss, rtol=1e-4)
    np.testing.assert_allclose(sim.finetuned_pretrain_loss, cf.finetuned_pretrain_loss, rtol=1e-2)


# Unequal widths and per-layer noise stds: nothing aligned, nothing symmetric.
WIDTHS = (5, 7, 4, 6, 3)
SIGMAS = (0.3, 0.5, 0.4, 0.6)


def _random_net(seed: int, widths, scale=0.6, dtype=None):
    """Gaussian weights and a Gaussian task from NumPy (no per-shape compile of a JAX draw)."""
    rng = np.random.default_rng(seed)
    dtype = jnp.result_type(float) if dtype is None else dtype
    Ws = tuple(jnp.asarray(scale * rng.standard_normal((o, i)), dtype) for i, o in zip(widths[:-1], widths[1:]))
    return Ws, jnp.asarray(rng.standard_normal((widths[-1], widths[0])), dtype)


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_exact_loss_matches_monte_carlo_at_any_depth(key, depth):
    """E[L_A(W~)] by the Gram recursion against a 40,000-draw Monte-Carlo mean: within 2 standard errors."""
    Ws, A = _random_net(depth, WIDTHS[: depth + 1])
    gamma, sigmas = 0.5, SIGMAS[:depth]
    exact = perturbation.expected_loss(Ws, A, gamma, sigmas)
    mean, se = perturbation.monte_carlo_loss(jax.random.fold_in(key, depth), Ws, A, gamma, sigmas, 40_000)
    assert abs(float(mean - exact)) < 2 * float(se), (float(exact), float(mean), float(se))
    # The check has power: the excess is resolved to 5% or better.
    assert float(se) < 0.05 * float(perturbation.excess(Ws, gamma, sigmas))


def test_recursion_equals_the_subset_sum_in_float64():
    """Two derivations of the excess (O(L) Gram recursion, 2^L - 1 subset terms) agree to rounding."""
    with jax.enable_x64(True):
        for depth in (1, 2, 3, 4, 5):
            Ws, _ = _random_net(10 + depth, (4, 6, 3, 7, 5, 2)[: depth + 1], scale=0.8, dtype=jnp.float64)
            sigmas = jnp.asarray(np.random.default_rng(depth).uniform(0.1, 1.0, depth), jnp.float64)
            gammas = jnp.array([0.0, 0.3, 2.0])
            rec = jax.jit(jax.vmap(perturbation.excess, (None, 0, None)))(Ws, gammas, sigmas)
            sub = jax.jit(jax.vmap(perturbation._excess_by_subsets, (None, 0, None)))(Ws, gammas, sigmas)
            assert rec.dtype == jnp.float64 and float(rec[0]) == 0.0 and float(rec[-1]) > float(rec[1]) > 0
            np.testing.assert_allclose(rec, sub, rtol=1e-13, atol=0.0)


def test_general_excess_reduces_to_the_depth_1_and_depth_2_formulas():
    (W1, W2), _ = _random_net(0, (6, 5, 4))
    gamma, s1, s2 = 0.4, 0.3, 0.5
    np.testing.assert_allclose(
        perturbation.excess((W1, W2), gamma, (s1, s2)), perturbation.gaussian_excess(W1, W2, gamma, s1, s2), rtol=1e-5
    )
    (W,), _ = _random_net(1, (6, 4))  # depth 1: constant, 1/2 gamma^2 sigma^2 d_in d_out whatever W is
    np.testing.assert_allclose(perturbation.excess((W,), gamma, (s1,)), 0.5 * gamma**2 * s1**2 * 6 * 4, rtol=1e-6)


def test_excess_is_jit_and_vmap_friendly():
    """Batched over networks (and traced gamma), jit(vmap(excess)) equals the loop of eager calls."""
    nets = [_random_net(seed, WIDTHS[:4])[0] for seed in range(3)]
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *nets)
    gammas = jnp.array([0.1, 0.5, 1.0])
    batched = jax.jit(jax.vmap(lambda Ws, g: perturbation.excess(Ws, g, SIGMAS[:3])))(stacked, gammas)
    eager = [perturbation.excess(Ws, g, SIGMAS[:3]) for Ws, g in zip(nets, gammas.tolist())]
    np.testing.assert_allclose(batched, eager, rtol=1e-5)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: perturbation.excess((jnp.ones((3, 2)), jnp.ones((4, 3))), 0.1, (1.0,)), "sigmas"),
        (lambda: perturbation.excess((jnp.ones((3, 2)), jnp.ones((4, 3))), -0.1, (1.0, 1.0)), "gamma"),
        (lambda: perturbation.excess((jnp.ones((3, 2)), jnp.ones((4, 5))), 0.1, (1.0, 1.0)), "Ws"),
        (lambda: perturbation.expected_loss((jnp.ones((3, 2)),), jnp.ones((3, 2)), 0.1, (1.0, 1.0)), "sigmas"),
    ],
)
def test_exact_excess_rejects_bad_arguments(call, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        call()
