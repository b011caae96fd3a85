"""Sample sizes from a pilot: the variance components recovered from simulated pilots, eq. (1) against
the spread of simulated studies, and the cheapest plan that meets a target."""

import math

import numpy as np
import pytest
from scipy import stats

from analysis import power

T = 4096.0 * np.array([312, 625, 1250, 2500, 5000, 10000, 20000])
TRUE = 0.3 * (np.log(T) - np.log(T[3])) ** 2 / 10 + 4.0  # a U in log T, minimum at T[3]


def simulate(rng, n, m, sigma_s, sigma_o, shape=()):
    """L[..., series, order, time]: the true curve + a series effect per checkpoint + an order effect
    per (series, order, checkpoint), independent Gaussians."""
    series = rng.normal(0, sigma_s, (*shape, n, 1, T.size))
    order = rng.normal(0, sigma_o, (*shape, n, m, T.size))
    return TRUE + series + order


def test_half_width_is_the_student_t_interval_of_the_series_means():
    assert power.half_width(0.01, 0.0, 2, 1) == pytest.approx(stats.t.ppf(0.975, 1) * 0.1 / math.sqrt(2))
    # More orders only shrink the order part; more series shrink both.
    assert power.half_width(1e-4, 1e-3, 6, 4) < power.half_width(1e-4, 1e-3, 6, 2)
    with pytest.raises(ValueError, match="n=1"):
        power.half_width(1e-4, 1e-4, 1, 2)


def test_components_recover_the_simulated_variances_on_average():
    """Per checkpoint, series sd 0.02 and order sd 0.03: a fall or rise (a difference of two
    checkpoints) has sigma_s^2 = 2 * 0.02^2 and sigma_o^2 = 2 * 0.03^2; both estimators are unbiased
    for these (the residual one up to the quadratic fit's misfit, none here)."""
    rng = np.random.default_rng(0)
    found = [power.components(T, simulate(rng, 4, 3, 0.02, 0.03)) for _ in range(400)]
    for side in ("fall", "rise"):
        for how in ("direct", "residual"):
            s2 = np.mean([f[side][how]["sigma_s2"] for f in found])
            o2 = np.mean([f[side][how]["sigma_o2"] for f in found])
            assert o2 == pytest.approx(2 * 0.03**2, rel=0.1)
            # max(., 0) truncation biases sigma_s^2 up a little where it is small against sigma_o^2 / m.
            assert s2 == pytest.approx(2 * 0.02**2, rel=0.25)


def test_eq1_predicts_the_spread_of_simulated_studies():
    """The interval half-width of (d)'s rise over n series x m orders, simulated 2,000 times, has the
    mean eq. (1) gives (up to E[s] < sigma: c4(n) = 0.95 at n = 6)."""
    rng = np.random.default_rng(1)
    n, m, sigma_s, sigma_o = 6, 2, 0.02, 0.03
    L = simulate(rng, n, m, sigma_s, sigma_o, shape=(2000,))
    rise = (L[..., -1] - L[..., 3]).mean(-1)  # [study, series]
    widths = stats.t.ppf(0.975, n - 1) * rise.std(-1, ddof=1) / math.sqrt(n)
    c4 = math.sqrt(2 / (n - 1)) * math.gamma(n / 2) / math.gamma((n - 1) / 2)
    expected = power.half_width(2 * sigma_s**2, 2 * sigma_o**2, n, m) * c4
    assert widths.mean() == pytest.approx(expected, rel=0.03)


def test_plan_gives_each_size_its_smallest_n_and_the_cheapest_shared_m():
    variances = {"20k/rise": (2e-4, 8e-4), "5k/rise": (1.6e-3, 2e-4)}
    costs = {"20k": power.Cost(series=1800, order=1200), "5k": power.Cost(series=500, order=700)}
    chosen = power.plan(variances, costs, target=0.03, n_min=6, m_min=2)
    assert chosen["met"] and max(chosen["half_widths"].values()) <= 0.03
    n, m = chosen["n"], chosen["m"]
    assert n["5k"] > n["20k"]  # the noisier size needs more series
    for size, (s2, o2) in (("20k", variances["20k/rise"]), ("5k", variances["5k/rise"])):
        assert power.half_width(s2, o2, n[size], m) <= 0.03
        assert n[size] == 6 or power.half_width(s2, o2, n[size] - 1, m) > 0.03  # the smallest that meets it
    for other in range(2, 8):  # no other shared m is cheaper
        again = power.plan(variances, costs, target=0.03, n_min=6, m_min=other, m_max=other)
        assert not again["met"] or again["cost"] >= chosen["cost"]
    impossible = power.plan(variances, costs, target=1e-4, n_max=8, m_max=3)
    assert not impossible["met"] and impossible["n"] == {"20k": 8, "5k": 8}


def test_pooled_weights_the_two_estimates_by_their_dof():
    entry = {
        "direct": {"sigma_s2": 4.0, "sigma_o2": 1.0, "dof_s": 1, "dof_o": 2},
        "residual": {"sigma_s2": 1.0, "sigma_o2": 2.0, "dof_s": 4, "dof_o": 8},
    }
    assert power.pooled(entry) == (pytest.approx(8 / 5), pytest.approx(18 / 10))


@pytest.mark.parametrize(
    "args, needle",
    [
        ((T, np.zeros((1, 2, T.size))), "need >= 2"),
        ((T, np.zeros((2, 2, 3))), "expected"),
        ((T, np.full((2, 2, T.size), np.nan)), "finite"),
    ],
)
def test_components_refuse_pilots_they_cannot_use(args, needle):
    with pytest.raises(ValueError, match=needle):
        power.components(*args)
