"""The linear model fitted to its own curves: the exponent, time map, floor, reference and link come back."""

import jax.numpy as jnp
import numpy as np
import pytest

from analysis.phenomenology import fit_reference
from theory import link, measure, protocol, tasks
from theory.linear_fit import LAM_BOUNDS, U0_RATIO, fit_joint, fit_linear_model
from theory.linear_model import LinearModel

TOKENS = np.geomspace(4e4, 2e6, 24)
KAPPA = 1e-4  # flow time per token: learning spans the grid


def _theory_curves(alpha_s, gamma=0.3, u0=U0_RATIO):
    s = tasks.power_law_spectrum(32, 1.0, alpha_s)
    sigma = 32**-0.5
    c = protocol.closed_form_curves(
        s,
        tasks.reversed_spectrum(s),
        u0,
        jnp.asarray(KAPPA * TOKENS),
        gamma=gamma,
        sigma1=sigma,
        sigma2=sigma,
        d_in=32,
        h=32,
        d_out=32,
        tau=2.0,
    )
    return np.asarray(c.pretrain_loss, float), np.asarray(c.excess, float)


@pytest.mark.parametrize("alpha_s", [1.0, 1.5])
def test_linear_model_fit_recovers_the_spectrum_exponent(alpha_s):
    """Data of ``closed_form_curves`` on a token axis (T_flow = KAPPA * tokens) with an irreducible
    floor 2.0 added: the fit recovers the exponent, the time map and the floor, and then the noise
    reference (exactly 1 here) from one gamma's excess."""
    loss, excess = _theory_curves(alpha_s)
    learning = (loss < 0.99 * loss[0]) & (loss > 1e-3 * loss[0])  # the fit window of ``ovt compare``
    model, good = fit_linear_model(TOKENS[learning], 2.0 + loss[learning])
    assert model.alpha_s == pytest.approx(alpha_s, rel=0.1)
    assert model.kappa == pytest.approx(KAPPA, rel=0.15)
    assert model.E == pytest.approx(2.0, abs=0.01)
    assert good.r2_log > 0.999
    ref = fit_reference(model, "gaussian", TOKENS[learning], 0.3, excess[learning])
    assert ref == pytest.approx(1.0, rel=0.1)


def test_linear_model_curves_are_the_protocol_curves():
    """The model's clean loss and Gaussian excess are ``closed_form_curves`` on the mapped axis, so its
    T* for a larger gamma is the protocol's."""
    loss, _ = _theory_curves(1.0, u0=1e-6)
    _, true_excess = _theory_curves(1.0, gamma=0.6, u0=1e-6)
    model = LinearModel(alpha_s=1.0, s1=1.0, u0=1e-6, kappa=KAPPA, E=0.0, rank=32)
    clean, excess = model.curves(TOKENS, "gaussian", [0.6])
    np.testing.assert_allclose(clean, loss, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(excess[0], true_excess, rtol=1e-4)
    t_star = float(measure.inflection(TOKENS, loss + true_excess))
    assert np.isfinite(t_star)
    assert float(measure.inflection(TOKENS, clean + excess[0])) == pytest.approx(t_star, rel=1e-3)


GAMMAS = np.array([0.1, 0.2, 0.4])


def _family(alpha_s, ref, lam):
    """A Gaussian family of the linear model itself on the token axis: floor 2.0, store sizes GAMMAS
    read as theory gamma = ref x size, the excess linked to log-loss with ``lam`` (None: quadratic)."""
    loss, _ = _theory_curves(alpha_s)
    S = np.array([_theory_curves(alpha_s, gamma=ref * g)[1] for g in GAMMAS])
    if lam is not None:
        S = np.asarray(link.linked_excess(S, lam), float)
    learning = (loss < 0.99 * loss[0]) & (loss > 1e-3 * loss[0])
    return TOKENS[learning], 2.0 + loss[learning], S[:, learning]


@pytest.mark.parametrize("lam", [None, 0.05])
def test_joint_fit_recovers_every_parameter_of_its_own_curves(lam):
    """Base and three sizes' excess of the model (with or without the link, saturating inside the
    sizes at lam = 0.05): the joint fit recovers the exponent, time map, floor, reference and lam, with
    nothing at a bound, and fits to rounding."""
    T, base, S = _family(1.0, 2.0, lam)
    fit = fit_joint(T, base, GAMMAS, S, "gaussian", link=lam is not None)
    assert fit.at_bounds == ()
    assert fit.model.alpha_s == pytest.approx(1.0, rel=0.02)
    assert fit.model.kappa == pytest.approx(KAPPA, rel=0.05)
    assert fit.model.E == pytest.approx(2.0, abs=1e-3)
    assert fit.ref == pytest.approx(2.0, rel=0.05)
    if lam is not None:
        assert fit.lam == pytest.approx(lam, rel=0.05)
    assert fit.goodness.rmse_log < 1e-3
    _, predicted = fit.predict(T, GAMMAS)
    np.testing.assert_allclose(predicted, S, rtol=0.01)


def test_a_link_that_never_bends_is_reported_at_its_quadratic_limit():
    """Fitted with the link to curves that never saturate, lam is not determined beyond the largest Q:
    the fit says so (lam at its upper bound, named in at_bounds) and fits as the quadratic model does."""
    T, base, S = _family(1.0, 2.0, None)
    linked = fit_joint(T, base, GAMMAS, S, "gaussian", link=True)
    quadratic = fit_joint(T, base, GAMMAS, S, "gaussian", link=False)
    assert linked.lam == pytest.approx(LAM_BOUNDS[1]) and linked.at_bounds == ("lam",) == linked.model.at_bounds
    _, Q = linked.model.curves(T, "gaussian", GAMMAS * linked.ref)
    assert 5.0 < Q.max() < 0.1 * linked.lam  # Q reaches 9 nats, far below the bound: quadratic at every point
    np.testing.assert_allclose(linked.predict(T, GAMMAS)[1], quadratic.predict(T, GAMMAS)[1], rtol=0.02)
    assert linked.goodness.rmse_log < 1e-3


def test_the_link_is_the_identity_to_second_order_and_saturates_beyond():
    """linked_excess(Q, lam) = Q below lam, 2 sqrt(Q lam) - lam above: continuous with its slope at
    lam, and a fit without the link on saturated curves is worse than one with it."""
    Q = np.array([0.0, 0.01, 0.049, 0.05, 0.051, 0.2, 5.0])
    out = np.asarray(link.linked_excess(Q, 0.05), float)
    np.testing.assert_allclose(out[:4], Q[:4], rtol=1e-6)
    np.testing.assert_allclose(out[4:], 2 * np.sqrt(Q[4:] * 0.05) - 0.05, rtol=1e-6)
    step = 1e-3  # one-sided slopes at the threshold, in float32
    slope = np.diff(np.asarray(link.linked_excess(np.array([0.05 - step, 0.05, 0.05 + step]), 0.05), float)) / step
    np.testing.assert_allclose(slope, 1.0, rtol=0.02)
    T, base, S = _family(1.0, 2.0, 0.05)
    quadratic = fit_joint(T, base, GAMMAS, S, "gaussian", link=False)
    assert quadratic.goodness.rmse_log > 10 * fit_joint(T, base, GAMMAS, S, "gaussian").goodness.rmse_log
