"""The analytic Gaussian T* prediction against the exact T* of the closed form."""

import numpy as np
import pytest

from theory import closed_form, prediction

S = 1.0 / np.arange(1, 33)
U0, SIGMA, D = 1e-6, 32**-0.5, 32
GAMMAS = (0.15, 0.2, 0.3, 0.4, 0.6)


def exact_t_star(gamma: float) -> float:
    """argmin over a 200,001-point log grid of the exact perturbed loss sum_i (s_i - u_i)^2/2 + c gamma^2 u_i."""
    T = np.logspace(-1, 4, 200_001)
    u = np.asarray(closed_form.mode_strength(S[:, None], U0, T[None]))
    c = (D * SIGMA**2 + D * SIGMA**2) / 2
    return float(T[np.argmin((0.5 * (S[:, None] - u) ** 2 + c * gamma**2 * u).sum(0))])


def test_learning_time_is_when_a_mode_is_half_learned():
    t = closed_form.learning_time(S, U0)
    np.testing.assert_allclose(closed_form.mode_strength(S, U0, t), S / 2, rtol=1e-5)


def test_the_prediction_lands_within_ten_percent_of_the_exact_t_star():
    predicted = np.asarray(prediction.gaussian_t_star(S, U0, np.array(GAMMAS), SIGMA, SIGMA, D, D))
    exact = np.array([exact_t_star(g) for g in GAMMAS])
    error = predicted / exact - 1
    # Measured: +9.0%, +5.1%, -2.6%, -1.3%, -4.0% (exact T* 108.2, 64.7, 31.3, 19.3, 7.20).
    np.testing.assert_allclose(exact, [108.2, 64.66, 31.33, 19.32, 7.20], rtol=2e-3)
    assert np.all(np.abs(error) < 0.10), error
    assert np.all(np.diff(predicted) < 0) and np.all(np.diff(exact) < 0)  # both earlier for larger gamma


def test_no_beneficial_mode_gives_nan_and_all_beneficial_gives_never():
    t = np.asarray(prediction.gaussian_t_star(S, U0, np.array([10.0, 1e-3]), SIGMA, SIGMA, D, D))
    assert np.isnan(t[0]) and t[1] == np.inf


@pytest.mark.parametrize("gamma", [0.3])
def test_the_order_of_the_modes_does_not_matter(gamma):
    shuffled = np.random.default_rng(0).permutation(S)
    a = prediction.gaussian_t_star(S, U0, gamma, SIGMA, SIGMA, D, D)
    b = prediction.gaussian_t_star(shuffled, U0, gamma, SIGMA, SIGMA, D, D)
    assert float(a) == float(b)
