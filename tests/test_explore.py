"""The explorer notebook run headless (``app.run()``, as ``python notebooks/explore.py`` runs it) and the
numbers it shows: the default setup's T* against a stored preset, a reference store's fitted map against
``ovt compare``'s, and the computation behind both (``experiments.explore``)."""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.image
import numpy as np
import pytest

pytest.importorskip("marimo")

from experiments import explore
from experiments.sweep import compute as theory_run
from experiments.sweep import presets
from experiments.sweep.runner import run_theory  # noqa: E402
from paper_figures import explorer as figures  # noqa: E402
from rundir import store  # noqa: E402
from theory import _random, protocol, tasks  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "paper_figures" / "reference"


def _notebook():
    spec = importlib.util.spec_from_file_location("explore_notebook", ROOT / "notebooks" / "explore.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.app


def _shown(outputs) -> str:
    """The text of every cell output (markdown and containers render to HTML text)."""
    return "\n".join(getattr(o, "text", "") for o in outputs if o is not None)


@pytest.fixture(scope="module")
def gaussian_store(tmp_path_factory):
    """The stored ``gaussian`` preset (5 gammas, the default setup's among them), as ``ovt theory gaussian``
    writes it."""
    out = tmp_path_factory.mktemp("theory") / "gaussian"
    run_theory(presets.get("gaussian"), "gaussian", out, quiet=True)
    return out


def test_notebook_default_controls_show_the_stored_presets_t_star(gaussian_store):
    outputs, defs = _notebook().run(defs={"store_dir": str(gaussian_store)})
    result, overlay = defs["result"], defs["overlay"]
    assert result.setup == explore.DEFAULT
    table = store.load(gaussian_store)
    for modification in ("gaussian", "finetune"):
        rows = table[(table.checkpoint == "inflection") & (table.modification == modification)]
        if modification == "gaussian":
            rows = rows[np.isclose(rows.gamma, explore.DEFAULT.gamma)]
        stored = float(rows.value.iloc[0])
        assert overlay.stored_t_star(explore.DEFAULT, modification) == stored
        # float32 curves computed in another batch shape: a flat minimum moves its refined vertex by ~3e-5.
        assert result.t_star[modification] == pytest.approx(stored, rel=1e-4)
        assert result.kind[modification] == rows.t_star_kind.iloc[0] == "interior"
        # The notebook prints both, side by side.
        shown = f"stored T* ({modification}) of this setup = {stored:.4g}; explorer: {result.t_star[modification]:.4g}"
        assert shown in _shown(outputs)
    assert figures.t_star_text(result) in _shown(outputs)
    # The prediction marked is theory.prediction's for the default setup (the README's 68.0 at gamma 0.2).
    assert result.predicted == pytest.approx(68.0, abs=0.05)
    # The theory store's own family fits to T = kappa x T with kappa near 1 (its time is flow time).
    assert overlay.kappa()["gaussian / gaussian"] == pytest.approx(1.0, rel=0.05)


def test_notebook_overlays_the_reference_llm_store_with_ovt_compares_map():
    outputs, defs = _notebook().run()  # the default store: paper_figures/reference/llm
    overlay = defs["overlay"]
    fits = json.loads((REFERENCE / "compare" / "fits.json").read_text())
    expected = {f["name"]: f["linear_model"]["params"]["kappa"] for f in fits["families"]}
    assert overlay.kappa().keys() == expected.keys()
    for name, kappa in overlay.kappa().items():
        assert kappa == pytest.approx(expected[name], rel=1e-6)
        assert f"{name}: kappa = {kappa:.4g}" in _shown(outputs)
    # The measured curves drawn are the store's: mean log perplexity of the base model per checkpoint.
    table = store.load(REFERENCE / "llm" / "perturb")
    base = table[(table.modification == "none") & (table.metric == "perplexity")].sort_values("pretrain_time")
    entry = next(f for f in overlay.fits if f["modification"] == "gaussian")
    assert entry["observed"]["T"] == pytest.approx(base.pretrain_time.to_numpy())
    assert entry["observed"]["base"]["mean"] == pytest.approx(np.log(base.value.to_numpy()))
    assert defs["result"].setup == explore.DEFAULT and defs["store_problem"] is None
    # The panel draws the linear model with its link, says so, and keeps every line inside its range.
    fig = figures.overlay(overlay.fits)
    for axis, fit in zip(fig.axes, overlay.fits):
        assert f"lines: {figures.SHOWN_MODEL}" in axis.get_title(loc="left")
        assert f"best held-out: {fit['models']['best']}" in axis.get_title(loc="left")
        low, high = axis.get_ylim()
        drawn = np.concatenate([line.get_ydata() for line in axis.lines if line.get_linestyle() == "-"])
        assert np.isfinite(drawn).any() and np.all(drawn[np.isfinite(drawn)] >= low)
        assert np.all(drawn[np.isfinite(drawn)] <= high)


def test_padding_to_d_modes_changes_nothing():
    """rank < D is computed on D modes, the extra ones at s = u0 = 0: the curves are the rank-r model's."""
    setup = dataclasses.replace(explore.DEFAULT, rank=12, alpha=1.3, depth=2, reg=0.0)
    got = explore.explore(setup)
    s = tasks.power_law_spectrum(12, 1.0, 1.3)
    sigma = setup.init_std
    c = protocol.closed_form_curves(
        s, tasks.reversed_spectrum(s), setup.u0, got.T, gamma=setup.gamma, sigma1=sigma, sigma2=sigma,
        d_in=32, h=32, d_out=32, tau=setup.lr * setup.steps,
    )  # fmt: skip
    for name in explore.CURVES:
        np.testing.assert_allclose(got.curves[name], np.asarray(getattr(c, name)), rtol=2e-5, atol=1e-9, err_msg=name)


def test_mitigation_knobs_are_the_closed_forms():
    """Weight decay and replay: the explorer's curves are ``closed_form_curves`` with them (padded modes
    stay 0 under both), and the GD path at theta = 0 (GD on the mixed loss from the decayed closed form's
    weights) is close to it, as without them."""
    knobs = dict(rank=12, weight_decay=0.05, replay=0.3)
    got = explore.explore(dataclasses.replace(explore.DEFAULT, **knobs))
    s = tasks.power_law_spectrum(12, 1.0, 1.0)
    sigma = explore.DEFAULT.init_std
    c = protocol.closed_form_curves(
        s, tasks.reversed_spectrum(s), explore.DEFAULT.u0, got.T, gamma=explore.DEFAULT.gamma, sigma1=sigma,
        sigma2=sigma, d_in=32, h=32, d_out=32, tau=explore.DEFAULT.lr * explore.DEFAULT.steps, weight_decay=0.05,
        replay=0.3,
    )  # fmt: skip
    for name in explore.CURVES:
        np.testing.assert_allclose(got.curves[name], np.asarray(getattr(c, name)), rtol=2e-5, atol=1e-9, err_msg=name)
    assert np.isnan(got.predicted)  # the Gaussian prediction assumes no weight decay
    plain = explore.explore(dataclasses.replace(explore.DEFAULT, rank=12))
    assert not np.allclose(plain.curves["finetuned_pretrain_loss"], got.curves["finetuned_pretrain_loss"])
    gd = explore.explore(dataclasses.replace(explore.DEFAULT, **knobs, finetune_task="rotated", theta=0.0))
    np.testing.assert_allclose(gd.curves["pretrain_loss"], got.curves["pretrain_loss"], rtol=1e-3, atol=1e-7)
    np.testing.assert_allclose(gd.curves["finetuned_pretrain_loss"], got.curves["finetuned_pretrain_loss"], rtol=0.03)


def test_gd_path_agrees_with_the_closed_form_at_theta_zero():
    """B rotated by theta = 0 is the reversed spectrum on A's vectors: the same pre-training (exact), and
    100 GD steps of lr 0.02 close to flow time 2 (first-order error in lr)."""
    aligned = explore.explore(dataclasses.replace(explore.DEFAULT, rank=16))
    gd = explore.explore(dataclasses.replace(explore.DEFAULT, rank=16, finetune_task="rotated", theta=0.0))
    for name in ("pretrain_loss", "perturbed_pretrain_loss", "finetune_loss"):
        np.testing.assert_allclose(gd.curves[name], aligned.curves[name], rtol=1e-3, atol=1e-7, err_msg=name)
    np.testing.assert_allclose(
        gd.curves["finetuned_pretrain_loss"], aligned.curves["finetuned_pretrain_loss"], rtol=0.03
    )
    assert gd.t_star["gaussian"] == pytest.approx(aligned.t_star["gaussian"], rel=0.05)


def test_teacher_built_inside_the_trace_is_the_one_theory_draws():
    """The GD path builds its teacher for a traced rank (``tasks.padded_task_pair``) from one (32, 32)
    draw, taking the (32, r) draw of the rbg stream as its first 32 r numbers: U, V, A and B are
    ``tasks``' (what ``compute.cell_curves`` builds) up to float rounding, padded with zero columns
    (each eager rank costs ~1 s: three ranks)."""
    key = jax.random.PRNGKey(explore.BASE.task_seed)
    full = np.asarray(_random.normal(key, (32 * 32,)))
    assert np.array_equal(np.asarray(_random.normal(key, (32, 5))).ravel(), full[: 32 * 5])
    build = jax.jit(tasks.padded_task_pair)
    for task, rank in (("rotated", 5), ("rotated", 16), ("correlated", 32)):
        cfg = explore.Setup(rank=rank, finetune_task=task, alpha=1.2, theta=0.7, rho=0.3).config()
        s, b = theory_run.spectra(cfg)
        teacher = tasks.teacher(key, s, 32, 32)
        task_key = jax.random.fold_in(key, 7)
        if task == "rotated":
            expected = tasks.rotated(teacher, cfg.theta, task_key, b).matrix
        else:
            expected = tasks.correlated_matrix(teacher, cfg.rho, task_key)
        s_pad, b_pad, _, _ = explore._modes(1.2, 1.0, rank, 1e-3, jnp.asarray(explore._permutation(cfg)))
        U, V, A, B = build(key, rank, s_pad, b_pad, cfg.theta, cfg.rho, task == "rotated")
        np.testing.assert_allclose(U[:, :rank], teacher.U, atol=2e-7, err_msg=task)
        np.testing.assert_allclose(V[:, :rank], teacher.V, atol=2e-7, err_msg=task)
        assert not np.any(U[:, rank:]) and not np.any(V[:, rank:])
        np.testing.assert_allclose(A, teacher.matrix, atol=2e-7, err_msg=task)
        np.testing.assert_allclose(B, expected, atol=2e-6, err_msg=task)
    # So a new rank, theta, rho or misaligned task reuses the GD path's one compiled function.
    for knobs in (
        dict(rank=16, finetune_task="rotated"),
        dict(rank=7, finetune_task="rotated", theta=1.1),
        dict(finetune_task="correlated"),
    ):
        explore.explore(dataclasses.replace(explore.DEFAULT, **knobs))
    assert explore._gd(explore.DEFAULT.depth, explore.DEFAULT.steps, False)._cache_size() == 1


def _pixels(png: bytes) -> np.ndarray:
    return matplotlib.image.imread(io.BytesIO(png), format="png")


def test_blitted_screen_is_the_figure_drawn_whole():
    """``screen_png`` keeps a figure per frame and redraws only what moves: after other setups (other
    curves, T*, landscapes, frames), its pixels are still those of the figure drawn whole."""
    setups = [
        explore.DEFAULT,
        dataclasses.replace(explore.DEFAULT, gamma=0.5, lr=0.16, alpha=1.4, s1=2.0),
        dataclasses.replace(explore.DEFAULT, depth=1),  # no prediction: another frame
        dataclasses.replace(explore.DEFAULT, rank=16, finetune_task="rotated", theta=0.5),  # the GD landscape's frame
        dataclasses.replace(explore.DEFAULT, u0=1e-8, gamma=0.1),
    ]
    for setup in setups:
        result = explore.explore(setup)
        screen, whole = _pixels(figures.screen_png(result)), _pixels(figures.png(figures.curves(result)))
        assert screen.shape == whole.shape == (630, 900, 4)
        assert np.array_equal(screen, whole), setup


@pytest.mark.parametrize(
    "knobs, message",
    [
        (dict(finetune_task="sideways"), "finetune_task='sideways' is not allowed"),
        (dict(rank=33), "rank=33 must be <= min(d_in, d_out, h)=32"),
        (dict(rank=16.7), "rank=16.7 must be a whole number"),
        (dict(gamma=-0.1), "gamma=-0.1 must be >= 0"),
        (dict(replay=1.5), "replay=1.5 must lie in"),
        (dict(weight_decay=-0.1), "weight_decay=-0.1 must be >= 0"),
        (dict(finetune_task="rotated"), "rotating a rank-32 subspace needs dimension >= 64"),
    ],
)
def test_bad_setups_name_the_value(knobs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        explore.explore(dataclasses.replace(explore.DEFAULT, **knobs))


def test_the_notebook_run_as_a_script_prints_the_t_star_lines_the_readme_quotes():
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, str(ROOT / "notebooks" / "explore.py")], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("T* perturbed L_A = ") and lines[1].startswith("hypothesis: T* perturbed L_A = ")
    readme = (ROOT / "README.md").read_text()
    quoted = readme.split('"T* perturbed L_A = ', 1)[1].split(")", 1)[0]
    assert lines[0].startswith("T* perturbed L_A = " + quoted)
