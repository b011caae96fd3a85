"""The landscape figures draw the analytic T* prediction the run stored from its own config."""

import dataclasses

import numpy as np
import pytest

import paper_figures
from experiments.sweep import config, presets, rows
from experiments.sweep.runner import run_theory
from paper_figures import landscape
from rundir import store


def test_the_prediction_is_made_from_the_config_and_only_where_it_applies():
    cell = dataclasses.replace(presets.get("landscape_gamma"), grid=())
    pred = [rows.gaussian_prediction(dataclasses.replace(cell, gamma=g)) for g in (0.3, 0.6)]
    np.testing.assert_allclose(pred, [30.52, 6.908], rtol=1e-3)  # tests/theory/test_prediction.py's numbers
    assert rows.gaussian_prediction(dataclasses.replace(cell, depth=3)) is None
    assert rows.gaussian_prediction(dataclasses.replace(cell, method="flow")) is None
    steeper = rows.gaussian_prediction(dataclasses.replace(cell, gamma=0.3, alpha=2.0))
    assert steeper != pred[0]  # alpha changes the spectrum, so the last beneficial mode


def test_the_figure_draws_the_stored_prediction(tmp_path):
    cfg = presets.get("landscape_alpha", quick=True)
    small = cfg.__class__(**{**config.to_dict(cfg), "grid": (("alpha", (0.8, 1.6)), ("gamma", (0.3, 0.6))), "n_t": 41})
    run_theory(small, "landscape_alpha", tmp_path / "run", quiet=True)
    frame = store.load(tmp_path / "run")
    for alpha in (0.8, 1.6):
        expected = [
            rows.gaussian_prediction(dataclasses.replace(small, grid=(), alpha=alpha, gamma=g)) for g in (0.3, 0.6)
        ]
        np.testing.assert_array_equal(landscape.predicted(frame, np.array([0.3, 0.6]), alpha), expected)
    assert landscape.predicted(frame[frame.checkpoint != landscape.PREDICTION], np.array([0.3])) is None
    paths = paper_figures.draw_run(tmp_path / "run", tmp_path / "figs")
    assert sorted(p.name for p in paths) == ["landscape_alpha.pdf", "landscape_alpha.png"]


@pytest.mark.parametrize("stored, pred, expected", [(10.0, 11.0, 0.1), (np.nan, 5.0, np.nan), (4.0, np.inf, np.nan)])
def test_relative_error_is_nan_where_either_side_is_missing(stored, pred, expected):
    np.testing.assert_allclose(landscape.relative_error(np.array([pred]), np.array([stored])), [expected])
