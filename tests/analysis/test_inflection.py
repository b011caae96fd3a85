"""``analysis.inflection``: the one T*, in NumPy; the theory's ``measure.inflection`` is this function."""

import subprocess
import sys

import numpy as np
import pytest

from analysis.inflection import inflection


def test_parabola_vertex_none_in_range_and_batched():
    T = np.logspace(0, 2, 9)
    curves = np.stack([np.log(T), -np.log(T), (np.log(T) - 2.0) ** 2])
    t = inflection(T, curves)
    assert t.shape == (3,) and t.dtype == np.float32
    assert np.isnan(t[0]) and np.isnan(t[1]) and t[2] == pytest.approx(np.exp(2.0), rel=1e-3)
    assert inflection(T, curves, dtype=np.float64).dtype == np.float64


def test_a_curve_that_only_levels_off_has_none():
    T = np.logspace(0, 3, 13)
    plateau = np.maximum(1.0 - np.log(T) / 3.0, 0.2)
    tiny_rise = plateau.copy()
    tiny_rise[-1] += 1e-6
    assert np.isnan(inflection(T, plateau)) and np.isnan(inflection(T, tiny_rise))
    assert np.isfinite(inflection(T, tiny_rise, rtol=0.0))


def test_bad_grids_are_refused():
    with pytest.raises(ValueError, match="T has shape"):
        inflection(np.ones(4), np.ones(5))
    with pytest.raises(ValueError, match="at least 3"):
        inflection(np.ones(2), np.ones(2))
    with pytest.raises(ValueError, match="rtol"):
        inflection(np.arange(1.0, 4.0), np.ones(3), rtol=-1.0)
    for T in ([1.0, 1.0, 2.0], [1.0, 0.0, 2.0], [0.0, 1.0, 2.0], [1.0, np.nan, 3.0]):
        with pytest.raises(ValueError, match="strictly increasing"):
            inflection(np.array(T), np.ones(3))


def test_the_analysis_package_imports_no_jax_and_no_torch():
    code = (
        "import sys, analysis.inflection, analysis.phenomenology, analysis.families, analysis.fits; "
        "print(sorted(m for m in ('jax', 'torch', 'transformers', 'theory') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
