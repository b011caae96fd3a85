"""The rival curve models of ``ovt compare`` (``analysis.model_comparison``) on curves made by each of them:
every model's fit recovers its own parameters, and the held-out scores pick it as best.

Four families, one per model, each with 3 sizes on 12 points, chosen so that the models differ in the data:
a decomposition family with pure power laws; a Shannon-law family whose largest size's excess visibly
saturates; a linear-model family whose largest size shows the theory's gamma^4 term (a T-independent part of
the excess); a linear + link family whose lam leaves the smallest size quadratic, is crossed by the middle
one inside the window and saturates the largest. The excess carries log-normal noise (sd ``NOISE``, fixed
seeds); the base is exact: a base loss is measured on a large evaluation set, far less noisy than an
excess, and in the linear families' window the base comes within 0.005 of its floor, so a 1% base noise
(0.02 nats) leaves the floor E on its bound (the lowest measured point) in 2 of 3 seeds.

Each family's ``compare_models`` runs once for the module (``compared``): with held-out sizes 1 + 3 fits of
each model, ~3 s a fit for the linear ones (JAX least squares).
"""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from analysis import phenomenology as ph
from analysis.model_comparison import (
    DecompositionCurves,
    best_model,
    compare_models,
    held_out_series,
    held_out_sizes,
    table_rows,
)
from analysis.shannon import ShannonCurves
from theory import link, protocol, tasks
from theory.linear_fit import U0_RATIO, LinearCurves

N = 12  # points on each curve
NOISE = 0.015  # log-sd of each measured excess point
N_SERIES = 3
KAPPA = 1e-4  # flow time per token (tests/theory/test_linear_model.py)


def _models():
    return [
        DecompositionCurves(),
        ShannonCurves(),
        LinearCurves("gaussian", 32, link=False),
        LinearCurves("gaussian", 32, link=True),
    ]


@dataclasses.dataclass(frozen=True)
class Family:
    """A family's arrays as ``compare_models`` takes them, the model that made them and its parameters."""

    generator: str
    T: np.ndarray
    base: np.ndarray
    sizes: np.ndarray
    S: np.ndarray  # the measured excess: the truth with noise (the mean of the series where there are any)
    truth: dict
    noise: float  # log-sd of each point of S
    series: dict | None = None


def _noisy(seed, S, n=None):
    """S times log-normal noise of sd ``NOISE`` (n independent copies if n is given)."""
    shape = np.shape(S) if n is None else (n, *np.shape(S))
    return S * np.exp(NOISE * np.random.default_rng(seed).standard_normal(shape))


def _decomposition_family() -> Family:
    """L = E + A T^-alpha, S = C m^p T^beta: the excess is a pure power law in T and in m."""
    truth = {"E": 2.0, "A": 30.0, "alpha": 0.5, "C": 1e-4, "p": 2.0, "beta": 0.7}
    D = ph.Decomposition(**truth)
    T, sizes = np.geomspace(1e3, 1e5, N), np.array([0.5, 1.0, 2.0])
    S = np.array([D.excess(T, m) for m in sizes])
    return Family("decomposition", T, D.base(T), sizes, _noisy(1, S), truth, NOISE)


def _shannon_loss(T, m, E, L0, a, b, c, p, d):
    x = T / np.exp(np.mean(np.log(T)))  # the fit's t_ref: the geometric mean of T
    noise = 1 + c * m**p * x**d if m > 0 else 1.0
    return E + L0 / (1 + a * x**b / noise)


def _shannon_family() -> Family:
    """The Shannon law where the largest size's noise term dominates late: its excess bends over toward
    L0 - (L(T, 0) - E) (from 0.008 to 0.8 across the grid against 0.0005 to 0.1 for the smallest), which no
    separable power law follows."""
    truth = {"E": 2.0, "L0": 1.5, "a": 3.0, "b": 0.8, "c": 0.05, "p": 2.0, "d": 1.5}
    T, sizes = np.geomspace(1e3, 1e5, N), np.array([1.0, 2.0, 4.0])
    base = _shannon_loss(T, 0.0, **truth)
    S = np.array([_shannon_loss(T, m, **truth) - base for m in sizes])
    return Family("Shannon law", T, base, sizes, _noisy(2, S), truth, NOISE)


def _protocol_curves(T, gamma):
    """``closed_form_curves`` of the linear model (rank 32, s_i = i^-1, u0 = U0_RATIO s1) on the token axis
    T_flow = KAPPA T: (clean loss, Gaussian excess at theory noise gamma)."""
    s = tasks.power_law_spectrum(32, 1.0, 1.0)
    sigma = 32**-0.5
    c = protocol.closed_form_curves(
        s,
        tasks.reversed_spectrum(s),
        U0_RATIO * float(s[0]),
        jnp.asarray(KAPPA * T),
        gamma=gamma,
        sigma1=sigma,
        sigma2=sigma,
        d_in=32,
        h=32,
        d_out=32,
        tau=0.0,
    )
    return np.asarray(c.pretrain_loss, float), np.asarray(c.excess, float)


def _linear_truth(T, sizes, lam):
    """Floor 2.0 plus the protocol's curves, store size m read as theory gamma = 2 m, the excess linked with
    ``lam`` (None: quadratic). The window is where the base falls from 0.24 to 0.005 above its floor."""
    truth = {"kappa": KAPPA, "alpha_s": 1.0, "s1": 1.0, "E": 2.0, "ref": 2.0}
    loss, _ = _protocol_curves(T, 0.0)
    Q = np.array([_protocol_curves(T, truth["ref"] * m)[1] for m in sizes])
    if lam is None:
        return truth, truth["E"] + loss, Q
    return truth | {"lam": lam}, truth["E"] + loss, np.asarray(link.linked_excess(Q, lam), float)


def _linear_family() -> Family:
    """The linear model without the link. The excess is gamma^2 ||W||^2(T) + 16 gamma^4 (rank 32): at the
    largest size (gamma = 0.8, 7 to 9 nats) the gamma^4 term is most of it and the excess is nearly flat in
    T, at the smallest (gamma = 0.2) up to a third of it: neither a power law in T nor in m, nor saturating."""
    T, sizes = np.geomspace(5e4, 4e5, N), np.array([0.1, 0.2, 0.4])
    truth, base, S = _linear_truth(T, sizes, None)
    return Family("linear", T, base, sizes, _noisy(3, S), truth, NOISE)


def _link_family() -> Family:
    """The linear model with the link at lam = 0.3: the smallest size's Q (0.07 .. 0.17) stays quadratic, the
    middle one's (0.24 .. 0.45) crosses lam inside the window, the largest's (7.3 .. 8.9) is far into
    2 sqrt(Q lam) - lam. Every pair of sizes a held-out fold keeps thus shows both regimes (with two saturated
    sizes alone alpha_s, s1, ref and lam trade off: at lam = 0.5, where the middle size saturates throughout,
    the fold holding out the quadratic size missed it by up to 7x the noise). Three pre-training series with
    independent noise; the family's curves are their mean (noise NOISE / sqrt 3)."""
    T, sizes = np.geomspace(5e4, 4e5, N), np.array([0.1, 0.15, 0.4])
    truth, base, S = _linear_truth(T, sizes, 0.3)
    excesses = _noisy(4, S, n=N_SERIES)
    series = {
        "bases": np.tile(base, (N_SERIES, 1)),
        "excesses": excesses,
        "t_observed": np.full((N_SERIES, sizes.size), np.nan),
    }
    return Family("linear + link", T, base, sizes, excesses.mean(0), truth, NOISE / np.sqrt(N_SERIES), series)


FAMILIES = {
    "decomposition": _decomposition_family,
    "Shannon law": _shannon_family,
    "linear": _linear_family,
    "linear + link": _link_family,
}

# Relative tolerances on the generator's recovered parameters. The decomposition's base is exact and fitted
# alone: E, A, alpha within 1%. The noise on 36 excess points moves a fitted exponent by ~0.5% and a scale by
# a few % (a scale is set at T^0 = 1, far from the grid, so it carries the exponent's error times ln T):
# exponents within 5%, scales within 20% (the Shannon law's a, c and L0 also trade off along a shallow
# valley). The linear model's kappa and s1 move together with alpha_s (mode i is learned near
# ln(s_i / u0) / (2 s_i kappa)): 10%; ref 5%, lam 15%. Observed: at most 4% (C), 3% (kappa), 2% (a, c, s1).
TOLERANCES = {
    "decomposition": {"E": 0.01, "A": 0.01, "alpha": 0.01, "C": 0.2, "p": 0.05, "beta": 0.05},
    "Shannon law": {"E": 0.02, "L0": 0.2, "a": 0.2, "b": 0.05, "c": 0.2, "p": 0.05, "d": 0.05},
    "linear": {"kappa": 0.1, "alpha_s": 0.05, "s1": 0.1, "E": 0.01, "ref": 0.05},
    "linear + link": {"kappa": 0.1, "alpha_s": 0.05, "s1": 0.1, "E": 0.01, "ref": 0.05, "lam": 0.15},
}


@pytest.fixture(scope="module")
def compared():
    """name -> (family, compare_models of the four models on it): each family built and compared once for
    the module, on first use (held-out sizes; held-out series too where the family has series)."""
    done = {}

    def get(name):
        if name not in done:
            f = FAMILIES[name]()
            grid = np.geomspace(f.T[0], f.T[-1], 40)
            t_observed = np.full(f.sizes.size, np.nan)
            done[name] = f, compare_models(_models(), f.T, f.base, f.sizes, f.S, t_observed, grid, series=f.series)
        return done[name]

    return get


def _row(comparison, model):
    (row,) = [r for r in comparison["models"] if r["model"] == model]
    return row


def _scores(comparison, part):
    return {r["model"]: r[part]["log_rmse_excess"] for r in comparison["models"]}


@pytest.mark.parametrize("name", FAMILIES)
def test_the_generating_model_recovers_its_parameters(compared, name):
    """The generator's fit on every size returns the parameters that made the curves, none at a bound."""
    family, comparison = compared(name)
    assert all("failed" not in r for r in comparison["models"])
    row = _row(comparison, family.generator)
    assert row["at_bounds"] == []
    for key, rel in TOLERANCES[name].items():
        assert row["params"][key] == pytest.approx(family.truth[key], rel=rel), key
    assert row["in_sample"]["log_rmse"] < 2 * family.noise


@pytest.mark.parametrize("name", FAMILIES)
def test_the_generating_model_is_best_on_held_out_sizes(compared, name):
    """Each size left out in turn: the generator predicts it to within the noise and better than its rivals."""
    family, comparison = compared(name)
    scores = _scores(comparison, "held_out_sizes")
    assert all(_row(comparison, m)["held_out_sizes"]["folds"] == 3 for m in scores)
    assert scores[family.generator] < 3 * family.noise
    sizes_only = [{k: v for k, v in r.items() if k != "held_out_series"} for r in comparison["models"]]
    best = best_model(sizes_only)
    if name == "decomposition":
        # The Shannon law nests the decomposition: at a large SNR a x^b its base is E + (L0 / a) x^-b and its
        # excess (L(T, 0) - E) c m^p x^d, a power law in T and in m. So on power-law data the two tie up to
        # the noise the Shannon law's seventh parameter fits (over seeds 0-11 of this family the Shannon law
        # won once, by 0.4%, and tied 3 times): the generator must be within 3% of the best, and the Shannon
        # fit must sit in that limit (SNR > 100 at the first T).
        assert best in ("decomposition", "Shannon law")
        assert scores["decomposition"] <= 1.03 * scores[best]
        shannon = _row(comparison, "Shannon law")["params"]
        assert shannon["a"] * (family.T[0] / np.exp(np.mean(np.log(family.T)))) ** shannon["b"] > 100
        rivals = ("linear", "linear + link")
    else:
        # The linear model is also the linear + link model at lam >= max Q, but fitted on two sizes the link's
        # lam lands inside their range and bends the third size's prediction: there the nested model does not
        # tie (held-out 20x worse).
        assert best == family.generator
        rivals = [m for m in scores if m != family.generator]
    assert min(scores[m] for m in rivals) > 5 * scores[family.generator]


def test_the_linear_link_model_is_best_on_held_out_series(compared):
    """Each of the three pre-training series left out in turn: the linear + link model, fitted on the mean
    of the other two, predicts the left-out series' excess at every size to within its noise (the series'
    own NOISE and the fit's NOISE / sqrt 2), and the comparison's best (series first) is it."""
    family, comparison = compared("linear + link")
    scores = _scores(comparison, "held_out_series")
    assert all(_row(comparison, m)["held_out_series"]["folds"] == N_SERIES for m in scores)
    assert comparison["best"] == best_model(comparison["models"]) == "linear + link"
    assert scores["linear + link"] < 3 * NOISE
    assert min(s for m, s in scores.items() if m != "linear + link") > 2 * scores["linear + link"]


@pytest.mark.parametrize("name", FAMILIES)
def test_table_rows_mark_the_best_model(compared, name):
    """One printable row per model, in the models' order; exactly the best one starred."""
    family, comparison = compared(name)
    rows = table_rows(name, comparison)
    assert [r["model"].removesuffix(" *") for r in rows] == [m.name for m in _models()]
    starred = [r["model"] for r in rows if r["model"].endswith(" *")]
    assert starred == [comparison["best"] + " *"]
    assert all(r["family"] == name and r["log_rmse_sizes"] is not None for r in rows)
    assert all((r["log_rmse_series"] is not None) == (family.series is not None) for r in rows)


def test_held_out_band_coverage_is_near_its_level():
    """Pure power laws with noise sd 0.05 on 4 sizes x 40 points: the 95% prediction bands of the
    decomposition cover most held-out points, and not all (a band too wide would)."""
    D = ph.Decomposition(E=2.0, A=30.0, alpha=0.5, C=1e-4, p=2.0, beta=0.7)
    T, sizes = np.geomspace(1e3, 1e5, 40), np.array([0.5, 1.0, 2.0, 4.0])
    rng = np.random.default_rng(5)
    base = D.base(T) * np.exp(0.05 * rng.standard_normal(T.size))
    S = np.array([D.excess(T, m) for m in sizes]) * np.exp(0.05 * rng.standard_normal((sizes.size, T.size)))
    scored = held_out_sizes(DecompositionCurves(), T, base, sizes, S, np.full(4, np.nan), np.geomspace(1e3, 1e5, 40))
    assert scored["folds"] == 4 and scored["n_points"] == 160
    assert 0.8 <= scored["coverage"] <= 0.99
    assert scored["log_rmse_excess"] == pytest.approx(0.05, rel=0.3)


def test_held_out_scores_need_three_sizes_or_series():
    """Two sizes or two series cannot be held out (the fit would keep one): a skip, not a score, and no best."""
    f = _decomposition_family()
    grid = np.geomspace(f.T[0], f.T[-1], 40)
    model = DecompositionCurves()
    scored = held_out_sizes(model, f.T, f.base, f.sizes[:2], f.S[:2], np.full(2, np.nan), grid)
    assert list(scored) == ["skipped"] and "2 sizes" in scored["skipped"]
    excesses = _noisy(6, f.S, n=2)
    scored = held_out_series(model, f.T, np.tile(f.base, (2, 1)), f.sizes, excesses, np.full((2, 3), np.nan), grid)
    assert list(scored) == ["skipped"] and "2 series" in scored["skipped"]
    comparison = compare_models([model], f.T, f.base, f.sizes[:2], f.S[:2], np.full(2, np.nan), grid)
    assert "skipped" in comparison["models"][0]["held_out_sizes"] and comparison["best"] is None
