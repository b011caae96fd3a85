"""The mitigation figures, drawn from tiny runs of their presets: every file written, and the panels that
summarise draw the stored numbers (T* per strength and pull; L_A after fine-tuning minus the clean L_A)."""

import dataclasses

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import paper_figures
from experiments.sweep import presets
from experiments.sweep.runner import run_theory
from paper_figures import mitigation, style
from rundir import store

SMALL = dict(d_in=4, h=4, d_out=4, rank=4)


@pytest.fixture(autouse=True)
def low_dpi(monkeypatch):
    monkeypatch.setattr(style, "DPI", 40)


def _axes():
    ax = Figure().add_subplot()
    FigureCanvasAgg(ax.figure)
    return ax


@pytest.fixture(scope="module")
def replay_run(tmp_path_factory):
    cfg = dataclasses.replace(presets.get("replay", quick=True), **SMALL, n_t=13, t_max=300.0)
    out = tmp_path_factory.mktemp("replay") / "replay"
    run_theory(cfg, "replay", out, quiet=True)
    return out


def test_replay_figure_draws_the_stored_t_star_per_replay_and_pull(replay_run, tmp_path):
    paths = paper_figures.draw_run(replay_run, tmp_path / "figs")
    assert sorted(p.name for p in paths) == ["replay.pdf", "replay.png"]
    frame = store.load(replay_run)
    ax = _axes()
    mitigation.t_star_panel(ax, frame, "replay")
    means = [line for line in ax.lines if line.get_label() in ("no L2 pull", r"L2 pull $\lambda$ = 0.3")]
    assert len(means) == 2
    for line, reg in zip(means, (0.0, 0.3)):
        rows = frame[(frame.checkpoint == "inflection") & (frame.modification == "finetune") & (frame.reg == reg)]
        stored = rows.sort_values("replay").set_index("replay")
        stored = stored.value.where(stored.t_star_kind == "interior")
        assert np.isfinite(stored).any()
        np.testing.assert_array_equal(np.asarray(line.get_ydata(), float), stored.to_numpy(float))
        np.testing.assert_array_equal(line.get_xdata(), np.arange(len(stored)))


def test_the_rise_is_the_forgetting_over_the_clean_model(replay_run):
    frame = store.load(replay_run)
    rise = mitigation.rise(frame, "replay")
    for r, (T, mean, lo, hi) in rise.items():
        keep = (frame.replay == r) & (frame.checkpoint != "inflection") & (frame.metric == "pretrain_loss")
        after = frame[keep & (frame.modification == "finetune") & (frame.reg == 0.0)].set_index("pretrain_time")
        clean = frame[keep & (frame.modification == "none")].set_index("pretrain_time")
        np.testing.assert_allclose(mean, (after.value - clean.value).loc[T].to_numpy())
        np.testing.assert_array_equal(lo, hi)  # one seed: no band


def test_series_figure_draws_steps_and_the_sharpness(tmp_path):
    cfg = dataclasses.replace(
        presets.get("sam", quick=True),
        **SMALL,
        budgets=(20, 40, 80),
        curvature=True,
        grid=(("sam_rho", (0.0, 0.001)), ("seed", (0, 1))),
    )
    run_theory(cfg, "sam", tmp_path / "sam", quiet=True)
    paths = paper_figures.draw_run(tmp_path / "sam", tmp_path / "figs")
    assert sorted(p.name for p in paths) == ["sam.pdf", "sam.png"]
    frame = store.load(tmp_path / "sam")
    sharp = mitigation.bands(frame, "none", "top_eigenvalue", "sam_rho")
    for rho, (steps, mean, lo, hi) in sharp.items():
        np.testing.assert_array_equal(steps, [20.0, 40.0, 80.0])
        rows = frame[(frame.metric == "top_eigenvalue") & (frame.sam_rho == rho)]
        np.testing.assert_allclose(mean, rows.groupby("train_steps").value.mean().to_numpy())
        assert (lo <= mean).all() and (mean <= hi).all()
