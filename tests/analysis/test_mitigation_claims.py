"""Claim k on arm tables whose forgetting, costs and T* are built in: the numbers each part must report
(checked against an independent paired Student-t) and the verdict each rule must give."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from analysis.claim_text import STATEMENTS, render_markdown
from analysis.mitigation_claims import mitigation_claims

T = np.array([1e6, 2e6, 4e6, 8e6, 16e6, 32e6])
SERIES = "series_seed"
N = 8
LR = 1e-3


def clean(s: int, t: float, shift=0.0) -> float:
    """Series s's log ppl before fine-tuning: falling in tokens, a series' own level (cancels in pairs)."""
    return 3.0 - 0.2 * math.log(t / 1e6) + 0.01 * s + shift


def before(n_series=N, times=T, shift=0.0) -> pd.DataFrame:
    """The rows before fine-tuning ("none"): perplexity and the in-task loss, one draw."""
    rows = []
    for s in range(n_series):
        for t in times:
            common = dict(checkpoint=f"t{int(t)}", pretrain_time=t, modification="none", seed=0, series_seed=s)
            rows.append(
                common | dict(metric="perplexity", value=math.exp(clean(s, t, shift(s) if callable(shift) else shift)))
            )
            rows.append(common | dict(metric="finetune_loss", value=2.0))
    return pd.DataFrame(rows).assign(lr=np.nan, steps=np.nan, reg=np.nan, lr_policy="")


def after(
    forgetting,
    n_series=N,
    orders=2,
    series_noise=None,
    order_sd=0.01,
    task=1.5,
    task_sd=0.01,
    lr=LR,
    times=T,
    shift=0.0,
    seed=0,
    **columns,
) -> pd.DataFrame:
    """Fine-tuned rows: log ppl = clean + forgetting(t) + series_noise[s] + N(0, order_sd) per order;
    in-task loss task + N(0, task_sd) (nats); with train_loss, step_loss and inflection rows to ignore."""
    rng = np.random.default_rng(seed)
    noise = np.zeros(n_series) if series_noise is None else np.asarray(series_noise, float)
    rows = []
    for s in range(n_series):
        base = shift(s) if callable(shift) else shift
        for t in times:
            for k in range(orders):
                common = dict(checkpoint=f"t{int(t)}", pretrain_time=t, modification="finetune", seed=k, series_seed=s)
                value = math.exp(clean(s, t, base) + forgetting(t) + noise[s] + rng.normal(0, order_sd))
                rows.append(common | dict(metric="perplexity", value=value))
                rows.append(common | dict(metric="finetune_loss", value=task + rng.normal(0, task_sd)))
                rows.append(common | dict(metric="train_loss", value=1e3))
                rows.append(common | dict(metric="step_loss", value=1e3, step=1))
        rows.append(dict(checkpoint="inflection", pretrain_time=np.nan, modification="finetune", seed=-1,
                         series_seed=s, metric="inflection", value=1e7))  # fmt: skip
    frame = pd.DataFrame(rows).assign(lr=lr, steps=400, reg=0.0, lr_policy="fixed")
    return frame.assign(**columns)


def arm(forgetting, shift=0.0, **kw) -> pd.DataFrame:
    """A whole arm table: its own rows before fine-tuning and its fine-tuned rows."""
    return pd.concat([before(kw.get("n_series", N), kw.get("times", T), shift), after(forgetting, shift=shift, **kw)])


def constant(F):
    return lambda t: F


def by_claim(claims):
    return {c["claim"]: c for c in claims}


def per_series(table, t, metric="perplexity", modification="finetune", log=True):
    rows = table[(table.metric == metric) & (table.pretrain_time == t) & (table.modification == modification)]
    values = np.log(rows.value) if log else rows.value
    return values.groupby(rows[SERIES]).mean()


def forgetting_at(table, t):
    return per_series(table, t) - per_series(table, t, modification="none")


def paired_t(d, level=0.95):
    d = np.asarray(d, float)
    half = stats.t.ppf(1 - (1 - level) / 2, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
    return d.mean(), [d.mean() - half, d.mean() + half]


SPREAD = np.array([0.03, -0.02, 0.01, -0.04, 0.02, 0.0, -0.01, 0.01])  # a series' own forgetting deviation


def test_the_reduction_is_the_paired_difference_of_forgetting_with_its_student_t_interval():
    """Baseline F = 0.30 nats, arm F = 0.21, each with per-series deviations and order noise: the
    reduction is mean_s (F^b_s - F^a_s) at the last T, its interval the paired t(7) one, PASS."""
    base = arm(constant(0.30), series_noise=SPREAD, seed=1)
    sam = arm(constant(0.21), series_noise=SPREAD[::-1], seed=2, shift=lambda s: 0.004 * s)
    claims = by_claim(mitigation_claims({"none": base, "sam": sam}, "none", SERIES))
    row = claims["k:sam"]
    fb, fa = forgetting_at(base, T[-1]), forgetting_at(sam, T[-1])
    value, interval = paired_t(fb - fa)
    assert row["value"] == pytest.approx(value, abs=1e-12) and value == pytest.approx(0.09, abs=0.02)
    assert row["interval"] == pytest.approx(interval, abs=1e-12)
    assert row["verdict"] == "PASS" and row["n_series"] == N and row["n_draws"] == 2 and row["level"] == 0.95
    assert row["pretrain_time"] == T[-1] and row["lr"] == LR and row["arm"] == "sam"
    assert [p["at"].split(",")[0] for p in row["parts"]] == ["reduction", "t_star", "base_cost", "task_cost"]
    pct = row["reduction_pct"]
    assert pct["value"] == pytest.approx(100 * value / fb.mean(), abs=1e-10)
    assert pct["interval"] == pytest.approx([100 * x / fb.mean() for x in interval], abs=1e-10)
    assert pct["value"] == pytest.approx(30, abs=7) and "conditional" in pct["method"]
    assert "95%" in row["method"] and row["parts"][0]["reduction_pct"] == pct
    # a pre-training arm's own checkpoints: the base cost is the paired difference of log ppl before
    cost_value, cost_interval = paired_t(
        per_series(sam, T[-1], modification="none") - per_series(base, T[-1], modification="none")
    )
    assert row["base_cost"]["value"] == pytest.approx(cost_value, abs=1e-12)
    assert row["base_cost"]["interval"] == pytest.approx(cost_interval, abs=1e-12)
    assert cost_value == pytest.approx(0.014, abs=1e-9)  # mean of 0.004 s over s = 0..7
    assert row["base_cost"]["verdict"] == "PASS"  # a significant cost: stated, not the claim's verdict
    head = claims["k"]
    assert list(claims)[0] == "k" and head["verdict"] == "PASS" and head["at"] == "sam" and head["level"] == 0.95


def test_verdicts_pass_fail_and_inconclusive_in_built_cases():
    base = arm(constant(0.30), series_noise=SPREAD, order_sd=0.0)
    arms = {
        "none": base,
        "less": arm(constant(0.21), series_noise=SPREAD[::-1], order_sd=0.0),
        "more": arm(constant(0.40), series_noise=SPREAD[::-1], order_sd=0.0),
        # the same mean forgetting, other deviations: the reduction is 0 up to rounding, its interval across 0
        "same": arm(constant(0.30), series_noise=SPREAD[::-1], order_sd=0.0),
    }
    claims = by_claim(mitigation_claims(arms, "none", SERIES))
    assert [claims[f"k:{a}"]["verdict"] for a in ("less", "more", "same")] == ["PASS", "FAIL", "INCONCLUSIVE"]
    assert claims["k:same"]["value"] == pytest.approx(0.0, abs=1e-12)
    assert claims["k:more"]["value"] == pytest.approx(-0.10, abs=1e-12)
    assert claims["k"]["verdict"] == "PASS" and claims["k"]["at"] == "less"
    assert claims["k"]["level"] == pytest.approx(1 - 0.05 / 3)
    assert [p["at"] for p in claims["k"]["parts"]] == ["less", "more", "same"]


def test_bonferroni_over_the_arms_makes_a_marginal_reduction_inconclusive_in_the_head():
    """Per-series reductions m + 0.02 e_s (e: mean 0, sd 1) with t = m / (0.02 / sqrt 8) = 2.6: above
    t(7, 0.975) = 2.36 (the arm's 95% row PASSes) but below t(7, 1 - 0.025 / 2) = 2.84 (the head's
    Bonferroni level for two arms): the head is INCONCLUSIVE."""
    e = (SPREAD - SPREAD.mean()) / SPREAD.std(ddof=1)
    m = 2.6 * 0.02 / math.sqrt(N)
    base = arm(constant(0.30), order_sd=0.0)
    marginal = arm(constant(0.30 - m), series_noise=-0.02 * e, order_sd=0.0)
    worse = arm(constant(0.35), order_sd=0.0, series_noise=0.01 * e)
    claims = by_claim(mitigation_claims({"none": base, "marginal": marginal, "worse": worse}, "none", SERIES))
    row, head = claims["k:marginal"], claims["k"]
    assert row["value"] == pytest.approx(m, abs=1e-12)
    assert row["interval"] == pytest.approx(paired_t(m + 0.02 * e)[1], abs=1e-12)
    assert row["verdict"] == "PASS" and row["interval"][0] > 0
    part = next(p for p in head["parts"] if p["at"] == "marginal")
    assert part["level"] == 0.975 and part["interval"][0] < 0 < part["interval"][1]
    assert part["interval"] == pytest.approx(paired_t(m + 0.02 * e, level=0.975)[1], abs=1e-12)
    assert head["verdict"] == "INCONCLUSIVE" and claims["k:worse"]["verdict"] == "FAIL"
    assert "Bonferroni" in head["rule"]


def test_a_fine_tuning_arm_on_the_baseline_checkpoints_costs_the_base_model_nothing():
    """A replay arm shares the baseline's rows before fine-tuning: base_cost is 0 exactly, said so; its
    task cost is the paired difference of the in-task losses, in nats (not logged)."""
    base = arm(constant(0.30), series_noise=SPREAD, seed=3)
    replay = pd.concat([before(), after(constant(0.25), seed=4, task=1.6, replay=0.1)])
    row = by_claim(mitigation_claims({"none": base, "replay": replay}, "none", SERIES))["k:replay"]
    assert row["base_cost"]["value"] == 0.0 and row["base_cost"]["interval"] == [0.0, 0.0]
    assert "0 exactly" in row["base_cost"]["method"] and row["base_cost"]["verdict"] == "INCONCLUSIVE"
    d = per_series(replay, T[-1], "finetune_loss", log=False) - per_series(base, T[-1], "finetune_loss", log=False)
    value, interval = paired_t(d)
    assert row["task_cost"]["value"] == pytest.approx(value, abs=1e-12) and value == pytest.approx(0.1, abs=0.02)
    assert row["task_cost"]["interval"] == pytest.approx(interval, abs=1e-12)
    assert row["setting"] == {"arm": "reg=0, replay=0.1", "baseline": "reg=0"}


def test_t_star_is_later_when_the_arm_still_falls_where_the_baseline_turns():
    """Baseline forgetting 0.02 T / 1e6 on a clean loss falling as -0.2 ln T: a U with its minimum near
    10M tokens; an arm with a constant forgetting still falls at 32M ("above"): T* later, PASS; the
    other way round FAIL; two U's (the arm's minimum near 20M): the log ratio of the pooled T*."""
    u = arm(lambda t: 0.02 * t / 1e6, seed=5)
    falling = arm(constant(0.1), seed=6)
    later_u = arm(lambda t: 0.01 * t / 1e6, seed=7)
    claims = by_claim(mitigation_claims({"none": u, "flat": falling, "u2": later_u}, "none", SERIES))
    shift = claims["k:flat"]["t_star_shift"]
    assert shift["kind"] == {"arm": "above", "baseline": "interior"} and shift["verdict"] == "PASS"
    assert math.isnan(shift["value"]) and 5e6 < shift["t_star"]["baseline"] < 16e6
    both = claims["k:u2"]["t_star_shift"]
    assert both["kind"] == {"arm": "interior", "baseline": "interior"} and both["verdict"] == "PASS"
    assert both["value"] == pytest.approx(math.log(both["t_star"]["arm"] / both["t_star"]["baseline"]), abs=1e-12)
    assert 0.3 < both["value"] < 1.0
    reverse = by_claim(mitigation_claims({"none": falling, "u": u}, "none", SERIES))["k:u"]["t_star_shift"]
    assert reverse["verdict"] == "FAIL" and "later" in reverse["rule"]


def test_missing_or_thin_arms_are_inconclusive_with_the_reason():
    base = arm(constant(0.30), series_noise=SPREAD)
    arms = {
        "none": base,
        "absent": None,
        "one": arm(constant(0.2), n_series=1),
        "elsewhere": arm(constant(0.2), times=T * 3),  # no checkpoint the baseline measured
    }
    claims = by_claim(mitigation_claims(arms, "none", SERIES))
    reasons = {a: claims[f"k:{a}"]["rule"] for a in ("absent", "one", "elsewhere")}
    assert all(r.startswith("no data") for r in reasons.values())
    assert (
        "absent" in reasons["absent"]
        and "1 paired series" in reasons["one"]
        and "no checkpoint" in reasons["elsewhere"]
    )
    assert all(claims[f"k:{a}"]["verdict"] == "INCONCLUSIVE" for a in reasons)
    assert math.isnan(claims["k:absent"]["base_cost"]["value"]) and claims["k"]["verdict"] == "INCONCLUSIVE"
    no_base = by_claim(mitigation_claims({"none": None, "x": base}, "none", SERIES))
    assert no_base["k:x"]["rule"].startswith("no data") and "baseline" in no_base["k:x"]["rule"]
    assert mitigation_claims({"none": base}, "none", SERIES)[0]["verdict"] == "INCONCLUSIVE"


def test_the_largest_common_checkpoint_the_lr_and_the_setting_are_chosen_as_documented():
    base = pd.concat([arm(constant(0.30), series_noise=SPREAD), after(constant(5.0), lr=1e-2)])
    short = arm(constant(0.20), times=T[:-1], seed=8)  # measured up to 16M only
    row = by_claim(mitigation_claims({"none": base, "short": short}, "none", SERIES))["k:short"]
    assert row["pretrain_time"] == T[-2] and row["verdict"] == "PASS"  # the one common lr: 1e-3
    assert row["value"] == pytest.approx(
        (forgetting_at(base[base.lr != 1e-2], T[-2]) - forgetting_at(short, T[-2])).mean(), abs=1e-12
    )
    two = pd.concat([short, after(constant(4.0), lr=1e-2, times=T[:-1])])
    none_given = by_claim(mitigation_claims({"none": base, "two": two}, "none", SERIES))["k:two"]
    assert none_given["rule"].startswith("no data") and "0.001, 0.01" in none_given["rule"]
    given_lr = by_claim(mitigation_claims({"none": base, "two": two}, "none", SERIES, lr=1e-2))["k:two"]
    assert given_lr["value"] == pytest.approx(1.0, abs=0.02) and given_lr["lr"] == 1e-2
    # tuned-lr rows and another step count are not read; two pulls in one table are refused
    stray = after(constant(9.0)).assign(lr_policy="tuned")
    longer = after(constant(9.0), times=T[:2]).assign(steps=100)  # fewer rows: not the modal step count
    noisy = by_claim(mitigation_claims({"none": base, "short": pd.concat([short, stray, longer])}, "none", SERIES))
    assert noisy["k:short"]["value"] == row["value"]
    pulls = pd.concat([before(), after(constant(0.2), reg=0.1), after(constant(0.2)).assign(reg=0.3)])
    refused = by_claim(mitigation_claims({"none": base, "l2": pulls}, "none", SERIES))["k:l2"]
    assert "several fine-tuning settings" in refused["rule"]


@settings(derandomize=True, max_examples=15, deadline=None)
@given(
    st.floats(0.05, 0.6),
    st.floats(0.05, 0.6),
    st.integers(0, 1000),
)
def test_swapping_arm_and_baseline_negates_the_reduction(f_base, f_arm, seed):
    a = arm(constant(f_base), series_noise=SPREAD, seed=seed)
    b = arm(constant(f_arm), series_noise=SPREAD[::-1], seed=seed + 1, shift=0.02)
    forward = by_claim(mitigation_claims({"a": a, "b": b}, "a", SERIES))["k:b"]
    backward = by_claim(mitigation_claims({"b": b, "a": a}, "b", SERIES))["k:a"]
    assert backward["value"] == pytest.approx(-forward["value"], abs=1e-12)
    assert backward["interval"] == pytest.approx([-forward["interval"][1], -forward["interval"][0]], abs=1e-12)
    assert backward["base_cost"]["value"] == pytest.approx(-forward["base_cost"]["value"], abs=1e-12)
    assert backward["task_cost"]["value"] == pytest.approx(-forward["task_cost"]["value"], abs=1e-12)
    assert {forward["verdict"], backward["verdict"]} in ({"PASS", "FAIL"}, {"INCONCLUSIVE"})


def test_two_checkpoints_give_a_reduction_and_no_t_star_and_the_rows_render():
    base = arm(constant(0.30), series_noise=SPREAD, times=T[:2])
    rows = mitigation_claims({"none": base, "wd": arm(constant(0.1), times=T[:2])}, "none", SERIES)
    row = by_claim(rows)["k:wd"]
    assert row["verdict"] == "PASS" and row["pretrain_time"] == T[1]
    assert row["t_star_shift"]["kind"] == {"arm": "none", "baseline": "none"}
    assert row["t_star_shift"]["verdict"] == "INCONCLUSIVE"
    table = render_markdown(rows)
    assert "| k:wd |" in table and "| k |" in table and STATEMENTS["k"] in table
