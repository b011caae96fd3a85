"""The multimodal figure, drawn from a tiny run of its preset: both files written, the T* panel draws the
stored T* per overlap and lr, and the forgetting panels draw the stored curves beside plain fine-tuning."""

import dataclasses

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import paper_figures
from experiments.sweep import presets
from experiments.sweep.runner import run_theory
from paper_figures import multimodal, style
from rundir import store


@pytest.fixture(autouse=True)
def low_dpi(monkeypatch):
    monkeypatch.setattr(style, "DPI", 40)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cfg = dataclasses.replace(
        presets.get("multimodal", quick=True),
        d_in=4,
        h=4,
        d_out=8,
        rank=4,
        d_z=4,
        n_t=9,
        t_max=300.0,
        grid=(("lr", (0.02, 0.08)), ("overlap", (0.0, 1.0))),
    )
    path = tmp_path_factory.mktemp("multimodal")
    run_theory(cfg, "multimodal", path, quiet=True)
    return path


def _axes():
    ax = Figure().add_subplot()
    FigureCanvasAgg(ax.figure)
    return ax


def test_multimodal_figure_writes_png_and_pdf(run, tmp_path):
    paths = paper_figures.draw_run(run, tmp_path)
    assert sorted(p.name for p in paths) == ["multimodal.pdf", "multimodal.png"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_t_star_panel_draws_the_stored_t_star_per_overlap_and_lr(run):
    frame = store.load(run)
    ax = _axes()
    multimodal.t_star_panel(ax, frame)
    drawn = [line for line in ax.lines if line.get_label().startswith("stage-2 lr")]
    assert [line.get_label() for line in drawn] == ["stage-2 lr = 0.02", "stage-2 lr = 0.08"]
    for line, lr in zip(drawn, (0.02, 0.08)):
        rows = frame[(frame.checkpoint == "inflection") & (frame.modification == "multimodal") & (frame.lr == lr)]
        rows = rows.sort_values("overlap")
        np.testing.assert_array_equal(line.get_xdata(), [0.0, 1.0])
        stored = rows.value.where(rows.t_star_kind == "interior").to_numpy(float)
        np.testing.assert_array_equal(np.asarray(line.get_ydata(), float), stored)


def test_forgetting_panel_draws_the_stored_curves_and_plain_fine_tuning(run):
    frame = store.load(run)
    ax = _axes()
    colours = style.ordered_colours([0.0, 1.0])
    multimodal.forgetting_panel(ax, frame, 0.08, colours)
    lines = {line.get_label(): line for line in ax.lines}
    rows = frame[
        (frame.modification == "multimodal")
        & (frame.stage == "joint")
        & (frame.metric == "pretrain_loss")
        & (frame.lr == 0.08)
        & (frame.overlap == 1.0)
        & (frame.checkpoint != "inflection")
    ].sort_values("pretrain_time")
    np.testing.assert_array_equal(lines["overlap = 1"].get_ydata(), rows.value.to_numpy())
    finetuned = frame[
        (frame.modification == "finetune")
        & (frame.metric == "pretrain_loss")
        & (frame.lr == 0.08)
        & (frame.checkpoint != "inflection")
    ].sort_values("pretrain_time")
    np.testing.assert_array_equal(lines["plain fine-tuning, same lr"].get_ydata(), finetuned.value.to_numpy())
