"""theory/link.py: logit-noise excess vs a softmax regression, its small-noise and REM limits, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from theory.link import linked_excess, logit_noise_excess, rem_excess


def _log_sum_exp(x):
    top = x.max(axis=-1, keepdims=True)
    return (top + np.log(np.exp(x - top).sum(axis=-1, keepdims=True)))[..., 0]


def _softmax_regression(seed=0, K=12, d=6, n=64):
    """W (K x d) and inputs x with N(0, 1) entries, labels drawn from the model's own p(x)."""
    rng = np.random.default_rng(seed)
    W, X = rng.normal(size=(K, d)), rng.normal(size=(n, d))
    Z = X @ W.T
    P = np.exp(Z - _log_sum_exp(Z)[:, None])
    y = np.array([rng.choice(K, p=p) for p in P])
    return rng, W, X, Z, P, y


@pytest.mark.parametrize("s", [0.3, 1.0])
def test_softmax_regression_excess_computed_both_ways(s):
    """Weight noise G (iid N(0, s^2)) on a softmax regression z = W x: the batch's mean CE excess,
    averaged over G draws, equals the mean over inputs of Phi(s^2 |x|^2; p(x)) from
    logit_noise_excess, since G x is exactly iid N(0, s^2 |x|^2) across classes. Both estimates carry
    a standard error under 2% of the value, and they agree within 4 combined standard errors."""
    rng, W, X, Z, P, y = _softmax_regression()
    n, K, d = X.shape[0], *W.shape
    rows = np.arange(n)

    def ce(Z):  # per-input cross-entropy, any leading axes
        return _log_sum_exp(Z) - Z[..., rows, y]

    # Way 1, direct: 4000 draws of G, each giving the batch-mean excess.
    G = s * rng.normal(size=(4000, K, d))
    excess = (ce(Z + np.einsum("nd,gkd->gnk", X, G)) - ce(Z)).mean(axis=-1)
    direct, direct_se = excess.mean(), excess.std(ddof=1) / np.sqrt(excess.size)

    # Way 2, the link's identity: Phi per input, each with its own independent draws.
    per_input = [
        logit_noise_excess(P[i], s**2 * X[i] @ X[i], n_draws=2048, key=jax.random.key(100 + i)) for i in range(n)
    ]
    linked = np.mean([m for m, _ in per_input])
    linked_se = np.sqrt(sum(se**2 for _, se in per_input)) / n

    assert direct_se < 0.02 * direct and linked_se < 0.02 * linked
    assert abs(direct - linked) < 4 * np.hypot(direct_se, linked_se), (direct, direct_se, linked, linked_se)


@pytest.mark.parametrize("v", [1e-3, 1e-2])
def test_small_noise_is_second_order(v):
    """For small v, Phi(v; p) = (v/2)(1 - sum p^2) + c2 v^2 with c2 = sum p^3 - sum p^2 / 4 -
    (3/4)(sum p^2)^2 (the expansion of E log(1 + Y) to fourth order in eps), |c2| <= 1: the Monte-Carlo
    matches the quadratic term within 4 s.e. plus v^2. 2^19 draws make the s.e. about 7% of the value
    at v = 1e-3, so the check is not vacuous."""
    p = np.array([0.5, 0.2, 0.15, 0.1, 0.05])
    mean, se = logit_noise_excess(p, v, n_draws=2**19, key=jax.random.key(1))
    quadratic = v / 2 * (1 - np.sum(p**2))
    assert se < 0.1 * quadratic
    assert abs(mean - quadratic) < 4 * se + v**2, (mean, se, quadratic)


def test_uniform_softmax_tends_to_the_rem_limit():
    """p uniform over K = e^lam classes: at v = 4 lam (beyond the threshold) the relative gap between
    the Monte-Carlo and rem_excess shrinks strictly over K = 2^6, 2^10, 2^14 (the REM limit is
    approached slowly, ~11% at 2^14, so the s.e. must stay well below the ~3% steps between the gaps);
    at v = lam / 2 (the linear regime) it is under 1% at K = 2^14 (about 0.15% s.e. at 512 draws)."""
    gaps = []
    for k, n_draws in ((6, 1024), (10, 1024), (14, 256)):
        K = 2**k
        lam = np.log(K)
        mean, se = logit_noise_excess(np.full(K, 1 / K), 4 * lam, n_draws=n_draws, key=jax.random.key(k))
        limit = float(rem_excess(4 * lam, lam))
        assert se < 0.01 * limit
        gaps.append(abs(mean - limit) / limit)
    assert gaps[0] > gaps[1] > gaps[2], gaps

    K = 2**14
    lam = np.log(K)
    mean, se = logit_noise_excess(np.full(K, 1 / K), lam / 2, n_draws=512, key=jax.random.key(15))
    limit = float(rem_excess(lam / 2, lam))
    assert se < 0.0025 * limit
    assert abs(mean - limit) / limit < 0.01, (mean, se, limit)


@pytest.mark.parametrize("lam", [0.5, 1.0, float(np.log(50257))])
def test_rem_excess_shape(lam):
    """rem_excess is v/2 up to 2 lam, meets sqrt(2 v lam) - lam there with the same value (lam) and
    slope (1/2, finite differences of step 1e-3 on both sides), is increasing and concave on a grid,
    and grows as sqrt(v) far beyond (rem(100 v) / rem(v) -> 10: 10.06 at v = 1e4 lam). All points go
    through one call (one shape, one compile)."""
    t, h, far = 2 * lam, 1e-3, 1e4 * lam
    below, beyond = np.linspace(0.0, t, 11), np.linspace(t, 50 * t, 11)
    grid = np.linspace(0.0, 20 * lam, 201)
    points = np.concatenate([below, beyond, [t, t - h, t + h, far, 100 * far], grid])
    values = np.asarray(rem_excess(points, lam), float)
    at_below, at_beyond, (at, left, right, at_far, at_farther), on_grid = np.split(values, [11, 22, 27])

    np.testing.assert_allclose(at_below, below / 2, rtol=1e-6)
    np.testing.assert_allclose(at_beyond, np.sqrt(2 * beyond * lam) - lam, rtol=1e-5)

    np.testing.assert_allclose(at, lam, rtol=1e-6)
    np.testing.assert_allclose([(at - left) / h, (right - at) / h], 0.5, rtol=1e-2)

    assert np.all(np.diff(on_grid) > 0)
    curvature = np.diff(on_grid, 2)
    assert np.all(curvature <= 1e-5 * on_grid.max())  # flat (up to rounding) below 2 lam
    assert np.all(curvature[grid[1:-1] > t] < 0)  # strictly concave beyond

    np.testing.assert_allclose(at_farther / at_far, 10.0, rtol=1e-2)


def test_rem_excess_under_jit_and_grad():
    """rem_excess traces: jit gives the eager values, and grad in v is 1/2 below 2 lam (v = 0
    included: the branch not taken stays finite) and sqrt(lam / (2 v)) beyond."""
    v = jnp.array([0.0, 0.5, 3.0, 8.0, 50.0, 1e3])
    lam = jnp.array([1.0, 1.0, 2.0, 1.0, 2.0, 10.0])
    np.testing.assert_allclose(jax.jit(rem_excess)(v, lam), rem_excess(v, lam), rtol=1e-6)
    grad = np.asarray(jax.jit(jax.vmap(jax.grad(rem_excess)))(v, lam))
    expected = np.where(v <= 2 * lam, 0.5, np.sqrt(lam / (2 * np.maximum(v, 1e-30))))
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad, expected, rtol=1e-5)


def test_linked_excess_is_rem_of_twice_q():
    """linked_excess(Q, lam) = rem_excess(2 Q, lam): Q itself up to Q = lam (and below 0), 2 sqrt(Q lam) - lam
    beyond."""
    Q, lam = np.array([0.0, 0.3, 1.0, 4.0, 25.0]), 1.0
    np.testing.assert_allclose(linked_excess(Q, lam), rem_excess(2 * Q, lam), rtol=1e-6)
    np.testing.assert_allclose(linked_excess(Q, lam), np.where(Q <= lam, Q, 2 * np.sqrt(Q * lam) - lam), rtol=1e-6)
    # A fine-tuning that lowers the loss (Q < 0) is in the identity's range.
    np.testing.assert_allclose(linked_excess(np.array([-0.5, -0.01]), lam), [-0.5, -0.01], rtol=1e-6)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: rem_excess(-1.0, 1.0), r"v=-1.* must be >= 0"),
        (lambda: rem_excess(1.0, 0.0), r"lam=0.* must be > 0"),
        (lambda: logit_noise_excess([0.5, 0.6], 0.1), r"p sums to 1\.1"),
        (lambda: logit_noise_excess([1.2, -0.2], 0.1), r"p=\[-0\.2\] must be >= 0"),
        (lambda: logit_noise_excess([0.5, 0.5], 0.1, n_draws=1), r"n_draws=1 must be >= 2"),
    ],
    ids=["negative-v", "zero-lam", "p-not-summing-to-1", "negative-p", "one-draw"],
)
def test_bad_input_is_refused_by_name(call, match):
    """Each bad argument raises a ValueError whose message names it and says what is allowed."""
    with pytest.raises(ValueError, match=match):
        call()
