import jax
import jax.numpy as jnp
import numpy as np

from theory import network, perturbation, protocol


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


def test_depth3_monte_carlo_in_closed_form_curves_is_consistent(key, default_setup):
    """Depth 3 has no formula: the paired Monte-Carlo excess must still grow with T and vanish at gamma=0."""
    st = default_setup
    T = jnp.array([1.0, 30.0, 300.0])
    kw = dict(sigma1=st["sigma"], sigma2=st["sigma"], d_in=st["d"], h=st["d"], d_out=st["d"], tau=1.0, depth=3, key=key)
    c = protocol.closed_form_curves(st["s"], st["b"], 1e-3, T, gamma=0.2, **kw)
    assert bool(jnp.all(jnp.diff(c.excess) > 0))
    c0 = protocol.closed_form_curves(st["s"], st["b"], 1e-3, T, gamma=0.0, **kw)
    np.testing.assert_allclose(c0.excess, 0.0, atol=1e-6)


def test_simulated_curves_agree_with_closed_form(key):
    """The matrix path (stored weights + exact excess + GD fine-tuning) reproduces the per-mode path."""
    from theory import closed_form, tasks

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
