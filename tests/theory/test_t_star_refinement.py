"""The closed-form sweeps store T* to 0.1%: each interior minimum of the grid is refined on the same
closed-form curve inside its bracket [T_{i-1}, T_{i+1}] (``experiments.sweep.compute.inflections``), and
agrees with SciPy's bounded minimiser of that curve in float64."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from analysis.inflection import vertex_minimum
from experiments.sweep import compute as theory_run
from experiments.sweep import config, presets
from experiments.sweep.runner import run_theory

CURVE = dict(theory_run.INFLECTIONS)  # modification -> Curves field
SWEPT = ("gamma", "lr", "reg")


def _cell(cfg, row):
    """The cell of ``cfg`` an inflection row belongs to (the gamma cell for a fine-tuning row shared by
    all gammas: fine-tuning does not depend on gamma)."""
    for cell in config.cells(cfg):
        fields = ("lr", "reg") if row.modification == "finetune" else ("gamma",)
        if all(np.isclose(getattr(cell, f), getattr(row, f)) for f in fields):
            return cell
    raise AssertionError(f"no cell for {row}")


def continuous_minimum(cell, modification: str, T: np.ndarray, y: np.ndarray) -> float:
    """SciPy's bounded minimiser, on log T inside the grid's bracket, of the closed-form curve in float64."""
    i = int(np.nanargmin(y))
    bounds = (np.log(T[i - 1]), np.log(T[i + 1]))
    with jax.enable_x64(True):
        static = theory_run.static_part(cell)
        p = {
            name: getattr(cell, name)
            for name in theory_run.TRACED
            if name not in theory_run.ZERO_STATIC or getattr(cell, name) != 0
        }

        @jax.jit
        def at(x):
            return getattr(theory_run.cell_curves(static, p, jnp.exp(x)[None])["curves"], CURVE[modification])[0]

        result = minimize_scalar(
            lambda x: float(at(np.float64(x))), bounds=bounds, method="bounded", options=dict(xatol=1e-9)
        )
    assert result.success
    return float(np.exp(result.x))


def _stored(table, row):
    """(T, y) of the stored grid curve an inflection row summarises."""
    keep = (table.modification == row.modification) & (table.metric == "pretrain_loss")
    keep &= table.checkpoint != "inflection"
    for name in SWEPT:
        value = getattr(row, name)
        keep &= table[name].isna() if np.isnan(value) else np.isclose(table[name], value)
    curve = table[keep].sort_values("pretrain_time")
    return curve.pretrain_time.to_numpy(float), curve.value.to_numpy(float)


@pytest.mark.parametrize("name", ["gaussian", "finetune", "regularization"])
def test_stored_t_star_is_the_continuous_minimum_to_0_1_percent(tmp_path, name):
    cfg = presets.get(name)
    table = run_theory(cfg, name, tmp_path, quiet=True)
    rows = table[table.checkpoint == "inflection"]
    assert len(rows) == 6 and (rows.t_star_kind == "interior").all()
    errors = []
    for row in rows.itertuples():
        T, y = _stored(table, row)
        exact = continuous_minimum(_cell(cfg, row), row.modification, T, y)
        errors.append(abs(row.value / exact - 1))
    assert max(errors) < 1e-3, errors


def test_gamma_0_4_on_61_points_finds_the_continuous_minimum(tmp_path):
    cfg = dataclasses.replace(presets.get("gaussian"), n_t=61, grid=(("gamma", (0.4,)),))
    table = run_theory(cfg, "gaussian", tmp_path, quiet=True)
    row = table[(table.checkpoint == "inflection") & (table.modification == "gaussian")].iloc[0]
    T, y = _stored(table, row)
    assert float(vertex_minimum(T, y)) == pytest.approx(17.15, rel=2e-3)  # the grid's parabola is 11% off
    assert row.value == pytest.approx(19.32, rel=1e-3) and row.t_star_kind == "interior"
    assert row.value == pytest.approx(continuous_minimum(_cell(cfg, row), "gaussian", T, y), rel=1e-3)
