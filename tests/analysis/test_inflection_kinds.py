"""``analysis.inflection.inflection_kind``: what a curve's minimum is, and ``inflection`` NaN for every
kind but "interior"."""

import numpy as np
import pytest

from analysis.inflection import KINDS, RISE_FRACTION, RTOL, inflection, inflection_kind, vertex_minimum

T = np.logspace(0, 3, 13)
X = np.log(T)


def test_each_kind():
    curves = {
        "interior": (X - X[6]) ** 2,
        "below": X,  # rises from the start
        "above": -X,  # still falling at the end
        "flat": np.maximum(1.0 - X / 3.0, 0.2),  # falls, then levels off
        "none": np.full_like(T, np.nan),
    }
    kinds = inflection_kind(T, np.stack(list(curves.values())))
    assert kinds.shape == (5,) and kinds.tolist() == list(curves)
    t_star = inflection(T, np.stack(list(curves.values())))
    assert t_star[0] == pytest.approx(T[6], rel=1e-3) and np.isnan(t_star[1:]).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_curve_constant_up_to_float32_noise_is_flat_wherever_its_minimum_falls(dtype):
    rng = np.random.default_rng(0)
    noisy = 1.0 + 1e-7 * rng.standard_normal((200, T.size))
    kinds = inflection_kind(T, noisy, dtype=dtype)
    assert (kinds == "flat").all(), sorted(set(kinds.tolist()))
    assert np.isnan(inflection(T, noisy, dtype=dtype)).all()


def test_a_rise_that_is_tiny_against_the_range_is_flat():
    y = np.maximum(1.0 - X / 3.0, 1e-3)  # falls by ~1, then levels off at 1e-3 ...
    y[-1] += 0.5 * RISE_FRACTION  # ... and rises by half the range tolerance: 5e-3 of the minimum
    assert str(inflection_kind(T, y, dtype=np.float64)) == "flat"
    y[-1] += 2 * RISE_FRACTION
    assert str(inflection_kind(T, y, dtype=np.float64)) == "interior"
    assert str(inflection_kind(T, y, dtype=np.float64, rise_fraction=1e-3)) == "flat"


def test_the_range_tolerance_scales_with_rtol():
    plateau = np.maximum(1.0 - X / 3.0, 0.2)
    plateau[-1] += 1e-6  # 5e-6 of the minimum, 1.25e-6 of the range
    assert str(inflection_kind(T, plateau)) == "flat"
    assert str(inflection_kind(T, plateau, rtol=0.0)) == "interior"  # no tolerance at all
    assert str(inflection_kind(T, plateau, rtol=RTOL / 10, dtype=np.float64)) == "flat"  # 1e-6 > 1e-5 x 0.2 ...
    assert str(inflection_kind(T, plateau, rtol=RTOL / 100, dtype=np.float64)) == "interior"  # ... 1e-6 < 1e-6 x 0.8


def test_a_rise_within_the_spread_is_flat():
    y = (X - X[6]) ** 2 / 100 + 1.0  # rises by 0.12 after its minimum
    assert str(inflection_kind(T, y, spread=0.1)) == "interior"
    assert str(inflection_kind(T, y, spread=0.2)) == "flat"
    spread = np.full_like(T, np.nan)  # not known anywhere ...
    assert str(inflection_kind(T, y, spread=spread)) == "interior"
    spread[6] = 0.2  # ... but at the minimum
    assert str(inflection_kind(T, y, spread=spread)) == "flat"
    assert np.isnan(inflection(T, y, spread=spread))


def test_ends_are_judged_among_the_finite_points():
    y = (X - X[6]) ** 2
    y[:6] = np.nan  # diverged before the minimum: the first finite point is the minimum
    assert str(inflection_kind(T, y)) == "below"
    y = -X
    y[8:] = np.nan  # the last finite point is the lowest: still falling where it was measured
    assert str(inflection_kind(T, y)) == "above"
    y = np.full_like(T, np.nan)
    y[:2] = 1.0, 2.0
    assert str(inflection_kind(T, y)) == "none"


def test_a_nan_neighbour_leaves_the_grid_argmin():
    y = (X - X[6]) ** 2
    y[5] = np.nan
    assert str(inflection_kind(T, y)) == "interior"
    assert float(inflection(T, y)) == pytest.approx(T[6], rel=1e-5)


def test_inflection_is_finite_exactly_on_interior_curves():
    rng = np.random.default_rng(1)
    curves = np.cumsum(rng.standard_normal((500, T.size)), axis=-1)
    kinds = inflection_kind(T, curves)
    assert set(kinds.tolist()) <= set(KINDS) and {"interior", "below", "above"} <= set(kinds.tolist())
    np.testing.assert_array_equal(np.isfinite(inflection(T, curves)), kinds == "interior")


def test_vertex_minimum_refines_the_argmin_anywhere():
    assert float(vertex_minimum(T, (X - 3.0) ** 2)) == pytest.approx(np.exp(3.0), rel=1e-4)
    assert float(vertex_minimum(T, np.exp(X))) == pytest.approx(T[0])  # clipped to the first bracket
    assert np.isnan(vertex_minimum(T, np.full_like(T, np.nan)))


def test_bad_tolerances_are_refused():
    with pytest.raises(ValueError, match="rise_fraction"):
        inflection_kind(T, X, rise_fraction=-1.0)
    with pytest.raises(ValueError, match="rtol"):
        inflection_kind(T, X, rtol=-1.0)
