"""The mitigation fields of a theory sweep (weight_decay, replay, sam_rho, anneal_fraction) and their presets:
each preset deterministic, the closed form and the flow method agreeing through the sweep, the series'
flow time following the anneal fraction, and the combinations a mitigation does not read refused."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from experiments.sweep import compute, config, presets
from experiments.sweep.runner import run_theory

from .conftest import smoke_sized

MITIGATIONS = ("weight_decay", "replay", "sam", "anneal_fraction")


@pytest.mark.parametrize("name", MITIGATIONS)
def test_each_mitigation_preset_gives_the_same_table_twice(tmp_path, name):
    cfg = smoke_sized(name)
    a = run_theory(cfg, name, tmp_path / "a", quiet=True)
    b = run_theory(cfg, name, tmp_path / "b", quiet=True)
    pd.testing.assert_frame_equal(a, b)
    swept = dict(cfg.grid)
    field = next(f for f in swept if f not in ("reg", "seed"))
    assert set(a[field]) == set(swept[field])


def _curve(table, modification):
    rows = table[(table.modification == modification) & (table.metric == "pretrain_loss")]
    rows = rows[rows.checkpoint != "inflection"].sort_values("pretrain_time")
    return rows.value.to_numpy(float)


def test_the_sweep_closed_form_matches_its_flow_run(tmp_path):
    """One cell with weight decay 0.1 and replay 0.3: the closed form against method=flow (matrix flow on
    L_A + lambda/2 sum ||W_k||^2 from the aligned init, then 100 GD steps on the mixed loss). Pre-training
    within 1e-3 relative; fine-tuning within GD's first-order error in lr (3%)."""
    cell = dataclasses.replace(smoke_sized("smoke"), grid=(), weight_decay=0.1, replay=0.3, n_t=9, dt_max=0.01)
    exact = run_theory(cell, "smoke", tmp_path / "cf", quiet=True)
    flow = run_theory(dataclasses.replace(cell, method="flow"), "smoke", tmp_path / "flow", quiet=True)
    np.testing.assert_allclose(_curve(flow, "none"), _curve(exact, "none"), rtol=1e-3)
    np.testing.assert_allclose(_curve(flow, "finetune"), _curve(exact, "finetune"), rtol=0.03)
    plain = run_theory(dataclasses.replace(cell, weight_decay=0.0, replay=0.0), "smoke", tmp_path / "p", quiet=True)
    assert not np.allclose(_curve(plain, "finetune"), _curve(exact, "finetune"), rtol=0.03)


@pytest.mark.parametrize("fraction", [0.0, 0.2, 0.5])
def test_series_flow_time_follows_the_anneal_fraction(fraction):
    """T of a WSD budget b is the lr summed over its steps: lr b at f = 0 (no anneal), and
    lr ((1 - f) b + (f b + 1) / 2) with a linear decay over the last f b steps."""
    cfg = dataclasses.replace(presets.get("anneal_fraction", quick=True), grid=(), anneal_fraction=fraction)
    b = np.asarray(cfg.budgets, float)
    expected = cfg.pretrain_lr * ((1 - fraction) * b + (fraction * b + 1) / 2 if fraction else b)
    np.testing.assert_allclose(compute.t_grid(cfg), expected, rtol=1e-5)


def test_zero_strengths_stay_python_zeros_and_share_compiles():
    """A mitigation at 0 is computed without its term; the strengths > 0 share one compiled function."""
    chunks = compute.plan(presets.get("weight_decay"))
    assert len({compute.static_part(c.cells[0]) for c in chunks}) == 1
    groups = {(c.cells[0].reg == 0, c.cells[0].weight_decay == 0) for c in chunks}
    assert groups == {(True, True), (True, False), (False, True), (False, False)}
    assert len(compute.plan(presets.get("sam", quick=True))) == 3  # rho = 0, then rho > 0 in two chunks of 2


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(replay=1.5), "replay=1.5 must lie in [0, 1]"),
        (dict(anneal_fraction=1.5, schedule="wsd"), "anneal_fraction=1.5 must lie in [0, 1]"),
        (dict(sam_rho=0.01), "sam_rho=0.01 needs method=series"),
        (dict(anneal_fraction=0.5), "anneal_fraction=0.5 is read only with schedule=wsd (schedule=cosine)"),
        (dict(replay=0.3, multimodal=True), "replay=0.3 is not read by multimodal=true"),
        (dict(weight_decay=-0.1), "weight_decay=-0.1 must be >= 0"),
    ],
)
def test_what_a_mitigation_does_not_read_is_refused(fields, message):
    with pytest.raises(ValueError) as error:
        dataclasses.replace(presets.BASE, **fields)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_every_mitigation_field_is_declared_and_documented():
    from pathlib import Path

    theory = (Path(__file__).resolve().parents[2] / "docs" / "THEORY.md").read_text()
    for field in ("weight_decay", "replay", "sam_rho", "anneal_fraction"):
        assert field in config.NON_NEGATIVE and f"`{field}`" in theory, field
    for name in MITIGATIONS:
        assert f"`{name}`" in theory and name in presets.QUICK, name
