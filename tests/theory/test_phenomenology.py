"""The power-law decomposition, its closed-form T*, and the linear model fitted to its own curves."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

from theory import measure, protocol, tasks
from theory import phenomenology as ph

TRUE = ph.Decomposition(E=2.5, A=40.0, alpha=0.5, C=2e-4, p=2.0, beta=0.6)


@pytest.mark.parametrize("D", [TRUE, ph.Decomposition(E=0.0, A=3.0, alpha=1.3, C=0.05, p=3.0, beta=0.4)])
@pytest.mark.parametrize("m", [0.3, 1.0, 4.0])
def test_closed_form_t_star_is_the_numerical_argmin(D, m):
    best = optimize.minimize_scalar(
        lambda x: D.modified(np.exp(x), m), bounds=(-20.0, 40.0), method="bounded", options={"xatol": 1e-10}
    )
    np.testing.assert_allclose(D.t_star(m), np.exp(best.x), rtol=1e-4)


def test_t_star_moves_as_a_power_of_the_size():
    m = np.array([0.5, 1.0, 2.0, 4.0])
    slope = np.diff(np.log(TRUE.t_star(m))) / np.diff(np.log(m))
    np.testing.assert_allclose(slope, -TRUE.p / (TRUE.alpha + TRUE.beta), rtol=1e-10)


def test_no_minimum_without_a_growing_sensitivity():
    assert np.isinf(ph.inflection_time(1.0, A=1.0, alpha=1.0, C=1.0, p=2.0, beta=-0.1))
    assert np.isinf(ph.inflection_time(1.0, A=1.0, alpha=1.0, C=0.0, p=2.0, beta=0.5))


def test_noiseless_power_laws_are_recovered():
    T = np.geomspace(1e5, 1e7, 9)
    m = np.array([0.5, 1.0, 2.0])
    (E, A, alpha), good = ph.fit_base(T, TRUE.base(T))
    np.testing.assert_allclose([E, A, alpha], [TRUE.E, TRUE.A, TRUE.alpha], rtol=1e-5)
    assert good.rmse_log < 1e-8
    TT, mm = np.meshgrid(T, m)
    (C, p, beta), good = ph.fit_sensitivity(TT, mm, TRUE.excess(TT, mm))
    np.testing.assert_allclose([C, p, beta], [TRUE.C, TRUE.p, TRUE.beta], rtol=1e-8)
    assert good.r2_log == pytest.approx(1.0)


def test_fits_refuse_unidentified_parameters():
    T = np.geomspace(1.0, 10.0, 5)
    with pytest.raises(ValueError, match="2 sizes"):
        ph.fit_sensitivity(T, np.full(5, 1.0), T)
    with pytest.raises(ValueError, match="3 distinct T"):
        ph.fit_base(T[:2], T[:2])


TOKENS = np.geomspace(4e4, 2e6, 24)
KAPPA = 1e-4  # flow time per token: learning spans the grid


def _theory_curves(alpha_s, gamma=0.3):
    s = tasks.power_law_spectrum(32, 1.0, alpha_s)
    sigma = 32**-0.5
    c = protocol.closed_form_curves(
        s,
        tasks.reversed_spectrum(s),
        1e-6,
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
    model, good = ph.fit_linear_model(TOKENS[learning], 2.0 + loss[learning])
    assert model.alpha_s == pytest.approx(alpha_s, rel=0.1)
    assert model.kappa == pytest.approx(KAPPA, rel=0.15)
    assert model.E == pytest.approx(2.0, abs=0.01)
    assert good.r2_log > 0.999
    ref = ph.fit_reference(model, "gaussian", TOKENS[learning], 0.3, excess[learning])
    assert ref == pytest.approx(1.0, rel=0.1)


def test_linear_model_curves_are_the_protocol_curves():
    """The model's clean loss and Gaussian excess are ``closed_form_curves`` on the mapped axis, so its
    T* for a larger gamma is the protocol's."""
    loss, _ = _theory_curves(1.0)
    _, true_excess = _theory_curves(1.0, gamma=0.6)
    model = ph.LinearModel(alpha_s=1.0, s1=1.0, u0=1e-6, kappa=KAPPA, E=0.0, rank=32)
    clean, excess = model.curves(TOKENS, "gaussian", [0.6])
    np.testing.assert_allclose(clean, loss, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(excess[0], true_excess, rtol=1e-4)
    t_star = float(measure.inflection(TOKENS, loss + true_excess))
    assert np.isfinite(t_star)
    assert float(measure.inflection(TOKENS, clean + excess[0])) == pytest.approx(t_star, rel=1e-3)
