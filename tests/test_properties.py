"""The input contract over generated inputs (hypothesis, fixed seed, bounded examples; tests/conftest.py).

Each property states the whole contract for one reader: every generated value either comes back
exactly as given (a good value) or is refused with a ValueError that names the field, the file or the
argument (a bad one); no other exception escapes, and nothing is written before the refusal.
"""

from __future__ import annotations

import json
import math
import typing

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from analysis.inflection import vertex_minimum
from experiments.llm import config as llm_config
from experiments.llm import config_measures
from experiments.sweep import config, overrides, presets
from experiments.sweep.config import FLOAT32_MAX, FLOAT32_TINY
from llm_validation.evaluate import read_texts
from rundir import store
from theory import perturbation

THEORY_FIELDS = sorted(name for name in config.FIELDS if name != "grid")
LLM_CONFIGS = [llm_config.PretrainRun, llm_config.PerturbRun, llm_config.FinetuneRun, config_measures.CurvatureRun]

# Texts a user might type for a value: numbers of every kind (huge, tiny, subnormal, non-finite,
# negative, fractional), booleans, empty and comma lists, and arbitrary text.
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True).map(repr),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.sampled_from(["1e300", "1e-320", "-0", "1e400", "nan", "-inf", "0x10", "1_000", " 3 ", "2.5"]),
)
texts = st.one_of(
    numbers,
    st.sampled_from(["", ",", "true", "no", "a,b", "1,,2", "None", "[]", "{}"]),
    st.text(max_size=12),
)


def _refused(error: Exception, name: str) -> bool:
    return isinstance(error, ValueError) and name in str(error)


@given(name=st.sampled_from(THEORY_FIELDS), text=texts)
def test_a_theory_override_is_taken_exactly_or_refused_naming_its_field(name, text):
    assume("," not in text)  # a comma list is a sweep: the next property
    base = presets.get("smoke")
    try:
        cfg = overrides.apply_overrides(base, overrides.read_overrides([f"{name}={text}"]))
    except Exception as error:  # noqa: BLE001 (the property is about which exceptions escape)
        assert _refused(error, name), f"{name}={text!r}: {type(error).__name__}: {error}"
        return
    value = getattr(cfg, name)
    hint = typing.get_type_hints(config.TheoryConfig)[name]
    if hint is float:
        assert math.isfinite(value) and (value == 0 or FLOAT32_TINY <= abs(value) <= FLOAT32_MAX), (text, value)
        assert value == float(text)
    elif hint is int:
        assert value == float(text.strip()) or value == int(text)


@given(name=st.sampled_from(THEORY_FIELDS), parts=st.lists(numbers, min_size=0, max_size=3))
def test_a_theory_sweep_is_every_value_once_or_refused_naming_its_field(name, parts):
    text = ",".join(parts)
    base = presets.get("smoke")
    try:
        cfg = overrides.apply_overrides(base, overrides.read_overrides([f"{name}={text}"]))
        config.cells(cfg)
    except Exception as error:  # noqa: BLE001
        assert _refused(error, name), f"{name}={text!r}: {type(error).__name__}: {error}"
        return
    assert dict(cfg.grid).get(name) or getattr(cfg, name) is not None


@given(name=st.sampled_from(THEORY_FIELDS), a=numbers, b=numbers)
def test_a_theory_field_given_twice_is_refused(name, a, b):
    with pytest.raises(ValueError, match=f"{name} is given twice"):
        overrides.read_overrides([f"{name}={a}", f"{name}={b}"])


@given(data=st.data())
def test_an_llm_override_is_taken_or_refused_naming_its_field(data):
    cls = data.draw(st.sampled_from(LLM_CONFIGS))
    name = data.draw(st.sampled_from(llm_config.names(cls)))
    text = data.draw(texts)
    base = cls(**{n: "x" for n in ("model", "eval_text") if n in llm_config.names(cls)})
    try:
        cfg, sweep = llm_config.configure(base, {}, [f"{name}={text}"])
    except Exception as error:  # noqa: BLE001
        assert _refused(error, name), f"{cls.__name__} {name}={text!r}: {type(error).__name__}: {error}"
        return
    values = sweep.get(name, (getattr(cfg, name),))
    for value in values:
        if isinstance(value, float):
            assert math.isfinite(value), (name, text, value)


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@given(value=json_values)
def test_a_json_store_file_is_an_object_or_refused_naming_the_file(tmp_path_factory, value):
    path = tmp_path_factory.mktemp("json") / "manifest.json"
    path.write_text(json.dumps(value))
    if isinstance(value, dict):
        assert store.read_object(path, "rerun") == value
    else:
        with pytest.raises(ValueError, match=f"{path} holds .*, not a JSON object; rerun"):
            store.read_object(path, "rerun")


@given(raw=st.binary(max_size=40))
def test_a_broken_json_store_file_is_refused_naming_the_file(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("json") / "study.json"
    path.write_bytes(raw)
    try:
        found = store.read_object(path, "rerun")
    except ValueError as error:
        assert str(path) in str(error)
    else:
        assert isinstance(found, dict)


@given(
    lines=st.lists(
        st.one_of(
            st.text(min_size=1, max_size=10).map(lambda t: json.dumps({"text": t})),
            json_values.map(lambda v: json.dumps({"text": v})),
            json_values.map(json.dumps),
            st.text(max_size=10),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_an_eval_jsonl_gives_its_texts_or_names_the_file_and_line(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("eval") / "held_out.jsonl"
    path.write_text("\n".join(lines))
    good = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not (isinstance(record, dict) and isinstance(record.get("text"), str)):
            with pytest.raises(ValueError, match=f"{path}.*line {number}"):
                read_texts(path)
            return
        good.append(record["text"])
    if not any(t.strip() for t in good):
        with pytest.raises(ValueError, match=str(path)):
            read_texts(path)
    else:
        assert read_texts(path) == [t for t in good if t.strip()]


finite32 = st.floats(-3, 3, width=32, allow_subnormal=False)  # float32, what JAX computes in
weights = st.integers(1, 4).flatmap(
    lambda h: st.tuples(
        st.lists(finite32, min_size=2 * h, max_size=2 * h).map(lambda v: np.reshape(v, (h, 2))),
        st.lists(finite32, min_size=3 * h, max_size=3 * h).map(lambda v: np.reshape(v, (3, h))),
    )
)


@given(Ws=weights, gamma=finite32.map(abs), s1=finite32.map(abs), s2=finite32.map(abs))
def test_the_excess_at_any_depth_equals_the_depth_two_closed_form(Ws, gamma, s1, s2):
    W1, W2 = Ws
    expected = float(perturbation.gaussian_excess(W1, W2, gamma, s1, s2))
    assert float(perturbation.excess([W1, W2], gamma, (s1, s2))) == pytest.approx(expected, rel=1e-4, abs=1e-5)
    rounded = [np.rint(W1).astype(int), np.rint(W2).astype(int)]
    assert float(perturbation.excess(rounded, gamma, (s1, s2))) == pytest.approx(
        float(perturbation.gaussian_excess(*map(np.rint, (W1, W2)), gamma, s1, s2)), rel=1e-4, abs=1e-5
    )


bad_numbers = st.sampled_from([np.nan, np.inf, -np.inf, "1", None])


@given(Ws=weights, bad=bad_numbers, where=st.integers(0, 1))
def test_the_excess_refuses_weights_that_are_not_finite_numbers_naming_them(Ws, bad, where):
    W = [np.asarray(w, object if isinstance(bad, str) or bad is None else float) for w in Ws]
    W[where].flat[0] = bad
    with pytest.raises(ValueError, match=f"W{where + 1}"):
        perturbation.gaussian_excess(W[0], W[1], 1.0, 1.0, 1.0)


@given(gamma=st.floats(max_value=-1e-9) | st.just(np.nan), which=st.sampled_from(["gamma", "sigma1", "sigma2"]))
def test_the_excess_refuses_a_negative_or_nan_scale_naming_it(gamma, which):
    args = {"gamma": 1.0, "sigma1": 1.0, "sigma2": 1.0, which: gamma}
    with pytest.raises(ValueError, match=which):
        perturbation.gaussian_excess(np.eye(2), np.eye(2), **args)


@given(
    T=st.lists(st.floats(-10, 1e6) | st.just(math.nan), min_size=3, max_size=6),
    L=st.lists(st.floats(0, 10), min_size=6, max_size=6),
)
def test_a_minimum_over_a_grid_needs_positive_increasing_finite_times(T, L):
    L = L[: len(T)]
    grid_ok = all(math.isfinite(t) and t > 0 for t in T) and all(a < b for a, b in zip(T, T[1:]))
    if grid_ok:
        t = float(vertex_minimum(np.array(T), np.array(L)))
        assert T[0] / 10 <= t <= T[-1] * 10
    else:
        with pytest.raises(ValueError, match="T"):
            vertex_minimum(np.array(T), np.array(L))
