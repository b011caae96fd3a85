"""The quantization and anneal figures, drawn from tiny runs of their presets: every file written, and
the panels that summarise draw the stored numbers (T* per bit width; branch / trunk - 1 per seed)."""

import dataclasses

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import paper_figures
from experiments.sweep import presets
from experiments.sweep.runner import run_theory
from paper_figures import anneal, quantization, style
from rundir import store

SMALL = dict(d_in=4, h=4, d_out=4, rank=4)


@pytest.fixture(autouse=True)
def low_dpi(monkeypatch):
    monkeypatch.setattr(style, "DPI", 40)


def _run(tmp_path, name, **small):
    cfg = dataclasses.replace(presets.get(name, quick=True), **SMALL, **small)
    run_theory(cfg, name, tmp_path / name, quiet=True)
    return tmp_path / name


def _axes():
    ax = Figure().add_subplot()
    FigureCanvasAgg(ax.figure)
    return ax


def test_quantization_figure_draws_the_stored_t_star_per_bit_width(tmp_path):
    run = _run(tmp_path, "quantization", n_t=9, t_max=300.0, grid=(("bits", (2, 3)),))
    paths = paper_figures.draw_run(run, tmp_path / "figs")
    assert sorted(p.name for p in paths) == ["quantization.pdf", "quantization.png"]
    frame = store.load(run)
    ax = _axes()
    quantization.t_star_panel(ax, frame)
    for line, rounding in zip(ax.lines, quantization.ROUNDINGS):
        rows = frame[(frame.checkpoint == "inflection") & (frame.rounding == rounding)].sort_values("bits")
        np.testing.assert_array_equal(line.get_xdata(), [2.0, 3.0])
        stored = rows.value.where(rows.t_star_kind == "interior").to_numpy(float)
        np.testing.assert_array_equal(np.asarray(line.get_ydata(), float), stored)


def test_anneal_figure_draws_branch_over_trunk_paired_by_seed(tmp_path):
    run = _run(tmp_path, "anneal", budgets=(20, 40, 80))
    paths = paper_figures.draw_run(run, tmp_path / "figs")
    assert sorted(p.name for p in paths) == ["anneal.pdf", "anneal.png"]
    frame = store.load(run)
    ax = _axes()
    anneal.difference_panel(ax, frame)
    drawn = [line for line in ax.lines if line.get_label().startswith("_") and len(line.get_xdata()) == 3]
    assert len(drawn) == len(anneal.PAIRED)
    for line, (modification, metric, _, _) in zip(drawn, anneal.PAIRED):
        rows = frame[
            (frame.modification == modification) & (frame.metric == metric) & (frame.checkpoint != "inflection")
        ]
        pair = rows.pivot_table(index=["train_steps", "seed"], columns="series_mode", values="value")
        expected = (pair.separate / pair.single - 1).groupby("train_steps").mean()
        np.testing.assert_allclose(line.get_xdata(), [20.0, 40.0, 80.0])
        np.testing.assert_allclose(line.get_ydata(), expected.to_numpy(), rtol=1e-6, atol=1e-12)
        assert abs(line.get_ydata()[-1]) < 1e-5  # the trunk's last checkpoint is the last budget's branch
