"""The linear model fitted to its own curves: the exponent, time map, floor and reference come back."""

import jax.numpy as jnp
import numpy as np
import pytest

from analysis.phenomenology import fit_reference
from theory import measure, protocol, tasks
from theory.linear_model import LinearModel, fit_linear_model

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
    loss, _ = _theory_curves(1.0)
    _, true_excess = _theory_curves(1.0, gamma=0.6)
    model = LinearModel(alpha_s=1.0, s1=1.0, u0=1e-6, kappa=KAPPA, E=0.0, rank=32)
    clean, excess = model.curves(TOKENS, "gaussian", [0.6])
    np.testing.assert_allclose(clean, loss, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(excess[0], true_excess, rtol=1e-4)
    t_star = float(measure.inflection(TOKENS, loss + true_excess))
    assert np.isfinite(t_star)
    assert float(measure.inflection(TOKENS, clean + excess[0])) == pytest.approx(t_star, rel=1e-3)
