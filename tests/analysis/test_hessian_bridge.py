"""The Hessian bridge: the theory's trace against the repository's exact excess, the growth exponent and
its interval, the kappa fit, the pooled bridge, and the committed study's curvature stores."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis import hessian_bridge as hb

CURVATURE = Path(__file__).resolve().parents[2] / "paper_figures" / "reference" / "study" / "curvature"
SPEC = dict(alpha_s=0.7, s1=2.4, u0=2.4e-3, rank=32)
THEORY = (SPEC["alpha_s"], SPEC["s1"], SPEC["u0"], SPEC["rank"])
KAPPA = 1e-6  # with T in [3e5, 4e7] tokens, flow time spans the modes' learning times (about 1.4 to 11)
TOKENS = np.geomspace(3e5, 4e7, 8)


def test_theory_trace_is_twice_the_small_noise_excess_over_gamma_squared():
    from theory import protocol, tasks

    rank, gamma, sigma = 8, 1e-3, 1.0 / math.sqrt(8)
    s = tasks.power_law_spectrum(rank, 2.0, 0.8)
    T = np.array([0.0, 0.3, 1.0, 3.0, 10.0, 100.0])
    curves = protocol.closed_form_curves(
        s, tasks.reversed_spectrum(s), 0.01, T, gamma=gamma, sigma1=sigma, sigma2=sigma,
        d_in=rank, h=rank, d_out=rank, tau=0.0,
    )  # fmt: skip
    from_excess = 2.0 * np.asarray(curves.excess, float) / gamma**2
    np.testing.assert_allclose(hb.theory_trace(T, 1.0, 0.8, 2.0, 0.01, rank), from_excess, rtol=1e-3)


def test_theory_trace_is_safe_far_past_every_learning_time():
    with np.errstate(all="raise"):
        W = hb.theory_trace([0.0, 1e12], 1.0, *THEORY)
    s = SPEC["s1"] * np.arange(1, 33) ** -SPEC["alpha_s"]
    np.testing.assert_allclose(W, [2 * 32 * SPEC["u0"], 2 * s.sum()], rtol=1e-12)


@settings(derandomize=True, max_examples=30)
@given(
    omega=st.floats(-2.0, 2.0),
    log_c=st.floats(-10.0, 10.0),
    t0=st.floats(1.0, 1e6),
    n=st.integers(3, 12),
)
def test_growth_exponent_recovers_an_exact_power_law(omega, log_c, t0, n):
    T = t0 * np.geomspace(1.0, 100.0, n)
    fit = hb.growth_exponent(T, np.exp(log_c) * T**omega)
    assert abs(fit.omega - omega) < 1e-10
    assert fit.se < 1e-10 and fit.dof == n - 2


def test_growth_exponent_interval_covers_the_true_exponent():
    rng = np.random.default_rng(0)
    T = np.geomspace(1e5, 1e7, 7)
    covered = 0
    for _ in range(200):
        lo, hi = hb.growth_exponent(T, 0.1 * T**0.6 * np.exp(rng.normal(0.0, 0.1, T.size))).interval()
        covered += lo <= 0.6 <= hi
    assert 0.90 <= covered / 200 <= 0.99


def test_kappa_from_trace_recovers_kappa_and_c_exactly():
    fit = hb.kappa_from_trace(TOKENS, 0.05 * hb.theory_trace(TOKENS, KAPPA, *THEORY), *THEORY)
    np.testing.assert_allclose([fit.kappa, fit.c], [KAPPA, 0.05], rtol=1e-3)
    assert fit.rmse_log < 1e-6 and fit.at_bound is None


def test_kappa_from_trace_with_multiplicative_noise():
    noise = np.exp(np.random.default_rng(1).normal(0.0, 0.05, TOKENS.size))
    fit = hb.kappa_from_trace(TOKENS, 0.05 * hb.theory_trace(TOKENS, KAPPA, *THEORY) * noise, *THEORY)
    np.testing.assert_allclose([fit.kappa, fit.c], [KAPPA, 0.05], rtol=0.05)


def test_kappa_from_trace_says_when_kappa_ends_at_a_bound():
    flat = np.full(TOKENS.size, 0.3)  # no growth: only a kappa outside the useful range fits it
    assert hb.kappa_from_trace(TOKENS, flat, *THEORY).at_bound in ("lower", "upper")


def _synthetic(extra_growth: float, seed: int = 2) -> dict:
    rng = np.random.default_rng(seed)
    series = {}
    for j in range(4):
        T = TOKENS * (1.0 + 0.1 * j)
        W = 0.05 * hb.theory_trace(T, KAPPA, *THEORY) * (T / T[0]) ** extra_growth
        series[f"s{j}"] = (T, W * np.exp(rng.normal(0.0, 0.03, T.size)))
    return series


def test_bridge_recovers_kappa_and_no_extra_growth():
    result = hb.bridge(_synthetic(0.0), {**SPEC, "kappa": KAPPA})
    pooled = result["pooled"]
    lo, hi = pooled["kappa_hessian"]["interval"]
    assert lo <= KAPPA <= hi
    lo, hi = pooled["omega_difference"]["interval"]
    assert lo <= 0.0 <= hi
    assert len(result["per_series"]) == 4 and pooled["omega_measured"]["n"] == 4
    json.dumps(result, allow_nan=False)


def test_bridge_detects_growth_the_theory_lacks():
    per_series = {f"s{j}": {**SPEC, "kappa": KAPPA} for j in range(4)}
    pooled = hb.bridge(_synthetic(0.3), per_series)["pooled"]
    lo, hi = pooled["omega_difference"]["interval"]
    assert lo > 0.0 and abs(pooled["omega_difference"]["value"] - 0.3) < 0.05


def test_bridge_with_one_series_reports_the_regression_se():
    series = {"s0": _synthetic(0.0)["s0"]}
    pooled = hb.bridge(series, SPEC, kappa_loss=KAPPA)["pooled"]
    assert pooled["omega_measured"]["interval"] is None and pooled["omega_measured"]["se"] > 0
    assert "regression" in pooled["omega_measured"]["method"]
    assert all(pooled[key]["interval"] is None for key in pooled)


@pytest.fixture(scope="module")
def study_series():
    frame = pd.concat([pd.read_parquet(path) for path in sorted(CURVATURE.glob("*/metrics.parquet"))])
    return hb.trace_series(frame)


def test_trace_series_reads_the_committed_study(study_series):
    assert len(study_series) == len(list(CURVATURE.glob("*/metrics.parquet"))) == 18  # 6 series of 20k, 12 of 5k
    for T, W in study_series.values():
        assert T.size >= 3 and np.all(np.diff(T) > 0) and np.all(W > 0)


def test_bridge_on_the_committed_study(study_series):
    result = hb.bridge(study_series, {**SPEC, "kappa": 5e-6})
    numbers = [entry["value"] for entry in result["pooled"].values()]
    numbers += [v for entry in result["pooled"].values() for v in entry["interval"]]
    assert all(v is not None and math.isfinite(v) for v in numbers)
    assert result["pooled"]["omega_measured"]["value"] > 0


def test_trace_series_names_series_by_run_where_given():
    frame = pd.DataFrame(
        {"run": ["a", "a", "a", "b"], "metric": "hessian_trace", "pretrain_time": [3.0, 1.0, 2.0, 0.0], "value": 1.0}
    )
    series = hb.trace_series(frame)
    assert list(series) == ["a"] and series["a"][0].tolist() == [1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    ("call", "named"),
    [
        (lambda: hb.growth_exponent([1.0, 2.0, 3.0], [1.0, 2.0]), "T and W"),
        (lambda: hb.growth_exponent([0.0, 2.0, 3.0], [1.0, 2.0, 3.0]), "T"),
        (lambda: hb.growth_exponent([1.0, 2.0], [1.0, 2.0]), "T"),
        (lambda: hb.growth_exponent([1.0, 2.0, 3.0], [1.0, -2.0, 3.0]), "W"),
        (lambda: hb.growth_exponent([1.0, 2.0, np.inf], [1.0, 2.0, 3.0]), "T"),
        (lambda: hb.kappa_from_trace([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], *THEORY, kappa0=-1.0), "kappa0"),
        (lambda: hb.theory_trace([1.0], 0.0, *THEORY), "kappa"),
        (lambda: hb.theory_trace([1.0], 1.0, 0.7, 2.4, 2.4e-3, 0), "rank"),
        (lambda: hb.bridge({"a": (TOKENS, TOKENS)}, SPEC), "kappa_loss"),
        (lambda: hb.bridge({"a": (TOKENS, TOKENS)}, {"b": SPEC}), "spectrum"),
        (lambda: hb.trace_series(pd.DataFrame({"metric": ["hessian_trace"]})), "columns"),
    ],
)
def test_bad_input_is_refused_by_name(call, named):
    with pytest.raises(ValueError, match=named):
        call()
