"""Claims q, q', i and j on tables whose truth is built in: the verdict each rule must give, and the
number it must report."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.modification_claims import anneal_claims, multimodal_claims, quantization_claims, trunk_claims

T = np.array([1e6, 2e6, 4e6, 8e6, 16e6, 32e6])
SERIES = "series_seed"


def table(modification: str, levels, excess, n_series=4, draws=2, noise=0.002, seed=0, prefix="") -> pd.DataFrame:
    """Rows of ``n_series`` series: log ppl 3 - 0.2 ln(T / 1e6) before the modification, plus
    ``excess(level, T)`` after it, each value with Gaussian ``noise``; ``draws`` draws per level."""
    rng = np.random.default_rng(seed)
    column = {"gaussian": "gamma", "finetune": "lr", "quantization": "bits", "multimodal": "lr"}[modification]
    rows = []
    for s in range(n_series):
        offset = rng.normal(0, 0.01)  # a series' own level: paired designs cancel it
        for t in T:
            clean = 3.0 - 0.2 * math.log(t / 1e6) + offset
            common = dict(checkpoint=f"{prefix}t{int(t)}", pretrain_time=t, metric="perplexity", series_seed=s)
            rows.append(common | dict(modification="none", seed=0, value=math.exp(clean + rng.normal(0, noise))))
            for level in levels:
                for k in range(draws):
                    value = math.exp(clean + excess(level, t) + rng.normal(0, noise))
                    rows.append(common | {"modification": modification, column: level, "seed": k, "value": value})
    frame = pd.DataFrame(rows)
    if modification in ("finetune", "multimodal"):
        frame = frame.assign(lr_policy="fixed", reg=0.0, steps=400)
    if modification == "multimodal":
        frame = frame.assign(stage=np.where(frame.modification == "multimodal", "joint", ""))
    if modification == "quantization":
        frame = frame.assign(rounding="nearest")
    return frame


def growing(level, t):
    return 0.01 * level * (t / 1e6) ** 0.5


def by_claim(claims):
    return {c["claim"]: c for c in claims}


def test_quantization_excess_that_grows_passes_q_and_a_u_shape_passes_q_prime():
    # 3 bits: the excess outgrows the falling clean loss (a U); 8 bits: a tiny excess that still grows.
    excess = lambda b, t: (0.02 if b == 3 else 0.0005) * t / 1e6  # noqa: E731  (3 bits: minimum at 8M)
    claims = by_claim(quantization_claims(table("quantization", (8, 3), excess), SERIES))
    assert claims["q"]["verdict"] == "PASS" and claims["q"]["n_series"] == 4
    assert [p["at"] for p in claims["q"]["parts"]] == ["bits=3", "bits=8"]
    assert claims["q'"]["verdict"] == "PASS" and claims["q'"]["at"].startswith("bits=3")


def test_a_falling_quantization_excess_fails_q():
    excess = lambda b, t: 0.5 / (t / 1e6) ** 0.5  # noqa: E731
    claims = by_claim(quantization_claims(table("quantization", (4,), excess), SERIES))
    assert claims["q"]["verdict"] == "FAIL" and claims["q'"]["verdict"] == "FAIL"  # monotone: no U


def test_stochastic_rounding_rows_are_not_read_and_missing_tables_say_why():
    frame = table("quantization", (4,), growing)
    noise = frame[frame.modification == "quantization"].assign(rounding="stochastic", value=1e6)
    claims = by_claim(quantization_claims(pd.concat([frame, noise], ignore_index=True), SERIES))
    assert claims["q"]["verdict"] == "PASS"
    empty = by_claim(quantization_claims(None, SERIES))
    assert empty["q"]["rule"].startswith("no data") and empty["q'"]["verdict"] == "INCONCLUSIVE"


def test_trunk_sensitivity_is_judged_per_modification_and_every_modification_for_the_head():
    trunk = {
        "gaussian": table("gaussian", (1.0, 2.0), growing, prefix="trunk-"),
        "finetune": table("finetune", (1e-3,), lambda lr, t: 0.3, prefix="trunk-"),  # flat: no trend
        "quantization": None,
    }
    claims = by_claim(trunk_claims(trunk, SERIES))
    assert claims["i:gaussian"]["verdict"] == "PASS" and claims["i:finetune"]["verdict"] == "INCONCLUSIVE"
    assert claims["i:quantization"]["rule"].startswith("no data")
    assert claims["i"]["verdict"] == "INCONCLUSIVE" and list(claims)[0] == "i"


def test_the_paired_anneal_gap_is_the_built_in_difference_with_its_interval():
    """Annealed excess = trunk excess + 0.05 nats at every checkpoint: j reports 0.05 and PASSes; the
    series' own offsets cancel in the pairing."""
    trunk = table("gaussian", (1.0,), growing, seed=1, prefix="trunk-")
    annealed = table("gaussian", (1.0,), lambda g, t: growing(g, t) + 0.05, seed=2)
    claims = by_claim(anneal_claims({"gaussian": annealed}, {"gaussian": trunk}, SERIES))
    j = claims["j:gaussian"]
    assert j["verdict"] == "PASS" and j["value"] == pytest.approx(0.05, abs=0.004)
    assert j["interval"][0] < 0.05 < j["interval"][1] and j["n_series"] == 4 and j["n_draws"] == 2
    assert j["checkpoints"] == list(T)
    assert claims["j"]["verdict"] == "PASS"
    reverse = by_claim(anneal_claims({"gaussian": trunk}, {"gaussian": annealed}, SERIES))
    assert reverse["j:gaussian"]["verdict"] == "FAIL" and reverse["j:gaussian"]["value"] == pytest.approx(
        -0.05, abs=0.004
    )


def test_fine_tuning_rows_with_a_pull_or_a_tuned_lr_are_left_out_of_the_anneal_gap():
    trunk = table("finetune", (1e-3,), growing, prefix="trunk-")
    annealed = table("finetune", (1e-3,), lambda lr, t: growing(lr, t) + 0.1)
    stray = annealed[annealed.modification == "finetune"]
    extra = pd.concat([stray.assign(reg=1.0, value=1e3), stray.assign(lr_policy="tuned", value=1e3)])
    claims = by_claim(anneal_claims({"finetune": pd.concat([annealed, extra])}, {"finetune": trunk}, SERIES))
    assert claims["j:finetune"]["value"] == pytest.approx(0.1, abs=0.004)
    missing = by_claim(anneal_claims({}, {"finetune": trunk}, SERIES))
    assert missing["j:finetune"]["rule"].startswith("no data") and missing["j"]["verdict"] == "INCONCLUSIVE"


def test_multimodal_forgetting_is_read_after_stage_two_only():
    """Stage-1 rows (the projector alone: the model unchanged) are not read: (m) is the joint stage's
    forgetting, here growing at both lrs, with a U at the larger one."""
    excess = lambda lr, t: (20 if lr == 1e-3 else 40) * lr * t / 1e6  # noqa: E731  (1e-3: minimum at 8M)
    frame = table("multimodal", (1e-4, 1e-3), excess)
    stage1 = frame[frame.modification == "multimodal"].assign(stage="projector", value=1e3)
    claims = by_claim(multimodal_claims(pd.concat([frame, stage1], ignore_index=True), SERIES))
    assert claims["m"]["verdict"] == "PASS" and [p["at"] for p in claims["m"]["parts"]] == ["lr=0.0001", "lr=0.001"]
    assert claims["m'"]["verdict"] == "PASS" and claims["m'"]["at"].startswith("lr=0.001")
