"""LLM paper figures (presets llm_perturb, llm_finetune): each draws from a frame in the schema that
``ovt llm perturb`` / ``ovt llm finetune`` write, marks T* only from stored inflection rows, shows
diverged runs, and draw_run dispatches to them."""

import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

import paper_figures
from paper_figures import llm_finetune, llm_perturb, style
from rundir import store

TOKENS = np.array([0.0, *np.geomspace(4e5, 4e9, 9)])  # step 0, then 1 in 10^0.5 up to 4B tokens
GAMMAS = (0.02, 0.05, 0.1)
LRS = (1e-5, 3e-5, 1e-4, 3e-4)
SETUP = "allenai/OLMo-1B-hf"


def _base_perplexity(T):
    return np.where(T > 0, 50 * (np.maximum(T, 1) / 1e5) ** -0.3 + 5, 5e4)  # 5e4: step 0, ~ vocabulary size


def _checkpoint(T):
    return "step0-tokens0" if T == 0 else f"step{int(T // 4_194_304)}-tokens{llm_perturb.human_tokens(T)}"


def _row(T, modification, metric, value, **cols):
    return {
        "source": "llm",
        "setup": SETUP,
        "checkpoint": _checkpoint(T),
        "pretrain_time": float(T),
        "modification": modification,
        "gamma": np.nan,
        "lr": np.nan,
        "steps": np.nan,
        "reg": np.nan,
        "seed": 0,
        "metric": metric,
        "value": float(value),
        **cols,
    }


def _inflection(modification, t_star, **cols):
    return {
        **_row(0.0, modification, "inflection", t_star, **cols),
        "checkpoint": "inflection",
        "pretrain_time": np.nan,
    }


def perturb_frame(seeds=4, inflections=True):
    """Base perplexity falling in tokens; the excess under noise of size gamma growing in tokens and
    gamma, so the perturbed perplexity is U-shaped with its minimum earlier for larger gamma."""
    rng = np.random.default_rng(0)
    rows = []
    for T in TOKENS:
        base = _base_perplexity(T)
        rows.append(_row(T, "none", "perplexity", base, mean_nll=np.log(base), n_tokens=4096))
        for gamma in GAMMAS:
            excess = 10 * gamma**2 * (max(T, 1) / 1e5) ** 0.5
            for seed in range(seeds):
                value = base + excess * (1 + 0.15 * rng.standard_normal())
                rows.append(
                    _row(
                        T,
                        "gaussian",
                        "perplexity",
                        value,
                        gamma=gamma,
                        seed=seed,
                        mean_nll=np.log(value),
                        n_tokens=4096,
                    )
                )
    if inflections:
        for gamma in GAMMAS:  # the minimum of base + excess: earlier for larger gamma; none for the smallest
            t_star = 1e5 * (3 / gamma**2) ** 1.25
            rows.append(_inflection("gaussian", t_star if t_star < TOKENS.max() else np.nan, gamma=gamma))
    return store.validate(pd.DataFrame(rows))


def finetune_frame(inflections=True, diverge=True):
    """Forgetting growing in lr and tokens (U-shaped perplexity after fine-tuning), in-task loss lower
    for larger lr; the largest lr diverges on the last two checkpoints; the tuned lr is the grid's best
    in-task loss per checkpoint."""
    rows = []
    ft = dict(steps=200.0, reg=0.0)
    for T in TOKENS:
        base = _base_perplexity(T)
        rows += [
            _row(T, "none", "perplexity", base, diverged=False),
            _row(T, "none", "finetune_loss", 3.0 + 2 * (max(T, 1) / 1e5) ** -0.1, diverged=False),
        ]
        grid = []
        for lr in LRS:
            gone = diverge and lr == max(LRS) and T > 1e9
            x = max(T, 1) / 1e5
            perplexity = base + 850 * lr * x**0.45
            loss = 1.2 + x**-0.15 + 5e-6 / lr + 2e2 * lr * (x / 100) ** 0.3
            values = (np.nan, np.nan) if gone else (perplexity, loss)
            cols = dict(lr=lr, lr_policy="fixed", diverged=gone, **ft)
            rows += [
                _row(T, "finetune", "perplexity", values[0], **cols),
                _row(T, "finetune", "finetune_loss", values[1], **cols),
            ]
            grid.append((values[1] if not gone else np.inf, lr, values))
        _, lr, values = min(grid)
        cols = dict(lr=lr, lr_policy="tuned", diverged=False, **ft)
        rows += [
            _row(T, "finetune", "perplexity", values[0], **cols),
            _row(T, "finetune", "finetune_loss", values[1], **cols),
        ]
    if inflections:
        for lr in LRS:  # the minimum of base + forgetting: earlier for larger lr; none for the smallest
            t_star = 1e5 * (15 / (0.45 * 850 * lr)) ** (1 / 0.75)
            rows.append(
                _inflection("finetune", t_star if t_star < TOKENS.max() else np.nan, lr=lr, lr_policy="fixed", **ft)
            )
        rows.append(_inflection("finetune", 3e8, lr_policy="tuned", **ft))
    return store.validate(pd.DataFrame(rows))


@pytest.fixture(autouse=True)
def low_dpi(monkeypatch):
    monkeypatch.setattr(style, "DPI", 40)  # the files' existence is under test, not their resolution


@pytest.fixture
def unsaved(monkeypatch):
    """Build figures without rendering them (the costly part): style.save records the figure instead."""
    figures = []
    monkeypatch.setattr(style, "save", lambda fig, out_dir, name: figures.append(fig) or [])
    return figures


def _markers(module, frame, monkeypatch):
    """Draw, recording every stored T* that mark_inflection is asked to mark (finite: drawn)."""
    marked = []
    original = style.mark_inflection
    monkeypatch.setattr(style, "mark_inflection", lambda ax, T, y, t, c: (marked.append(t), original(ax, T, y, t, c)))
    module.draw(frame, None)
    monkeypatch.setattr(style, "mark_inflection", original)
    return [t for t in marked if np.isfinite(t)]


def _legend_texts(fig):
    (legend,) = fig.legends
    return [t.get_text() for t in legend.get_texts()]


def test_perturb_figure_marks_the_stored_t_star_only(unsaved, monkeypatch):
    marked = _markers(llm_perturb, perturb_frame(), monkeypatch)
    stored = perturb_frame().query("checkpoint == 'inflection'").value
    assert sorted(marked) == sorted(stored.dropna()) and len(marked) == 2  # the smallest gamma: none in range
    assert "stored $T^*$ (minimum)" in _legend_texts(unsaved[-1])
    assert _markers(llm_perturb, perturb_frame(inflections=False), monkeypatch) == []
    assert "stored $T^*$ (minimum)" not in _legend_texts(unsaved[-1])
    none_in_range = perturb_frame().assign(value=lambda f: f.value.where(f.checkpoint != "inflection"))
    assert _markers(llm_perturb, none_in_range, monkeypatch) == []  # NaN rows: no marker, no legend entry
    assert "stored $T^*$ (minimum)" not in _legend_texts(unsaved[-1])
    assert "step0-tokens0" in unsaved[-1].legends[0].get_title().get_text()  # said to be left out


def test_finetune_figure_marks_the_stored_t_star_only(unsaved, monkeypatch):
    marked = _markers(llm_finetune, finetune_frame(), monkeypatch)
    assert len(marked) == len(LRS)  # one per fixed lr but the smallest, one on the tuned curve; panel (a)
    assert _markers(llm_finetune, finetune_frame(inflections=False), monkeypatch) == []


def test_perturb_change_is_mean_and_standard_error_over_draws():
    frame, _ = llm_perturb.on_log_axis(perturb_frame())
    rows = style.curve_rows(frame, "gaussian", "perplexity", gamma=0.05)
    T, mean, se = llm_perturb.seed_stats(rows)
    at = rows[rows.pretrain_time == T[3]].value
    assert mean[3] == pytest.approx(at.mean()) and se[3] == pytest.approx(at.std(ddof=1) / 2)
    assert T.min() > 0  # step 0 cannot sit on a log axis and is left out


def test_a_checkpoint_missing_a_draw_or_a_second_model_is_refused(unsaved):
    frame = perturb_frame()
    gap = frame.drop(frame.index[(frame.seed == 3) & (frame.pretrain_time == TOKENS[4])])
    with pytest.raises(ValueError, match="same seeds"):
        llm_perturb.draw(gap, None)
    with pytest.raises(ValueError, match="one model"):
        llm_perturb.draw(pd.concat([frame, frame.assign(setup="other")]), None)


def _crosses(fig):
    """(panel, tokens) of every diverged-run cross drawn."""
    return [
        (i, t)
        for i, ax in enumerate(fig.axes)
        for line in ax.lines
        if line.get_marker() == "x"
        for t in line.get_xdata()
    ]


def test_diverged_runs_are_drawn_as_crosses_at_the_top(unsaved):
    llm_finetune.draw(finetune_frame(), None)
    late = sorted(TOKENS[TOKENS > 1e9])
    assert sorted(_crosses(unsaved[-1])) == [(panel, t) for panel in (0, 1) for t in late]  # largest lr, both panels
    assert "diverged run (no value)" in _legend_texts(unsaved[-1])
    llm_finetune.draw(finetune_frame(diverge=False).drop(columns="diverged"), None)  # no column: none diverged
    assert _crosses(unsaved[-1]) == [] and "diverged run (no value)" not in _legend_texts(unsaved[-1])


@pytest.mark.parametrize(("preset", "frame"), [("llm_perturb", perturb_frame), ("llm_finetune", finetune_frame)])
def test_draw_run_dispatches_the_llm_presets(preset, frame, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    store.write_table(run / store.METRICS, frame())
    (run / store.MANIFEST).write_text(json.dumps({"preset": preset}))
    paths = paper_figures.draw_run(run, tmp_path / "figs")
    assert sorted(p.name for p in paths) == [f"{preset}.pdf", f"{preset}.png"]
    assert all(p.is_file() and p.stat().st_size > 1000 for p in paths)
    assert paper_figures.FIGURES[preset] is {"llm_perturb": llm_perturb, "llm_finetune": llm_finetune}[preset].draw


def test_a_change_near_zero_beside_a_large_one_gets_a_symmetric_log_axis():
    ax = Figure().add_subplot()
    T = np.array([1e6, 1e7, 1e8])
    llm_perturb.fit_change_y(ax, {0.01: (T, np.array([0.01, -0.02, 0.005])), 0.1: (T, np.array([1.0, 30.0, 900.0]))})
    assert ax.get_yscale() == "symlog" and ax.get_ylim()[0] < 0 < ax.get_ylim()[1]
    llm_perturb.fit_change_y(ax, {0.1: (T, np.array([1.0, 30.0, 900.0]))})  # all positive: log, as fit_y
    assert ax.get_yscale() == "log"
    assert [llm_perturb.human_tokens(t) for t in (500, 3e5, 2e9, 1.5e12)] == ["500", "300K", "2B", "1.5T"]
