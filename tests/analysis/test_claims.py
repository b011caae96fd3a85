"""``analysis.claims``: each claim PASSes on curves built to satisfy it, FAILs on curves built to violate
it, and is INCONCLUSIVE when the noise swamps it or the data are missing; the statistics match what
the construction implies.

Construction (log perplexity, x = tokens / 1M on 8 doubling checkpoints 1..128): the base
L0(x) = 2 + b x^-0.3 (b = 2, 2% per series), a Gaussian excess gamma^2 c x^0.5 (c = 0.02) times a
draw factor (1 + 0.05 z_k, the same draw k at every checkpoint and gamma) plus small independent
noise, so the perturbed curve has its minimum at x* = (0.6 b / (gamma^2 c))^1.25: 61, 30, 11 for
gamma = 1.5, 2, 3 (earlier for larger gamma). Fine-tuning adds h x^0.5 with h growing with lr.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis import claim_text, ranks
from analysis import claims as cl
from analysis.inflection import vertex_minimum
from rundir.derived import finetune_inflection_rows, perturb_inflection_rows
from rundir.store import block, validate

X = 2.0 ** np.arange(8)
T = 1e6 * X
NAMES = [f"step{i}-tokens{int(x)}M" for i, x in enumerate(X)]
GAMMAS = (1.5, 2.0, 3.0)
C = 0.02
LRS = {1e-4: 0.045, 3e-4: 0.08, 1e-3: 0.18}  # lr -> h: x* = 61, 30, 11 (earlier for larger lr)


def base_curve(x, b=2.0):
    return 2.0 + b * x**-0.3


def gaussian_excess(gamma, x):
    return gamma**2 * C * x**0.5


def rows(**columns):
    return block(source="llm", setup="synthetic", checkpoint=NAMES, pretrain_time=T, metric="perplexity", **columns)


def perturb_table(excess=gaussian_excess, series=3, draws=8, scale_noise=0.05, noise=0.002, seed=0):
    """Base and Gaussian rows of ``series`` pre-training series, value = exp(log perplexity), plus the
    derived inflection rows (which the claims must ignore)."""
    rng = np.random.default_rng(seed)
    frames = []
    for s in range(series):
        base = base_curve(X, 2.0 * (1 + 0.02 * rng.standard_normal())) + 0.001 * rng.standard_normal(X.size)
        frames.append(rows(modification="none", seed=0, value=np.exp(base), series_seed=s, clean=base))
        scales = 1 + scale_noise * rng.standard_normal(draws)  # draw k: the same noise at every gamma and T
        for g in GAMMAS:
            for k in range(draws):
                clean = base + excess(g, X) * scales[k]
                log_ppl = clean + noise * rng.standard_normal(X.size)
                frames.append(
                    rows(modification="gaussian", gamma=g, seed=k, value=np.exp(log_ppl), series_seed=s, clean=clean)
                )
    table = validate(pd.concat(frames, ignore_index=True))
    return pd.concat([table, perturb_inflection_rows(table)], ignore_index=True)


def finetune_table(h=LRS, tuned=0.04, regs=None, series=3, seeds=1, noise=0.001, seed=1):
    """Fine-tuning rows: log perplexity after fine-tuning = L0 + h(lr) x^0.5 (+ noise per fine-tuning
    seed), ``tuned``: the tuned-lr curve's h (None: no tuned rows), ``regs``: {reg: factor on h}."""
    rng = np.random.default_rng(seed)
    frames = []
    for s in range(series):
        base = base_curve(X, 2.0 * (1 + 0.02 * rng.standard_normal()))
        for j in range(seeds):
            frames.append(rows(modification="none", seed=j, value=np.exp(base), series_seed=s))
            curves = [("fixed", lr, 0.0, hh) for lr, hh in h.items()]
            curves += [("fixed", lr, r, hh * f) for r, f in (regs or {}).items() for lr, hh in h.items()]
            curves += [("tuned", min(h), 0.0, tuned)] if tuned is not None else []
            for policy, lr, reg, hh in curves:
                clean = base + hh * X**0.5
                log_ppl = clean + noise * rng.standard_normal(X.size)
                common = {"modification": "finetune", "lr": lr, "steps": 60.0, "reg": reg, "seed": j}
                frames.append(rows(**common, lr_policy=policy, value=np.exp(log_ppl), series_seed=s, clean=clean))
                frames.append(rows(**common, lr_policy=policy, value=0.5, series_seed=s).assign(metric="finetune_loss"))
    table = validate(pd.concat(frames, ignore_index=True))
    return pd.concat([table, finetune_inflection_rows(table)], ignore_index=True)


def by_id(claims):
    return {c["claim"]: c for c in claims}


def clean(table, **selection):
    """The noise-free curves of the selected rows: [series, time], each the mean over its draws of the
    constructed log perplexity (no measurement noise)."""
    table = table[table.checkpoint != "inflection"]
    for name, value in selection.items():
        table = table[table[name] == value]
    return table.pivot_table(index="series_seed", columns="pretrain_time", values="clean", aggfunc="mean").to_numpy()


def per_series(stat, *curves):
    """The mean over series of ``stat`` of each series' noise-free curves: what the claims estimate."""
    return float(np.mean([stat(*c) for c in zip(*curves)]))


def true_curve(gamma=None, h=None):
    return base_curve(X) + (gaussian_excess(gamma, X) if gamma is not None else h * X**0.5)


def log_step(y1, y2):
    return math.log(vertex_minimum(T, y2, np.float64) / vertex_minimum(T, y1, np.float64))


def sides(curves):
    """(fall, rise) of constructed curves [series, time] at the interior minimum of their mean."""
    i = 1 + int(np.argmin(curves.mean(0)[1:-1]))
    return per_series(lambda y: y[0] - y[i], curves), per_series(lambda y: y[-1] - y[i], curves)


def rise(curves):
    """The rise of constructed curves from the minimum of their mean before the last point to the last point."""
    i = int(np.argmin(curves.mean(0)[:-1]))
    return per_series(lambda y: y[-1] - y[i], curves)


def traces(factor=1.0):
    """The noise-weighted Hessian trace W with gamma^2 W / 2 = the construction's excess (times factor)."""
    return pd.DataFrame({"checkpoint": NAMES, "trace": factor * 2 * C * X**0.5})


GAUSS = {"modification": "gaussian", "metric": "perplexity"}
FIXED = {"modification": "finetune", "metric": "perplexity", "lr_policy": "fixed"}
TUNED = {"modification": "finetune", "metric": "perplexity", "lr_policy": "tuned"}


@pytest.fixture(scope="module")
def built():
    perturb, finetune = perturb_table(), finetune_table(regs={1.0: 0.5})
    return perturb, finetune, by_id(cl.evaluate_claims(perturb, finetune, traces()))


def test_every_claim_passes_on_curves_built_to_satisfy_it(built):
    perturb, finetune, good = built
    ids = ["a", "a'", *"bcdefgh"]
    assert {c: good[c]["verdict"] for c in ids} == dict.fromkeys(ids, "PASS")
    for c in good.values():
        assert c["n_series"] == 3 and c["rule"] == claim_text.RULES[c["claim"].split(":")[0]]
        if c["claim"] in ("a", "a'"):
            continue
        assert c["interval"][0] <= c["value"] <= c["interval"][1]
        assert "Student-t over 3 pre-training series" in c["method"]
    # (a) every series' excess rises at every checkpoint: rho = 1 exactly, at every gamma, with the
    # exact probability of rho = 1 in 3 of 3 series under the null: (1 / 8!)^3.
    assert good["a"]["value"] == 1.0 and good["a"]["interval"] is None and good["a"]["n_draws"] == 8
    assert good["a"]["p_value"] == pytest.approx(math.factorial(8) ** -3, rel=1e-9)
    assert [p["at"] for p in good["a"]["parts"]] == ["gamma=1.5", "gamma=2", "gamma=3"]
    # (a') forgetting F = h x^0.5 rises at every lr: rho = 1 in every series.
    assert good["a'"]["value"] == 1.0 and [p["at"] for p in good["a'"]["parts"]] == [f"lr={x:g}" for x in LRS]
    assert good["a'"]["per_series"] == [1.0, 1.0, 1.0]
    # (b) at each gamma the fall to and the rise from the interior minimum (x = 64, 32, 8) are the
    # constructed curves'; the strongest gamma (3) reports its weaker side (the fall).
    b = good["b"]
    assert [p["t_min"] for p in b["parts"]] == [64e6, 32e6, 8e6] and [p["kind"] for p in b["parts"]] == ["interior"] * 3
    for gamma, part in zip(GAMMAS, b["parts"]):
        fall, rise_ = sides(clean(perturb, **GAUSS, gamma=gamma))
        assert [p["value"] for p in part["parts"]] == [pytest.approx(fall, abs=2e-3), pytest.approx(rise_, abs=2e-3)]
    assert b["at"] == "gamma=3, fall" and b["value"] == b["parts"][2]["parts"][0]["value"]
    assert b["parts"][0]["at"] == "gamma=1.5, rise" and b["parts"][0]["value"] == pytest.approx(0.036, abs=0.005)
    # (c) log T*(2) - log T*(1.5), log T*(3) - log T*(2): the grid-refined minima of the constructed curves.
    c = good["c"]
    curves = [clean(perturb, **GAUSS, gamma=g) for g in GAMMAS]
    assert [p["value"] for p in c["parts"]] == [
        pytest.approx(per_series(log_step, *curves[:2]), abs=0.02),
        pytest.approx(per_series(log_step, *curves[1:]), abs=0.02),
    ]
    assert c["at"] == "gamma=1.5->2" and c["value"] == pytest.approx(
        log_step(true_curve(1.5), true_curve(2.0)), abs=0.1
    )
    # (d), (e): the same for lr.
    fixed = [clean(finetune, **FIXED, reg=0.0, lr=lr) for lr in LRS]
    assert good["d"]["at"] == "lr=0.001, fall" and good["d"]["value"] == pytest.approx(sides(fixed[2])[0], abs=2e-3)
    assert good["d"]["parts"][0]["parts"][1]["value"] == pytest.approx(sides(fixed[0])[1], abs=2e-3)
    assert good["e"]["at"] == "lr=0.0001->0.0003"
    assert good["e"]["value"] == pytest.approx(per_series(log_step, *fixed[:2]), abs=0.02)
    # (f) the tuned rise, and the mean fixed-lr rise minus it; the weaker (the tuned rise) is reported.
    tuned = clean(finetune, **TUNED)
    f = good["f"]
    assert [p["at"] for p in f["parts"]] == ["tuned rise", "reduction vs lr=0.0001,0.0003,0.001"]
    assert f["parts"][0]["value"] == pytest.approx(rise(tuned), abs=2e-3) and f["at"] == "tuned rise"
    reduction = np.mean([rise(y) for y in fixed]) - rise(tuned)
    assert f["parts"][1]["value"] == pytest.approx(reduction, abs=2e-3) and reduction > 0.3
    # (g) half the damage at reg = 1: T* later, log shift > 0 at every lr.
    g = good["g"]
    assert [p["at"] for p in g["parts"]] == ["lr=0.0001, reg=1", "lr=0.0003, reg=1", "lr=0.001, reg=1"]
    for lr, y, part in zip(LRS, fixed, g["parts"]):
        pulled = clean(finetune, **FIXED, reg=1.0, lr=lr)
        assert part["value"] == pytest.approx(per_series(log_step, y, pulled), abs=0.02) and part["value"] > 0.3
    # (h) the trace predicts the constructed excess exactly: the ratio is the mean draw factor.
    excess = clean(perturb, **GAUSS, gamma=1.5) - clean(perturb, modification="none")
    factor = excess.sum(1) / gaussian_excess(1.5, X).sum()
    assert good["h"]["at"] == "gamma=1.5" and good["h"]["value"] == pytest.approx(
        np.exp(np.log(factor).mean()), abs=2e-3
    )
    assert cl.HESSIAN_BAND[0] < good["h"]["interval"][0] < good["h"]["interval"][1] < cl.HESSIAN_BAND[1]


def test_perturbation_claims_fail_on_curves_built_to_violate_them():
    # (a) the excess falls with T: rho = -1 at every gamma.
    falling = by_id(cl.evaluate_claims(perturb_table(lambda g, x: g**2 * C * x**-0.5), None))
    assert falling["a"]["verdict"] == "FAIL" and falling["a"]["value"] == -1.0 and falling["a"]["at"] == "gamma=1.5"
    # (b) too little excess for a minimum: every perturbed curve still falls at the end, so its rise
    # from the interior minimum (the last but one point) is negative at every gamma.
    table = perturb_table(lambda g, x: g**2 * 0.001 * x**0.5)
    flat = by_id(cl.evaluate_claims(table, None))
    assert flat["b"]["verdict"] == "FAIL" and [p["verdict"] for p in flat["b"]["parts"]] == ["FAIL"] * 3
    assert [p["at"] for p in flat["b"]["parts"]] == ["gamma=1.5, rise", "gamma=2, rise", "gamma=3, rise"]
    last_step = per_series(lambda y: y[-1] - y[-2], clean(table, **GAUSS, gamma=3.0))
    assert flat["b"]["at"] == "gamma=3, rise" and flat["b"]["value"] == pytest.approx(last_step, abs=2e-3)
    assert flat["b"]["value"] < 0 and flat["b"]["interval"][1] < 0
    assert flat["c"]["verdict"] == "INCONCLUSIVE" and flat["c"]["rule"].startswith("no data: fewer than two gammas")
    # (c) the damage shrinks with gamma (gamma -> 4.5 / gamma): T* later for larger gamma.
    table = perturb_table(lambda g, x: (4.5 / g) ** 2 * C * x**0.5)
    later = by_id(cl.evaluate_claims(table, None))["c"]
    curves = [clean(table, **GAUSS, gamma=g) for g in GAMMAS]
    assert later["verdict"] == "FAIL" and [p["verdict"] for p in later["parts"]] == ["FAIL", "FAIL"]
    assert [p["value"] for p in later["parts"]] == [
        pytest.approx(per_series(log_step, *curves[:2]), abs=0.02),
        pytest.approx(per_series(log_step, *curves[1:]), abs=0.02),
    ]
    assert later["parts"][0]["value"] == pytest.approx(log_step(true_curve(3.0), true_curve(2.25)), abs=0.1)
    # (h) a trace twice too large: ratio 1/2, outside the band.
    h = by_id(cl.evaluate_claims(perturb_table(), None, traces(2.0)))["h"]
    assert h["verdict"] == "FAIL" and h["value"] == pytest.approx(0.5, abs=0.02) and h["interval"][1] < 0.8


def test_finetuning_claims_fail_on_curves_built_to_violate_them():
    reversed_lrs = dict(zip(LRS, reversed(LRS.values())))  # T* later for larger lr
    table = finetune_table(h=reversed_lrs, tuned=0.01, regs={1.0: 2.0})
    found = by_id(cl.evaluate_claims(None, table))
    fixed = [clean(table, **FIXED, reg=0.0, lr=lr) for lr in LRS]
    assert found["e"]["verdict"] == "FAIL" and [p["verdict"] for p in found["e"]["parts"]] == ["FAIL", "FAIL"]
    assert found["e"]["parts"][0]["value"] == pytest.approx(per_series(log_step, *fixed[:2]), abs=0.02)
    # (f) a tuned curve still falling at the end: the degradation removed, the tuned rise negative.
    f = found["f"]
    assert f["verdict"] == "FAIL" and f["at"] == "tuned rise" and f["interval"][1] < 0
    assert f["value"] == pytest.approx(rise(clean(table, **TUNED)), abs=2e-3)
    # ... and a tuned curve worse than every fixed lr: the degradation not reduced.
    table = finetune_table(tuned=0.5)
    worse = by_id(cl.evaluate_claims(None, table))["f"]
    fixed = [clean(table, **FIXED, lr=lr) for lr in LRS]
    assert worse["verdict"] == "FAIL" and worse["at"].startswith("reduction") and worse["parts"][0]["verdict"] == "PASS"
    assert worse["value"] == pytest.approx(np.mean([rise(y) for y in fixed]) - rise(clean(table, **TUNED)), abs=2e-3)
    # (g) twice the damage at reg = 1: T* earlier at every lr.
    g = found["g"]
    assert g["verdict"] == "FAIL" and all(p["verdict"] == "FAIL" and p["value"] < -0.3 for p in g["parts"])
    # (d) too little damage: every fixed-lr curve still falls at the end.
    falling = by_id(cl.evaluate_claims(None, finetune_table(h={1e-4: 0.005, 1e-3: 0.01})))["d"]
    assert falling["verdict"] == "FAIL" and falling["at"].endswith("rise") and falling["interval"][1] < 0


def test_noise_that_swamps_the_effect_is_inconclusive():
    """Measurement noise far above the effects (0.3-2 nats against excesses of 0.05-1): the intervals
    straddle the thresholds."""
    noisy = by_id(
        cl.evaluate_claims(
            perturb_table(scale_noise=0.3, noise=2.0), finetune_table(noise=0.6, regs={1.0: 0.5}, seed=0)
        )
    )
    noisy["h"] = by_id(cl.evaluate_claims(perturb_table(scale_noise=0.6), None, traces()))["h"]
    for claim, edge in zip("bcdefgh", [0, 0, 0, 0, 0, 0, cl.HESSIAN_BAND[0]]):
        lo, hi = noisy[claim]["interval"]
        assert noisy[claim]["verdict"] == "INCONCLUSIVE" and lo < edge < hi, claim
    # The rank claims: neither direction significant.
    for claim in ("a", "a'"):
        assert (
            noisy[claim]["verdict"] == "INCONCLUSIVE" and min(noisy[claim]["p_value"], noisy[claim]["p_down"]) > 0.025
        )
    assert noisy["h"]["value"] == pytest.approx(1.0, abs=0.3) and noisy["h"]["interval"][1] > 1.25


def test_one_series_uses_a_paired_bootstrap_over_its_draws():
    perturb, finetune = perturb_table(series=1), finetune_table(series=1, seeds=4)
    one = by_id(cl.evaluate_claims(perturb, finetune, traces()))
    assert {c: one[c]["verdict"] for c in "abcdefh"} == dict.fromkeys("abcdefh", "PASS")
    for c in "bcdefh":
        assert one[c]["n_series"] == 1 and "paired bootstrap over its" in one[c]["method"]
    assert one["b"]["n_draws"] == 8 and one["d"]["n_draws"] == 4 and "dof 7" in one["b"]["method"]
    # One series' rho = 1 of 8 checkpoints: p = 1 / 8!, exact.
    assert one["a"]["value"] == 1.0 and one["a"]["p_value"] == pytest.approx(1 / math.factorial(8))
    assert "mean over 1 series" in one["a"]["method"] and "exact (8! orderings)" in one["a"]["method"]
    fall, rise_ = sides(clean(perturb, **GAUSS, gamma=1.5))
    values = [p["value"] for p in one["b"]["parts"][0]["parts"]]
    assert values == [pytest.approx(fall, abs=2e-3), pytest.approx(rise_, abs=2e-3)]
    # One series with one draw (a single fine-tuning run): nothing varies, no interval.
    single = by_id(cl.evaluate_claims(None, finetune_table(series=1, seeds=1)))["d"]
    assert single["interval"] is None and single["verdict"] == "INCONCLUSIVE" and single["value"] > 0
    assert single["method"] == "none (one series, one draw: nothing varies)"


def test_missing_data_is_inconclusive_with_a_no_data_rule():
    none = cl.evaluate_claims(None, None)
    assert [c["claim"] for c in none] == ["a", "a'", *"bcdefgh"]
    assert all(c["verdict"] == "INCONCLUSIVE" and c["rule"].startswith("no data") for c in none)
    found = by_id(cl.evaluate_claims(perturb_table(series=2, draws=3), finetune_table(tuned=None)))
    assert found["g"]["rule"] == "no data: no fine-tuning rows with reg > 0"
    assert found["f"]["rule"] == "no data: no tuned-lr rows (lr_policy 'tuned')"
    assert found["h"]["rule"] == "no data: no Hessian-trace table"
    assert found["a"]["verdict"] == "PASS" and found["a"]["n_series"] == 2 and found["a"]["n_draws"] == 3


def test_a_table_without_a_series_column_is_one_series():
    table = perturb_table(series=1).drop(columns="series_seed")
    a = by_id(cl.evaluate_claims(table, None))["a"]
    assert a["n_series"] == 1 and a["verdict"] == "PASS"
    renamed = perturb_table(series=2).rename(columns={"series_seed": "run"})
    assert by_id(cl.evaluate_claims(renamed, None, series_column="run"))["a"]["n_series"] == 2


def test_render_markdown_is_one_row_per_claim(built):
    good = built[2]
    text = claim_text.render_markdown(list(good.values()) + cl.evaluate_claims(None, None)[:1])
    lines = text.strip().splitlines()
    assert lines[0].startswith("| claim | statement | statistic | value | 95% interval or p | n | verdict | rule |")
    # a, a', b-h, then h at each of the 3 gammas, then the no-data row.
    assert len(lines) == 2 + 9 + 3 + 1 and lines[2].startswith("| a | Sensitivity")
    assert "| 1 (gamma=1.5) | p = 1.5e-14 | 3 series x 8 draws | **PASS** |" in lines[2] and "\\|" not in text
    assert [line.split(" | ")[0] for line in lines[11:14]] == ["| h:gamma=1.5", "| h:gamma=2", "| h:gamma=3"]
    assert "| - | - | 0 series x 0 draws | **INCONCLUSIVE** | no data: no perturbation table |" in lines[-1]


def test_traces_per_series_and_a_diverged_draw():
    perturb = perturb_table()
    same = by_id(cl.evaluate_claims(perturb, None, traces()))["h"]
    # One trace per series (and one of a series the table lacks, ignored) = the shared trace.
    per = pd.concat([traces().assign(series_seed=s) for s in (0, 1, 2)] + [traces(1e9).assign(series_seed=7)])
    assert by_id(cl.evaluate_claims(perturb, None, per))["h"]["value"] == pytest.approx(same["value"], rel=1e-12)
    # Series 0's trace doubled halves its ratio: the geometric mean over series falls by 2^(-1/3).
    doubled = pd.concat([traces(2.0 if s == 0 else 1.0).assign(series_seed=s) for s in (0, 1, 2)])
    h = by_id(cl.evaluate_claims(perturb, None, doubled))["h"]
    assert h["value"] == pytest.approx(same["value"] * 2 ** (-1 / 3), rel=1e-12)
    # A diverged draw (perplexity inf) is left out of its checkpoint's mean; the claims still stand.
    row = (perturb.modification == "gaussian") & (perturb.gamma == 3.0) & (perturb.seed == 0)
    perturb.loc[row & (perturb.pretrain_time == T[-1]), ["value", "diverged"]] = [np.inf, True]
    found = by_id(cl.evaluate_claims(perturb, None, traces()))
    assert [found[c]["verdict"] for c in "abch"] == ["PASS"] * 4 and found["a"]["n_draws"] == 8


def test_forgetting_that_falls_with_pretraining_fails_a_prime():
    """F(T) = -h x^0.5 (each later checkpoint forgets less): rho = -1 in every series, FAIL at every lr."""
    table = finetune_table(h={lr: -hh for lr, hh in LRS.items()})
    found = by_id(cl.evaluate_claims(None, table))["a'"]
    assert found["verdict"] == "FAIL" and found["value"] == -1.0
    assert found["p_down"] == pytest.approx(math.factorial(8) ** -3, rel=1e-9) and found["p_value"] == 1.0
    assert [p["verdict"] for p in found["parts"]] == ["FAIL"] * 3
    # Without the checkpoints' own rows there is no F to rank.
    before = table[table.modification != "none"]
    assert by_id(cl.evaluate_claims(None, before))["a'"]["rule"].startswith("no data: no rows of the checkpoints")


def test_rank_test_is_exact_against_enumeration_and_monte_carlo_beyond():
    """P(mean rho >= r) for 2 series of 5 checkpoints by brute force over all 120^2 orderings."""
    import itertools

    T5 = np.arange(5.0)
    rho = []
    for perm in itertools.permutations(range(5)):
        rho.append(1 - 6 * sum((i - p) ** 2 for i, p in enumerate(perm)) / (5 * 24))
    rho = np.array(rho)
    means = (rho[:, None] + rho[None, :]) / 2
    curves = np.array([[0.0, 2.0, 1.0, 3.0, 4.0], [1.0, 0.0, 2.0, 4.0, 3.0]])
    found = ranks.rank_test(T5, curves)
    observed = found["value"]
    assert found["p_up"] == pytest.approx((means >= observed - 1e-12).mean(), rel=1e-12)
    assert found["p_down"] == pytest.approx((means <= observed + 1e-12).mean(), rel=1e-12)
    # Beyond EXACT_RANKS checkpoints, the null comes from seeded permutations: P(rho = 1) ~ 0.
    T12 = np.arange(12.0)
    many = ranks.rank_test(T12, np.sort(np.random.default_rng(0).random((2, 12)), axis=1))
    assert many["value"] == 1.0 and many["p_up"] < 1e-6 and "seeded random orderings" in many["how"]


def test_bonferroni_turns_a_marginal_some_gamma_pass_inconclusive():
    """Gamma 1's U rises by 0.07, 0.10, 0.13 over 3 series (t = 5.8 on 2 dof): above t(0.975) = 4.30,
    so it PASSes alone; beside a second gamma (a falling curve, FAIL), each interval is at level
    1 - 0.05/2 (t(0.9875) = 6.2), and the same data are INCONCLUSIVE."""
    X5 = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    names = [f"step{i}-tokens{int(x)}M" for i, x in enumerate(X5)]

    def series(s, gamma, curve):
        return block(
            source="llm",
            setup="u",
            checkpoint=names,
            pretrain_time=1e6 * X5,
            metric="perplexity",
            modification="gaussian" if gamma else "none",
            gamma=gamma or np.nan,
            seed=0,
            value=np.exp(curve),
            series_seed=s,
        )

    rises = (0.07, 0.10, 0.13)
    frames = [series(s, None, np.zeros(5)) for s in range(3)]
    u = [series(s, 1.0, np.array([1.0, 0.5, 0.0, 0.05, r])) for s, r in enumerate(rises)]
    alone = by_id(cl.evaluate_claims(validate(pd.concat(frames + u)), None))["b"]
    assert alone["verdict"] == "PASS" and alone["at"] == "gamma=1, rise" and alone["level"] == 0.95
    assert alone["value"] == pytest.approx(0.1)
    falling = [series(s, 2.0, np.array([4.0, 3.0, 2.0, 1.0, 0.0]) + 0.01 * s) for s in range(3)]
    both = by_id(cl.evaluate_claims(validate(pd.concat(frames + u + falling)), None))["b"]
    assert both["verdict"] == "INCONCLUSIVE" and [p["verdict"] for p in both["parts"]] == ["INCONCLUSIVE", "FAIL"]
    assert both["parts"][0]["parts"][1]["level"] == 0.975 and "level 0.975" in both["method"]
    assert "Bonferroni" in both["rule"]


def test_hessian_claim_at_every_gamma_finds_where_the_quadratic_identity_breaks():
    """An excess that saturates at gamma^2 = 4 (2.25 and 4 hold exactly; at gamma 3 it is 4/9 of the
    quadratic prediction): h PASSes at the smallest gamma, its rows PASS at 1.5 and 2 and FAIL at 3."""
    table = perturb_table(lambda g, x: min(g**2, 4.0) * C * x**0.5, scale_noise=0.01)
    found = cl.evaluate_claims(table, None, traces())
    head = by_id(found)["h"]
    rows = [c for c in found if c["claim"].startswith("h:")]
    assert head["verdict"] == "PASS" and head["at"] == "gamma=1.5"
    assert [(r["claim"], r["verdict"]) for r in rows] == [
        ("h:gamma=1.5", "PASS"),
        ("h:gamma=2", "PASS"),
        ("h:gamma=3", "FAIL"),
    ]
    assert rows[2]["value"] == pytest.approx(4 / 9, rel=0.02)
    assert head["band"]["holds_at"] == [1.5, 2.0] and head["band"]["breaks_at"] == [3.0]


def test_tuned_claim_leaves_out_runs_at_the_uniform_guess():
    """A fourth lr whose curve sits at log V = 5.5 from the third checkpoint on: without the rule it
    dominates the reduction; with it, that lr is left out and the reduction is the other three's."""
    h = {**LRS, 1e-2: 0.0}
    table = finetune_table(h=h)
    runaway = (table.lr == 1e-2) & (table.metric == "perplexity") & (table.pretrain_time >= T[2])
    table.loc[runaway, "value"] = np.exp(5.5)
    plain = by_id(cl.evaluate_claims(None, table))["f"]
    ruled = by_id(cl.evaluate_claims(None, table, uniform_loss=5.5))["f"]
    assert ruled["parts"][1]["uniform_left_out"] == ["0.01"] and plain["parts"][1]["uniform_left_out"] == []
    fixed = [clean(table, **FIXED, lr=lr) for lr in LRS]
    expected = np.mean([rise(y) for y in fixed]) - rise(clean(table, **TUNED))
    assert ruled["parts"][1]["value"] == pytest.approx(expected, abs=2e-3)
    assert plain["parts"][1]["value"] != pytest.approx(expected, abs=2e-3)
