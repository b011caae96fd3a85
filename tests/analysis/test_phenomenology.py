"""The power-law decomposition and its closed-form T*."""

import numpy as np
import pytest
from scipy import optimize

from analysis import phenomenology as ph

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
