"""The mitigations (docs/THEORY.md, "Mitigations"): the weight-decay and replay closed forms against matrix
gradient flow on the objectives they solve, SAM's step against its two-step formula and optax's SAM, and
the WSD schedule with no anneal against the constant rate."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from theory import closed_form, mitigation, network, protocol, simulate, tasks
from theory.finetune import finetune_gd, regularized_objective

D, H, R, U0 = 8, 10, 4, 1e-3  # a small aligned problem: s_i = 1/i on 4 modes, u0 = 1e-3


def rel_err(a, b):
    return float(jnp.max(jnp.abs(a - b) / jnp.abs(b)))


@pytest.fixture
def problem(key):
    s = tasks.power_law_spectrum(R, 1.0, 1.0)
    task = tasks.teacher(key, s, D, D)
    b = tasks.reversed_spectrum(s)
    return task, b, tasks.with_spectrum(task, b).matrix


def _strengths(Ws, task):
    return jax.vmap(lambda W: network.mode_strengths(W, task.U, task.V))(Ws)


def _closed_form(task, b, T, tau, **kw):
    """``protocol.closed_form_curves`` of the small problem (no noise)."""
    return protocol.closed_form_curves(
        task.s, b, U0, T, gamma=0.0, sigma1=0.0, sigma2=0.0, d_in=D, h=H, d_out=D, tau=tau, **kw
    )


@pytest.mark.parametrize("depth", [2, 3])
def test_weight_decay_closed_form_matches_matrix_flow(problem, depth):
    """Gradient flow on L_A + lambda/2 sum ||W_k||^2 from the aligned balanced init against the closed
    form (depth 2: the logistic law with target s - lambda; depth 3: the per-mode ODE with a pull to 0),
    on L_A(T) and, after fine-tuning on B by flow for tau, on L_A: <= 1e-3 relative. lambda = 0.3 lies
    between s_3 = 1/3 (learned, slowly: target 0.033) and s_4 = 1/4 (never learned)."""
    task, b, B = problem
    lam, tau = 0.3, 2.0
    T = jnp.array([0.0, 2.0, 10.0, 40.0])
    Ws0 = network.init_aligned_balanced(task.U, task.V, U0, H, depth)
    loss = mitigation.with_weight_decay(lambda W: network.task_loss(W, task.matrix), lam)
    Ws = simulate.gradient_flow(loss, Ws0, T)
    c = _closed_form(task, b, T, tau, weight_decay=lam, depth=depth)
    assert rel_err(jax.vmap(lambda W: network.task_loss(W, task.matrix))(Ws), c.pretrain_loss) < 1e-3
    after = [simulate.gradient_flow(lambda W: network.task_loss(W, B), W_T, jnp.array([tau])) for W_T in zip(*Ws)]
    L_A = jnp.array([network.task_loss(jax.tree.map(lambda w: w[0], W), task.matrix) for W in after])
    assert rel_err(L_A, c.finetuned_pretrain_loss) < 1e-3
    # The weights themselves: ``closed_form_weights`` follows the same law (depth 2: W(T) exactly).
    if depth == 2:
        W_cf = protocol.closed_form_weights(task.s, U0, T, task.U, task.V, h=H, weight_decay=lam)
        for W, V in zip(W_cf, Ws):
            np.testing.assert_allclose(W, V, atol=2e-4)


def test_no_weight_decay_is_the_plain_law_exactly(problem, default_setup):
    """lambda = 0 changes nothing: the same numbers as without it (traced under jit: up to the rounding
    of another fusion), and the logistic law s / (1 + (s/u0 - 1) e^{-2sT})."""
    task, b, _ = problem
    T = jnp.logspace(-1, 3, 9)
    plain = _closed_form(task, b, T, 2.0)
    traced = jax.jit(lambda wd: _closed_form(task, b, T, 2.0, weight_decay=wd))(0.0)
    for name in ("pretrain_loss", "finetuned_pretrain_loss", "finetuned_finetune_loss", "layer_norm_sq"):
        expected = getattr(plain, name)
        np.testing.assert_array_equal(getattr(_closed_form(task, b, T, 2.0, weight_decay=0.0), name), expected)
        np.testing.assert_allclose(getattr(traced, name), expected, rtol=1e-5, atol=1e-12, err_msg=name)
    s, u0 = default_setup["s"], default_setup["u0"]
    law = s / (1 + (s / u0 - 1) * jnp.exp(-2 * s * T[:, None]))
    np.testing.assert_allclose(closed_form.mode_strength(s, u0, T[:, None], weight_decay=0.0), law, rtol=1e-5)


def test_modes_weaker_than_the_decay_are_never_learned(default_setup):
    """Default spectrum s_i = 1/i, lambda = 0.1: modes 1..9 head for s_i - lambda; modes i >= 10
    (s_i <= lambda) decay from u0 to 0 monotonically, mode 10 (s = lambda) as u0 / (1 + 2 u0 t), the
    others exponentially. Exact and
    finite at t = 1e30 (no overflow for a negative target), and the law solves its ODE."""
    s, u0, lam = default_setup["s"], default_setup["u0"], 0.1
    T = jnp.logspace(-1, 6, 50)
    u = closed_form.mode_strength(s, u0, T[:, None], weight_decay=lam)
    killed = s <= lam + 1e-7
    assert int(killed.sum()) == 23 and bool(jnp.all(jnp.diff(u[:, killed], axis=0) <= 0))
    assert bool(jnp.all(u[-1, 10:] < 1e-9)) and bool(jnp.all(u[:, killed] <= u0))  # exponentially, below lambda
    np.testing.assert_allclose(u[-1, ~killed], s[~killed] - lam, rtol=1e-5)
    np.testing.assert_allclose(u[:, 9], u0 / (1 + 2 * u0 * T), rtol=1e-5)
    far = closed_form.mode_strength(s, u0, 1e30, weight_decay=lam)
    assert bool(jnp.all(jnp.isfinite(far))) and bool(jnp.all(far[10:] == 0))
    t = jnp.linspace(0.0, 30.0, 7)
    for c in (-0.4, 0.3):
        du_dt = jax.vmap(jax.grad(lambda t, c=c: closed_form.logistic_strength(c, 0.05, t)))(t)
        u_t = closed_form.logistic_strength(c, 0.05, t)
        np.testing.assert_allclose(du_dt, 2 * u_t * (c - u_t), rtol=2e-3, atol=1e-8)


def test_weight_decayed_sgd_tracks_the_decayed_flow(problem):
    """Coupled weight decay in SGD (``simulate.optimizer``) at a small lr is the flow of the decayed loss:
    flow time T = lr x steps, first-order error in lr."""
    task, _, _ = problem
    lam, lr, steps = 0.3, 2e-3, 4000
    Ws0 = network.init_aligned_balanced(task.U, task.V, U0, H)
    opt = simulate.optimizer("sgd", lr, weight_decay=lam)
    Ws = simulate.train(simulate.population_objective(task.matrix), Ws0, opt, steps, 1000)
    T = lr * 1000 * jnp.arange(1, 5)
    assert rel_err(_strengths(Ws, task)[:, :3], closed_form.mode_strength(task.s, U0, T[:, None], lam)[:, :3]) < 1e-2


@pytest.mark.parametrize("reg", [0.0, 0.3])
def test_replay_closed_form_matches_flow_on_the_mixed_loss(problem, reg):
    """Fine-tuning by matrix gradient flow on the explicit (1 - r) L_B + r L_A (+ the L2 pull) against
    the closed form's mixed target (1 - r) b + r s: L_A and L_B after fine-tuning within 1e-3 relative."""
    task, b, B = problem
    r, T, tau = 0.3, jnp.array([3.0, 8.0, 30.0]), 2.0
    Ws_T = protocol.closed_form_weights(task.s, U0, T, task.U, task.V, h=H)
    c = _closed_form(task, b, T, tau, reg=reg, replay=r)
    for k in range(len(T)):
        W_T = jax.tree.map(lambda w, k=k: w[k], Ws_T)
        objective = regularized_objective(B, W_T, reg, replay=r, A=task.matrix)
        W = jax.tree.map(lambda w: w[0], simulate.gradient_flow(objective, W_T, jnp.array([tau])))
        assert rel_err(network.task_loss(W, task.matrix), c.finetuned_pretrain_loss[k]) < 1e-3
        assert rel_err(network.task_loss(W, B), c.finetuned_finetune_loss[k]) < 1e-3


def test_full_replay_from_a_learned_model_forgets_nothing(problem):
    """r = 1 fine-tunes on L_A alone: from u = s (every mode learned) the modes stay at s, the closed form
    and GD on the mixed loss both give L_A after fine-tuning = L_A before (no forgetting)."""
    task, b, B = problem
    T = jnp.array([1e4])
    c = _closed_form(task, b, T, 2.0, replay=1.0)
    np.testing.assert_allclose(c.finetuned_pretrain_loss, c.pretrain_loss, atol=1e-10)
    W = network.init_aligned_balanced(task.U, task.V, task.s, H)  # u = s exactly
    W_ft = finetune_gd(W, B, 0.02, 100, replay=1.0, A=task.matrix)
    assert float(network.task_loss(W_ft, task.matrix)) < 1e-10
    np.testing.assert_allclose(network.mode_strengths(W_ft, task.U, task.V), task.s, rtol=1e-5)


def test_replay_with_samples_mixes_empirical_b_with_population_a(problem, key):
    """With n samples of B the fit is (1 - r) x the empirical L_B + r x the population L_A."""
    task, _, B = problem
    W_ref = network.init_aligned_balanced(task.U, task.V, 0.1, H)
    W = network.init_gaussian(key, network.widths(D, H, D), 0.3)
    X, Y = tasks.sample_dataset(key, B, 16, 0.1)
    got = regularized_objective(B, W_ref, 0.2, (X, Y), replay=0.25, A=task.matrix)(W)
    pull = sum(jnp.sum((w - v) ** 2) for w, v in zip(W, W_ref))
    expected = 0.75 * network.sample_loss(W, X, Y) + 0.25 * network.task_loss(W, task.matrix) + 0.1 * pull
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_replay_needs_the_pretraining_task():
    W = (jnp.eye(2), jnp.eye(2))
    with pytest.raises(ValueError, match=r"replay=0.5 mixes in L_A: give A"):
        regularized_objective(jnp.eye(2), W, 0.0, replay=0.5)
    with pytest.raises(ValueError, match=r"replay=1.5 must be >= 0 and <= 1"):
        regularized_objective(jnp.eye(2), W, 0.0, replay=1.5, A=jnp.eye(2))


# A quadratic L(W) = 1/2 sum_k tr(W_k^T H_k W_k) on two layers: grad_k = H_k W_k.
CURVATURES = (jnp.diag(jnp.array([3.0, 1.0, 0.2])), jnp.diag(jnp.array([2.0, 0.5])))


def _quadratic(W, _batch):
    return 0.5 * sum(jnp.sum(w * (h @ w)) for w, h in zip(W, CURVATURES))


QUADRATIC = simulate.Objective(_quadratic, lambda _key, n: jnp.zeros((n,)))


def test_a_sam_step_is_the_two_step_formula(key):
    """One step of ``train(sam_rho=rho)`` with SGD: W - lr grad L(W + rho g/||g||), g = grad L(W) and
    ||g|| the global norm over both layers, computed by hand; at W = 0 (g = 0) nothing moves, no NaN."""
    W0 = (jax.random.normal(key, (3, 2)), jax.random.normal(jax.random.fold_in(key, 1), (2, 3)))
    lr, rho = 0.1, 0.05
    g = [h @ w for w, h in zip(W0, CURVATURES)]
    norm = jnp.sqrt(sum(jnp.sum(x**2) for x in g))
    by_hand = [w - lr * h @ (w + rho * x / norm) for w, h, x in zip(W0, CURVATURES, g)]
    stepped = simulate.train(QUADRATIC, W0, optax.sgd(lr), 1, 1, sam_rho=rho)
    for got, expected in zip(stepped, by_hand):
        np.testing.assert_allclose(got[0], expected, rtol=1e-6, atol=1e-7)
    zero = tuple(jnp.zeros_like(w) for w in W0)
    assert all(bool(jnp.all(w == 0)) for w in simulate.train(QUADRATIC, zero, optax.sgd(lr), 3, 1, sam_rho=rho))


def test_sam_steps_equal_optax_sam(key):
    """Five steps agree with ``optax.contrib.sam(sgd(lr), chain(normalize(), sgd(rho)))``, the drop-in SAM
    of Foret et al.: run opaque (one call a step, the ascent inside) and transparent (sync_period 2: an
    ascent call, then the descent call from the cached W). Same normalisation (the global norm), same
    batch for both gradients; optax's ``normalize`` has no guard at g = 0 (it divides by 0), ours does."""
    W0 = (jax.random.normal(key, (3, 2)), jax.random.normal(jax.random.fold_in(key, 1), (2, 3)))
    lr, rho, n = 0.1, 0.05, 5
    ours = simulate.train(QUADRATIC, W0, optax.sgd(lr), n, 1, sam_rho=rho)
    grad = jax.grad(lambda W, _i: _quadratic(W, None))
    adversary = optax.chain(optax.contrib.normalize(), optax.sgd(rho))
    for opaque in (True, False):
        sam = optax.contrib.sam(optax.sgd(lr), adversary, sync_period=2, opaque_mode=opaque)
        state, W = sam.init(W0), W0
        for k in range(n):
            for _ in range(1 if opaque else 2):
                updates, state = sam.update(grad(W, 0), state, W, grad_fn=grad)
                W = optax.apply_updates(W, updates)
            for got, expected in zip(ours, W):
                np.testing.assert_allclose(got[k], expected, rtol=1e-5, atol=1e-6)


def test_sam_radius_is_checked():
    W = (jnp.eye(2), jnp.eye(2))
    with pytest.raises(ValueError, match="sam_rho=-0.1 must be >= 0"):
        simulate.train(QUADRATIC, W, optax.sgd(0.1), 1, 1, sam_rho=-0.1)


def test_no_anneal_is_the_constant_rate_until_the_budget(key):
    """WSD with decay_fraction 0 is the constant schedule at every step (0 from the budget on), so its
    budget series is the constant one, number for number."""
    wsd, constant = simulate.schedule("wsd", 0.1, 100, decay_fraction=0.0), simulate.schedule("constant", 0.1, 100)
    steps = jnp.arange(130)
    np.testing.assert_array_equal(jax.vmap(wsd)(steps), jax.vmap(constant)(steps))
    task = tasks.teacher(key, tasks.power_law_spectrum(3), 4, 4)
    Ws0 = network.init_gaussian(key, network.widths(4, 4, 4), 0.1)
    objective = simulate.minibatch_objective(task.matrix, 8, 0.1)
    runs = [
        simulate.budget_series(objective, Ws0, [50, 100], "separate", kind=kind, decay_fraction=0.0, key=key)
        for kind in ("wsd", "constant")
    ]
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
    annealed = simulate.budget_series(objective, Ws0, [50, 100], "separate", kind="wsd", decay_fraction=0.5, key=key)
    assert float(jnp.max(jnp.abs(annealed[0] - runs[0][0]))) > 1e-3
