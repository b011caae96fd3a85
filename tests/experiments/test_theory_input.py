"""The input contract of ``ovt theory`` and of the theory configs, on generated inputs: bad input from an
override text, a ``TheoryConfig`` or an explorer ``Setup`` is refused with one line naming the value
(exit 2 on the command line, nothing written, no warning first); good input is taken exactly."""

from __future__ import annotations

import dataclasses
import math
import typing
import warnings

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from experiments import explore
from experiments.sweep import config, overrides, presets

from .conftest import ovt

SETTINGS = settings(
    max_examples=50,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
HINTS = typing.get_type_hints(config.TheoryConfig)
FLOAT_FIELDS = sorted(n for n, h in HINTS.items() if h is float)
INT_FIELDS = sorted(n for n, h in HINTS.items() if h is int)
SCALAR_FIELDS = sorted(n for n, h in HINTS.items() if typing.get_origin(h) is not tuple)
TINY, HUGE = config.FLOAT32_TINY, config.FLOAT32_MAX

# Finite float64 numbers that float32 cannot hold: they overflow, or (nonzero) flush to zero.
NOT_FLOAT32 = st.one_of(
    st.floats(min_value=HUGE * 2, max_value=1e308),
    st.floats(min_value=5e-324, max_value=TINY / 2, allow_subnormal=True),
).flatmap(lambda x: st.sampled_from([x, -x]))
BAD_FLOAT_TEXTS = st.one_of(
    st.sampled_from(["nan", "inf", "-inf", "1e400", "-1e999", "abc", "0.1.2", "", "1e300", "1e-320", "True"]),
    NOT_FLOAT32.map(repr),
)
BAD_INT_TEXTS = st.one_of(
    st.sampled_from(["1.5", "abc", "1e400", "nan", "", "0x10"]),
    st.floats(min_value=0.01, max_value=1e6).filter(lambda x: not x.is_integer()).map(repr),
)
BAD_SEEDS = st.one_of(st.integers(max_value=-1), st.integers(min_value=config.MAX_SEED + 1, max_value=10**40))


def refused(capsys, tmp_path, *overrides, preset="smoke"):
    """``ovt theory PRESET OVERRIDES --out DIR``: the one stderr line, after checking the contract (exit
    2, nothing on stdout, nothing written, no RuntimeWarning on the way)."""
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        code, stdout, stderr = ovt(capsys, "theory", preset, *overrides, "--out", out, "--quiet")
    assert (code, stdout) == (2, ""), (overrides, code, stderr)
    assert stderr.startswith("ovt: error: ") and stderr.count("\n") == 1, stderr
    assert not out.exists()
    return stderr


BAD_OVERRIDES = st.one_of(
    st.tuples(st.sampled_from(FLOAT_FIELDS), BAD_FLOAT_TEXTS), st.tuples(st.sampled_from(INT_FIELDS), BAD_INT_TEXTS)
)


@SETTINGS
@given(override=BAD_OVERRIDES)
def test_bad_numbers_exit_2_naming_the_value(capsys, tmp_path, override):
    """Not a number, not finite, not whole (int fields), or beyond float32 (said with its range)."""
    field, text = override
    line = refused(capsys, tmp_path, f"{field}={text}")
    assert f"{field}=" in line, line
    number = _number(text)
    if HINTS[field] is float and number is not None and math.isfinite(number) and number != 0:
        assert "float32" in line and f"{TINY:.4g}" in line and f"{HUGE:.4g}" in line, line


def _number(text: str):
    try:
        return float(text)
    except ValueError:
        return None


@SETTINGS
@given(field=st.sampled_from(config.SEEDS), seed=BAD_SEEDS)
def test_seeds_beyond_a_prng_key_are_refused_before_anything_is_written(capsys, tmp_path, field, seed):
    line = refused(capsys, tmp_path, f"{field}={seed}")
    assert f"{field}={seed} must lie in [0, {config.MAX_SEED}]" in line


def test_a_seed_written_as_a_huge_float_is_refused(capsys, tmp_path):
    assert "seed=" in refused(capsys, tmp_path, "seed=1e30")


@SETTINGS
@given(
    field=st.sampled_from(sorted(HINTS.keys() - {"grid"})),
    texts=st.lists(st.sampled_from(["0.3", "0.5", "1", "abc", "", "0.3,0.5"]), min_size=2, max_size=3),
)
def test_a_field_given_twice_is_refused(capsys, tmp_path, field, texts):
    line = refused(capsys, tmp_path, *(f"{field}={t}" for t in texts))
    assert f"{field} is given twice" in line, line


@SETTINGS
@given(field=st.sampled_from(SCALAR_FIELDS), text=st.from_regex(r"\A[ ,]*,[ ,]*\Z"))
def test_a_sweep_of_no_values_is_refused(capsys, tmp_path, field, text):
    line = refused(capsys, tmp_path, f"{field}={text}")
    assert f"{field}=" in line and "no values" in line, line


GOOD = st.floats(min_value=TINY, max_value=1e30) | st.just(0.0)


@SETTINGS
@given(values=st.lists(GOOD, min_size=1, max_size=5))
def test_good_values_are_taken_exactly(values):
    """A value in float32's range round-trips through its text; a sweep keeps its first occurrences in order."""
    base = presets.get("smoke")
    cfg = overrides.apply_overrides(base, {"gamma": repr(values[0]), "reg": ",".join(map(repr, values)) + ","})
    assert cfg.gamma == values[0]
    assert dict(cfg.grid)["reg"] == tuple(dict.fromkeys(values))


@SETTINGS
@given(seed=st.integers(0, config.MAX_SEED))
def test_every_prng_seed_is_taken(seed):
    assert overrides.apply_overrides(presets.get("smoke"), {"seed": str(seed), "task_seed": str(seed)}).seed == seed


def test_the_largest_seed_runs_and_is_stored(capsys, tmp_path):
    """Seeds travel as uint32 through the sweep: the largest is its own PRNG key, stored as given."""
    out = tmp_path / "run"
    code, _, err = ovt(
        capsys, "theory", "smoke", "n_t=5", "gamma=0.3", f"seed={config.MAX_SEED}", "--out", out, "--quiet"
    )
    assert code == 0, err
    assert set(pd.read_parquet(out / "metrics.parquet").seed) == {config.MAX_SEED}


def _bad_python_values(field: str):
    """Values of another type than the field's, or (numbers) not finite or beyond float32."""
    kind = HINTS[field]
    common = st.sampled_from([None, "0.3", [1.0], {}, 1 + 2j])
    if kind is bool:
        return common | st.sampled_from([1, 0.0])
    if kind is str:
        return common.filter(lambda v: not isinstance(v, str)) | st.sampled_from([1, 0.5])
    if kind is int:
        return common | st.sampled_from([True, 16.7, 2.0, float("nan")])
    if typing.get_origin(kind) is tuple:
        return st.sampled_from([None, "1,2", 1.0, [1.0, 2.0], ("a",)])
    return common | st.sampled_from([True, float("nan"), float("inf")]) | NOT_FLOAT32


@SETTINGS
@given(data=st.data(), field=st.sampled_from(sorted(HINTS.keys() - {"grid"})))
def test_theory_configs_refuse_bad_python_values_by_name(data, field):
    value = data.draw(_bad_python_values(field))
    with pytest.raises(ValueError) as error:
        dataclasses.replace(presets.BASE, **{field: value})
    message = str(error.value)
    assert "\n" not in message and f"{field}=" in message, (field, value, message)


@pytest.mark.parametrize("grid", [(("gamma", 0.3),), (("gamma", [0.3]),), ("gamma",), ((("gamma",), (0.3,)),)], ids=str)
def test_malformed_grids_are_refused(grid):
    with pytest.raises(ValueError, match="grid"):
        dataclasses.replace(presets.BASE, grid=grid)


KNOB_TYPES = {f.name: f.type for f in dataclasses.fields(explore.Setup)}


@SETTINGS
@given(data=st.data(), knob=st.sampled_from(sorted(KNOB_TYPES)))
def test_explorer_setups_refuse_bad_knobs_by_name(data, knob):
    assert knob in HINTS  # a knob is the config field of the same name
    value = data.draw(_bad_python_values(knob).filter(lambda v: not (HINTS[knob] is int and v == 2.0)))
    with pytest.raises(ValueError) as error:
        explore.Setup(**{knob: value})
    message = str(error.value)
    assert "\n" not in message and f"{knob}=" in message, (knob, value, message)


@SETTINGS
@given(rank=st.integers(1, explore.D), depth=st.integers(1, 4), gamma=st.integers(0, 2))
def test_explorer_setups_take_whole_floats_and_integers(rank, depth, gamma):
    setup = explore.Setup(rank=float(rank), depth=depth, gamma=gamma)
    assert (setup.rank, setup.depth, setup.gamma) == (rank, depth, float(gamma))
    assert type(setup.rank) is int and type(setup.gamma) is float
    assert setup == explore.Setup(rank=rank, depth=depth, gamma=float(gamma))


def test_the_preset_list_names_each_field_once(capsys):
    code, out, _ = ovt(capsys, "theory", "--list")
    assert code == 0
    entries = {}
    for line in out.splitlines():
        assert len(line) <= 100, line
        if not line.startswith(" "):
            name = line.split()[0]
            entries[name] = [line]
        else:
            entries[name].append(line)
    assert list(entries) == list(presets.PRESETS)
    for name, lines in entries.items():
        cfg = presets.PRESETS[name]
        words = " ".join(lines).split("--quick:")[0].split()[1:]
        fields = [w.split("=")[0] for w in words if "=" in w]
        assert len(fields) == len(set(fields)), (name, fields)  # nothing said twice
        assert set(dict(cfg.grid)) <= set(fields), (name, fields)
        for field, values in cfg.grid:  # a sweep is shown as the override that sets it
            if len(values) <= 8:
                shown = next(w for w in words if w.startswith(f"{field}=")).split("=", 1)[1]
                assert tuple(overrides.parse_value(field, v) for v in shown.split(",")) == values
