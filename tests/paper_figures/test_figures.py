"""Paper figures: every preset's figure draws from a store-shaped frame, and draw_run dispatches."""

import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import paper_figures
from paper_figures import style
from rundir import store

T = np.logspace(-1, 3, 9)
T_STAR = 10.0


def _rows(modification, metric, values, **cols):
    return pd.DataFrame(
        {
            "checkpoint": [f"T={t:.6g}" for t in T],
            "pretrain_time": T,
            "modification": modification,
            "metric": metric,
            "value": values,
            **cols,
        }
    )


def _inflection(modification, t_star, **cols):
    return pd.DataFrame(
        {
            "checkpoint": ["inflection"],
            "pretrain_time": [np.nan],
            "modification": [modification],
            "metric": ["inflection"],
            "value": [t_star],
            **{k: [v] for k, v in cols.items()},
        }
    )


def _cell(gamma=0.2, lr=0.02, reg=0.0, lr_policy="fixed", seed=0, shift=1.0, **extra):
    """One sweep cell's rows as theory_run writes them: a U-shaped L_A around T* = 10 * shift, lr on
    curve rows in float32 as jit returns it (exact on the inflection row)."""
    u = 0.1 + 0.05 * (np.log10(T / (T_STAR * shift))) ** 2
    lr_T = lr / (1 + T / 10) if lr_policy == "shrinking" else np.full_like(T, lr)
    g = dict(gamma=gamma)
    ft = dict(lr=lr_T.astype(np.float32).astype(float), steps=100.0, reg=reg, lr_policy=lr_policy)
    blocks = [
        _rows("none", "pretrain_loss", 1 / (1 + T)),
        _rows("none", "finetune_loss", np.full_like(T, 1.4)),
        _rows("gaussian", "pretrain_loss", u + gamma, **g),
        _rows("gaussian", "finetune_loss", u + 1, **g),
        _rows("gaussian", "excess", gamma * T / (1 + T), **g),
        _inflection("gaussian", T_STAR * shift, **g),
        _rows("finetune", "pretrain_loss", u + lr, **ft),
        _rows("finetune", "finetune_loss", 1 / (1 + lr * T), **ft),
        _inflection("finetune", np.nan if lr_policy == "shrinking" else T_STAR * shift, **{**ft, "lr": lr}),
    ]
    frame = pd.concat(blocks, ignore_index=True).assign(source="theory", seed=seed, **extra)
    frame["lr_policy"] = frame.lr_policy.fillna("")
    return frame


def synthetic(preset):
    """A small frame in the store's schema for ``preset`` (what theory_run.finalize returns)."""
    sweeps = {
        "smoke": [dict(gamma=g) for g in (0.3, 0.5)],
        "gaussian": [dict(gamma=g, shift=1 / g) for g in (0.15, 0.3, 0.6)],
        "finetune": [dict(lr=lr, shift=0.01 / lr) for lr in (0.005, 0.02, 0.08)],
        "regularization": [dict(reg=r, shift=1 + r) for r in (0.0, 0.3, 3.0)],
        "tuned_lr": [dict(lr=lr, lr_policy=p) for p in ("fixed", "shrinking") for lr in (0.005, 0.02, 0.08)],
        "depth": [dict(depth=d, shift=d) for d in (1, 2, 3)],
        "misalignment": [dict(theta=t) for t in (0.0, 0.5, 1.5)],
        "schedule": [dict(series_mode=m, seed=s, shift=1 + s) for m in ("separate", "single") for s in (0, 1)],
        "landscape": [dict(lr=lr, shift=0.01 / lr) for lr in (0.005, 0.01, 0.02, 0.04, 0.08)],
        "landscape_gamma": [dict(gamma=g, shift=1 / g) for g in (0.15, 0.2, 0.3, 0.4, 0.6)],
        "landscape_alpha": [dict(alpha=a, gamma=g, shift=a / g) for a in (0.8, 1.2) for g in (0.2, 0.4, 0.6)],
        "tuned_finite": [dict(lr=lr, lr_policy=p) for p in ("fixed",) for lr in (0.01, 0.04, 0.16)],
        "shrinking": [dict(lr_policy="shrinking", shrink_power=q, shift=1 + q) for q in (0.0, 0.5, 1.0)],
        "weight_decay": [dict(reg=r, weight_decay=w, shift=1 + 10 * w) for r in (0.0, 0.3) for w in (0.0, 0.03, 0.3)],
        "replay": [dict(reg=r, replay=x, shift=1 + x) for r in (0.0, 0.3) for x in (0.0, 0.1, 0.5)],
        "sam": [dict(sam_rho=x, seed=k, shift=1 + x + k / 10) for x in (0.0, 0.003) for k in (0, 1)],
        "anneal_fraction": [dict(anneal_fraction=f, seed=k, shift=1 + f + k / 10) for f in (0.0, 0.5) for k in (0, 1)],
        "general": [
            dict(gamma=0.3, optimizer=o, batch_size=b, seed=s, shift=1 + s / 10)
            for o in ("sgd", "adam")
            for b in (16, 512)
            for s in (0, 1, 2)
        ],
    }[preset]
    frame = pd.concat([_cell(**c) for c in sweeps], ignore_index=True).assign(setup=preset)
    frame = frame.drop_duplicates(subset=[c for c in frame.columns if c != "value"], keep="first")
    if preset in ("tuned_lr", "tuned_finite"):
        best_lr = 0.08 if preset == "tuned_lr" else 0.04
        best = frame[(frame.lr_policy == "fixed") & np.isclose(frame.lr, best_lr)].assign(lr_policy="tuned")
        frame = pd.concat([frame, best.assign(lr=best.lr.where(best.checkpoint != "inflection"))])
    return store.validate(frame)


@pytest.fixture(autouse=True)
def low_dpi(monkeypatch):
    monkeypatch.setattr(style, "DPI", 40)  # the files' existence is under test, not their resolution


# ``smoke`` is ``gaussian``'s figure; ``quantization`` and ``anneal`` draw from tiny runs
# (test_weight_figures.py), ``multimodal`` too (test_multimodal_figure.py), ``advise`` from an
# ``ovt advise`` run (tests/experiments/test_advise.py).
ELSEWHERE = ("smoke", "quantization", "anneal", "multimodal", "advise")


@pytest.mark.parametrize(
    "preset", [p for p in paper_figures.FIGURES if p not in ELSEWHERE and not p.startswith("llm_")]
)
def test_each_figure_writes_png_and_pdf(preset, tmp_path):
    paths = paper_figures.FIGURES[preset](synthetic(preset), tmp_path, name=preset)
    assert sorted(p.name for p in paths) == [f"{preset}.pdf", f"{preset}.png"]
    assert all(p.is_file() and p.stat().st_size > 1000 for p in paths)


def test_every_preset_has_a_figure_and_smoke_is_gaussian():
    from experiments.sweep import presets

    assert set(presets.PRESETS) <= set(paper_figures.FIGURES)
    assert paper_figures.FIGURES["smoke"] is paper_figures.FIGURES["gaussian"]


def _run_dir(path, preset):
    path.mkdir()
    store.write_table(path / store.METRICS, synthetic(preset))
    (path / store.MANIFEST).write_text(json.dumps({"preset": preset, "config": {}}))
    return path


@pytest.mark.parametrize("preset", ["finetune", "smoke"])
def test_draw_run_dispatches_by_manifest_preset(preset, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setitem(paper_figures.FIGURES, preset, lambda frame, out, name: calls.append((frame, out, name)))
    paper_figures.draw_run(_run_dir(tmp_path / "run", preset), tmp_path / "figs")
    ((frame, out, name),) = calls
    assert name == preset and out == tmp_path / "figs"
    assert set(frame.setup) == {preset} and (frame.checkpoint == "inflection").any()


def test_draw_run_refuses_a_preset_without_figure(tmp_path):
    bad = _run_dir(tmp_path / "bad", "smoke")
    (bad / store.MANIFEST).write_text(json.dumps({"preset": "nope"}))
    with pytest.raises(ValueError, match="nope"):
        paper_figures.draw_run(bad, tmp_path / "figs")


def test_inflection_marker_sits_on_the_curve_at_stored_t_star():
    ax = Figure().add_subplot()
    FigureCanvasAgg(ax.figure)
    T_, y = np.array([1.0, 10.0, 100.0]), np.array([2.0, 1.0, 3.0])
    style.mark_inflection(ax, T_, y, np.sqrt(10.0), "k")  # halfway from 1 to 10 in log T
    (marker,) = [line for line in ax.lines if line.get_marker() == "o"]
    np.testing.assert_allclose(marker.get_data(), [[np.sqrt(10.0)], [1.5]])
    style.mark_inflection(ax, T_, y, np.nan, "k")  # "none in range" draws nothing
    assert len(ax.lines) == 2


def test_float32_curve_rows_meet_their_exact_inflection_rows():
    frame = synthetic("finetune")
    curves = style.family(style.curve_rows(frame, "finetune", "pretrain_loss"), "lr")
    stored = style.stored_inflections(style.inflection_rows(frame, "finetune"), "lr")
    assert list(curves) == list(stored) == [0.005, 0.02, 0.08]


def test_a_selection_mixing_curves_is_refused():
    frame = synthetic("schedule")  # two seeds per series mode
    with pytest.raises(ValueError, match="seed"):
        style.family(style.curve_rows(frame, "none", "pretrain_loss", series_mode="single"), "series_mode")
