"""Figures mark only an interior T* (the stored ``t_star_kind``): never a flat curve's minimum, nor one
at an end of the range; stores written before the kinds keep their marks."""

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from paper_figures import schedule, style

from .test_figures import synthetic


def _markers(ax) -> list:
    return [line for line in ax.lines if line.get_marker() == "o"]


def test_only_interior_rows_and_rows_without_a_kind_are_marked():
    rows = pd.DataFrame(
        {
            "value": [10.0, 20.0, np.nan, 30.0, 40.0, 50.0],
            "t_star_kind": ["interior", "flat", "below", "above", "", None],
        }
    )
    np.testing.assert_array_equal(style.marked(rows), [10.0, np.nan, np.nan, np.nan, 40.0, 50.0])
    np.testing.assert_array_equal(style.marked(rows.drop(columns="t_star_kind")), rows.value)


def test_family_figures_skip_a_flat_curve():
    frame = synthetic("gaussian").assign(t_star_kind="")
    infl = (frame.checkpoint == "inflection") & (frame.modification == "gaussian")
    frame.loc[infl, "t_star_kind"] = "interior"
    frame.loc[infl & np.isclose(frame.gamma, 0.3), "t_star_kind"] = "flat"
    t_star = style.stored_inflections(style.inflection_rows(frame, "gaussian"), "gamma")
    assert np.isnan(t_star[0.3]) and np.isfinite(t_star[0.15]) and np.isfinite(t_star[0.6])


def test_schedule_marks_no_seed_whose_minimum_is_flat():
    frame = synthetic("schedule").assign(t_star_kind="")
    infl = frame.checkpoint == "inflection"
    frame.loc[infl, "t_star_kind"] = "interior"
    ax = Figure().add_subplot()
    FigureCanvasAgg(ax.figure)
    schedule.band_panel(ax, frame, "gaussian", "loss")
    assert len(_markers(ax)) == 4  # two series modes x two seeds
    flat = infl & (frame.modification == "gaussian") & (frame.seed == 1)
    frame.loc[flat, "t_star_kind"] = "flat"  # even with a value left in it, a flat row draws nothing
    ax = Figure().add_subplot()
    FigureCanvasAgg(ax.figure)
    schedule.band_panel(ax, frame, "gaussian", "loss")
    assert len(_markers(ax)) == 2
