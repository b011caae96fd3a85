"""``analysis.advice`` and ``analysis.advice_series``: the calibration recovers a known eq. (1), the
advice picks the checkpoint a known truth says is best, and the leave-one-series-out check scores it
on the held-out series alone."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis import advice as adv
from analysis import advice_series as check
from analysis import phenomenology as ph
from rundir import store

T = np.geomspace(1e6, 64e6, 7)
A_TRUE, RHO_TRUE, P_TRUE = 0.5, 0.3, 0.4  # log S = a + p log m + rho log g


def truth_g(scale: float = 1.0) -> np.ndarray:
    return 0.01 * scale * (T / T[0]) ** 0.8  # a Gaussian excess growing with tokens


def truth_base(shift: float = 0.0) -> np.ndarray:
    return 2.0 + shift + (T / 1e6) ** -0.5  # with truth_S: U-shaped after fine-tuning


def truth_S(g: np.ndarray, m: float) -> np.ndarray:
    return np.exp(A_TRUE + P_TRUE * math.log(m) + RHO_TRUE * np.log(g))


def probes(g: np.ndarray, base: np.ndarray, draws: int = 2, spread: float = 0.0, seed: int = 0) -> adv.Probes:
    rng = np.random.default_rng(seed)
    excess = g[:, None, None] * (1 + spread * rng.standard_normal((g.size, 1, draws)))
    return adv.Probes(tuple(f"ckpt{i}" for i in range(T.size)), T, base, excess)


def test_sensitivity_is_the_log_mean_excess_floored_with_the_draws_relative_se():
    excess = np.array([[[0.09, 0.11]], [[0.18, 0.22]], [[-0.01, -0.02]]])
    log_g, se = adv.sensitivity(excess)
    np.testing.assert_allclose(np.exp(log_g), [0.1, 0.2, adv.FLOOR])
    # relative variance of each positive checkpoint: var([0.9, 1.1]) = 0.02; s.e. of the mean of 2 draws
    np.testing.assert_allclose(se, math.sqrt(0.02 / 2))


def test_the_calibration_recovers_eq_1_and_its_size_exponent():
    rng = np.random.default_rng(1)
    g = np.concatenate([truth_g(s) for s in (0.5, 1.0, 2.0)] * 2)
    m = np.repeat([1e-3 * 10, 2e-3 * 10], g.size // 2)
    S = truth_S(g, 1.0) * m**P_TRUE * np.exp(0.01 * rng.standard_normal(g.size))
    fit = adv.forgetting_fit(np.log(g), np.log(m), S)
    assert fit.log and fit.names == ("1", "log g", "log m") and fit.dof == g.size - 3
    np.testing.assert_allclose(fit.coef, [A_TRUE, RHO_TRUE, P_TRUE], atol=0.05)
    assert 0.005 < fit.sd < 0.02


def test_without_positive_excess_the_calibration_is_a_constant_and_says_so():
    fit = adv.forgetting_fit(np.log([0.1, 0.2, 0.3]), 0.0, [-0.1, -0.2, -0.3])
    assert not fit.log and fit.names == ("1",)
    np.testing.assert_allclose(fit.coef, [-0.2])
    result = adv.advise(probes(truth_g(), truth_base()), fit, 0.0)
    assert any("taken as constant" in c for c in result.caveats)
    assert result.choice == T.size - 1  # a constant excess: the lowest base loss wins
    with pytest.raises(ValueError, match="do not determine"):
        adv.fit_ols(np.ones((1, 1)), np.ones(1), ("1",), log=False)


def test_the_advice_picks_the_true_minimum_and_its_intervals_cover_it():
    g, base, m = truth_g(), truth_base(), 0.5
    post = base + truth_S(g, m)
    fit = adv.forgetting_fit(
        np.log(np.tile(g, 3)), math.log(m), np.tile(truth_S(g, m), 3) * np.exp([0.01, -0.01, 0] * 7)
    )
    result = adv.advise(probes(g, base), fit, math.log(m), seed=3)
    assert result.choice == int(np.argmin(post)) and 0 < result.choice < T.size - 1  # interior: U-shaped
    np.testing.assert_allclose(result.loss, post, rtol=1e-3)
    assert np.all((result.loss_interval[:, 0] <= post) & (post <= result.loss_interval[:, 1]))
    assert result.choice in result.short_list
    assert result.p_best.sum() == pytest.approx(1.0) and result.p_best[result.choice] == result.p_best.max()
    assert result.rows()[result.choice]["advised"]


def test_separated_checkpoints_leave_a_short_list_of_one_and_noise_widens_it():
    g, base = truth_g(), truth_base()
    quiet = adv.Fit(("1", "log g"), np.array([A_TRUE, RHO_TRUE]), np.eye(2) * 1e-10, 1e-6, 20, 22, True)
    noisy = adv.Fit(("1", "log g"), np.array([A_TRUE, RHO_TRUE]), np.eye(2) * 1e-4, 0.3, 20, 22, True)
    sharp = adv.advise(probes(g, base, draws=1), quiet, 0.0)
    wide = adv.advise(probes(g, base, draws=1), noisy, 0.0)
    assert sharp.short_list == (sharp.choice,) and wide.choice == sharp.choice
    assert len(wide.short_list) > 1 and any("not separated" in c for c in wide.caveats)
    assert any("one draw" in c for c in sharp.caveats)


def test_the_decomposition_of_the_prediction_has_the_closed_form_t_star():
    E, A, alpha, C, beta = 2.0, 50.0, 0.3, 1e-3, 0.4
    base = E + A * T**-alpha
    fit = adv.Fit(("1", "log g"), np.array([math.log(C), 1.0]), np.eye(2) * 1e-12, 1e-9, 50, 52, True)
    g = T**beta  # then S = C T^beta exactly
    result = adv.advise(probes(g, base), fit, 0.0)
    d = result.decomposition
    assert d["alpha"] == pytest.approx(alpha, rel=1e-3) and d["beta"] == pytest.approx(beta, rel=1e-6)
    assert d["t_star"] == pytest.approx(float(ph.inflection_time(1.0, A, alpha, C, 0.0, beta)), rel=1e-2)
    lo, hi = d["t_star_interval"]
    assert lo <= d["t_star"] <= hi


# --------------------------------------------------------------------------------- from result rows


def perturb_rows(setup: str, g: np.ndarray, base: np.ndarray, draws: int = 2) -> pd.DataFrame:
    names = [f"ckpt{i}" for i in range(T.size)]
    clean = store.block(
        source="llm", setup=setup, checkpoint=names, pretrain_time=T, modification="none", seed=0,
        metric="perplexity", value=np.exp(base),
    )  # fmt: skip
    noisy = [
        store.block(
            source="llm", setup=setup, checkpoint=names, pretrain_time=T, modification="gaussian", gamma=gamma,
            seed=k, metric="perplexity", value=np.exp(base + g * gamma * (1 + 0.01 * k)),
        )
        for gamma in (1.0, 2.0) for k in range(draws + 1)
    ]  # fmt: skip
    return pd.concat([clean, *noisy], ignore_index=True)


def finetune_rows(setup: str, post: dict, task: dict, orders: int = 1) -> pd.DataFrame:
    names = [f"ckpt{i}" for i in range(T.size)]
    frames = []
    for (lr, steps), values in post.items():
        for seed in range(orders):
            for metric, v in (("perplexity", np.exp(values + 0.01 * seed)), ("finetune_loss", task[(lr, steps)])):
                frames.append(
                    store.block(
                        source="llm", setup=setup, checkpoint=names, pretrain_time=T, modification="finetune",
                        lr=lr, steps=steps, reg=0.0, seed=seed, metric=metric, value=v, lr_policy="fixed",
                    )
                )  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def test_probes_and_fine_tuning_are_read_from_store_rows():
    g, base = truth_g(), truth_base()
    p = adv.probes_of(perturb_rows("s", g, base, draws=3), (1.0,), 2)
    assert p.names == tuple(f"ckpt{i}" for i in range(T.size)) and p.excess.shape == (T.size, 1, 2)
    np.testing.assert_allclose(p.base, base)
    np.testing.assert_allclose(p.excess[:, 0, 1], g * 1.01, rtol=1e-9)
    with pytest.raises(ValueError, match="no 5 draw"):
        adv.probes_of(perturb_rows("s", g, base), (1.0,), 5)
    post = {(1e-3, 100.0): base + 0.3}
    found = adv.finetuned(finetune_rows("s", post, {(1e-3, 100.0): base}, orders=2), p.names, "perplexity")
    assert list(found) == [(1e-3, 100.0)] and found[(1e-3, 100.0)].shape == (T.size, 2)
    np.testing.assert_allclose(found[(1e-3, 100.0)][:, 1], base + 0.31)


def test_a_fine_tuning_probe_at_two_lrs_calibrates_eq_1_with_its_size_exponent():
    g, base = truth_g(), truth_base()
    p = adv.probes_of(perturb_rows("s", g, base), (1.0,), 2)
    picks = [0, 3, 6]
    post = {(lr, 10.0): base + truth_S(g, lr * 10.0) for lr in (1e-3, 2e-3)}
    tuned = finetune_rows("s", post, {k: base - 1 for k in post})
    tuned = tuned[tuned.checkpoint.isin([f"ckpt{i}" for i in picks])]
    clean = perturb_rows("s", g, base)
    tuned = pd.concat([tuned, clean[(clean.modification == "none") & clean.checkpoint.isin(tuned.checkpoint)]])
    forgetting, task, points = adv.probe_fits(p, tuned)
    assert len(points) == 6 and forgetting.names == ("1", "log g", "log m")
    # The probe's g is the mean over 2 draws (x 1.005): the intercept absorbs rho log 1.005.
    np.testing.assert_allclose(forgetting.coef, [A_TRUE - RHO_TRUE * math.log(1.005), RHO_TRUE, P_TRUE], atol=1e-6)
    np.testing.assert_allclose(task.coef[:2], [-1.0, 1.0], atol=1e-9)


# ------------------------------------------------------------------------------ leave one series out


def study(noise: float = 0.0, orders: int = 1) -> list[check.Series]:
    """Two setups of three seeds each; every series' fine-tuning follows eq. (1) exactly (plus noise)."""
    rng = np.random.default_rng(7)
    found = []
    for group, scale in (("big", 1.0), ("small", 0.3)):
        for seed in range(3):
            g, base = truth_g(scale * (1 + 0.2 * seed)), truth_base(0.1 * seed)
            post = {
                (lr, 100.0): base + truth_S(g, lr * 100) + noise * rng.standard_normal(T.size) for lr in (1e-3, 1e-2)
            }
            frame = finetune_rows(f"{group}_seed={seed}", post, {k: base for k in post}, orders)
            found += check.series_of(
                {f"{group}_seed={seed}": perturb_rows(f"{group}_seed={seed}", g, base)},
                {f"{group}_seed={seed}": frame},
                (1.0,),
                2,
            )
    return found


def test_references_are_the_other_seeds_of_the_setup_else_every_other_series():
    series = study()
    held = series[0]
    assert [s.name for s in check.references(series, held)] == ["big_seed=1", "big_seed=2"]
    assert len(check.references(series[:2] + series[3:], held)) == 4  # one other seed: every other series


def test_leave_one_series_out_advises_the_true_best_when_eq_1_holds():
    series = study()
    cases = check.leave_one_series_out(series, (1e-2, 100.0), replicates=500)
    assert len(cases) == 6
    for case in cases:
        assert case["series"] not in case["references"]
        assert case["regret"] == pytest.approx(0.0, abs=1e-12) and case["advised"] == case["best"]
        assert case["regret_last"] > 0 and case["regret_lowest_base"] == case["regret_last"]
    summary = check.summary(cases, sd=0.01)
    assert summary["advice_no_worse_than_last"] == 1.0 and summary["median_within_run_sd"]
    assert summary["advised_last"] == 0.0 and summary["best_in_short_list"] == 1.0


def test_the_held_out_series_fine_tuning_never_enters_its_advice():
    series = study()
    changed = [
        check.Series(s.name, s.group, s.probes, {k: v + 5.0 for k, v in s.post.items()}, s.task) if i == 0 else s
        for i, s in enumerate(series)
    ]
    before = check.leave_one_series_out(series, (1e-3, 100.0), replicates=200)[0]
    after = check.leave_one_series_out(changed, (1e-3, 100.0), replicates=200)[0]
    assert before["advised"] == after["advised"] and before["short_list"] == after["short_list"]


def test_the_run_sd_is_between_orders_or_else_from_residuals_of_a_quadratic():
    two = [np.stack([np.zeros(7), np.full(7, 0.02)], axis=1)] * 3
    assert check.run_sd(two, T) == (pytest.approx(math.sqrt(0.02**2 / 2)), "between batch orders")
    quadratic = (np.log(T) ** 2)[:, None]
    sd, how = check.run_sd([quadratic, 2 * quadratic], T)
    assert sd == pytest.approx(0.0, abs=1e-9) and "quadratic" in how
    wiggle = quadratic + 0.05 * np.array([1, -1, 1, -1, 1, -1, 1])[:, None]
    assert 0.02 < check.run_sd([wiggle], T)[0] < 0.1
