"""The landscape figures draw the analytic T* prediction from the run's own config."""

import numpy as np
import pytest

import paper_figures
from experiments import config, presets
from experiments.run import run_theory
from paper_figures import landscape


def test_the_prediction_is_made_from_the_config_and_only_where_it_applies():
    cfg = config.to_dict(presets.get("landscape_gamma"))
    pred = landscape.predicted(cfg, np.array([0.3, 0.6]))
    np.testing.assert_allclose(pred, [30.52, 6.908], rtol=1e-3)  # tests/theory/test_prediction.py's numbers
    assert landscape.predicted({**cfg, "depth": 3}, np.array([0.3])) is None
    assert landscape.predicted({**cfg, "method": "flow"}, np.array([0.3])) is None
    steeper = landscape.predicted(cfg, np.array([0.3]), alpha=2.0)
    assert steeper[0] != pred[0]  # alpha changes the spectrum, so the last beneficial mode


def test_draw_run_hands_the_config_to_the_figure(tmp_path):
    cfg = presets.get("landscape_alpha", quick=True)
    small = cfg.__class__(**{**config.to_dict(cfg), "grid": (("alpha", (0.8, 1.6)), ("gamma", (0.3, 0.6))), "n_t": 41})
    run_theory(small, "landscape_alpha", tmp_path / "run", quiet=True)
    paths = paper_figures.draw_run(tmp_path / "run", tmp_path / "figs")
    assert sorted(p.name for p in paths) == ["landscape_alpha.pdf", "landscape_alpha.png"]


@pytest.mark.parametrize("stored, pred, expected", [(10.0, 11.0, 0.1), (np.nan, 5.0, np.nan), (4.0, np.inf, np.nan)])
def test_relative_error_is_nan_where_either_side_is_missing(stored, pred, expected):
    np.testing.assert_allclose(landscape.relative_error(np.array([pred]), np.array([stored])), [expected])
