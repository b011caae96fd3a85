"""Sweep rows measured on the weights W(T): quantization (``bits``) and curvature (``curvature``)."""

import dataclasses

import jax
import numpy as np
import pytest

from analysis.inflection import KINDS
from experiments.sweep import config, overrides, presets
from experiments.sweep.runner import run_theory
from theory import closed_form, network, quantization, simulate, tasks

TINY = dict(d_in=6, h=6, d_out=6, rank=6, n_t=7, t_max=200.0, init_std=6**-0.5, grid=(("bits", (3, 4)),))


def _curve(table, modification, metric, **equal):
    keep = (table.modification == modification) & (table.metric == metric) & (table.checkpoint != "inflection")
    for column, value in equal.items():
        keep &= table[column] == value
    return table[keep].sort_values("pretrain_time")


@pytest.fixture(scope="module", params=["closed_form", "flow"])
def quantized_run(request, tmp_path_factory):
    cfg = config.TheoryConfig(**TINY, bits=3, method=request.param, dt_max=0.05)
    return cfg, run_theory(cfg, "quantization", tmp_path_factory.mktemp(request.param), quiet=True)


def _weights(cfg, T):
    """W(T) computed here directly: the closed form's strengths in the teacher's bases, or matrix flow."""
    s = tasks.power_law_spectrum(cfg.rank, cfg.s1, cfg.alpha)
    task = tasks.teacher(jax.random.PRNGKey(cfg.task_seed), s, cfg.d_out, cfg.d_in)
    if cfg.method == "closed_form":
        u = closed_form.mode_strength(s, cfg.u0, T[:, None])
        return [network.init_aligned_balanced(task.U, task.V, u_t, cfg.h) for u_t in u], task.matrix
    Ws0 = network.init_aligned_balanced(task.U, task.V, cfg.u0, cfg.h)
    Ws_T = simulate.gradient_flow(lambda W: network.task_loss(W, task.matrix), Ws0, T, cfg.dt_max)
    return [tuple(W[t] for W in Ws_T) for t in range(len(T))], task.matrix


def test_quantization_rows_equal_direct_computation(quantized_run):
    """Each bit width's round-to-nearest rows are L_A of the rounded W(T), its stochastic rows L_A(W(T))
    plus ``quantization.stochastic_excess``, W(T) recomputed here; the excess rows are the difference."""
    cfg, table = quantized_run
    T = _curve(table, "none", "pretrain_loss").pretrain_time.to_numpy()
    weights, A = _weights(cfg, T)
    clean = np.array([float(network.task_loss(W, A)) for W in weights])
    np.testing.assert_allclose(_curve(table, "none", "pretrain_loss").value, clean, rtol=1e-4, atol=1e-7)
    for bits in (3, 4):
        nearest = [float(network.task_loss([quantization.round_to_nearest(W, bits) for W in Ws], A)) for Ws in weights]
        stochastic = clean + [float(quantization.stochastic_excess(Ws, bits)) for Ws in weights]
        for rounding, expected in (("nearest", nearest), ("stochastic", stochastic)):
            loss = _curve(table, "quantization", "pretrain_loss", bits=bits, rounding=rounding).value.to_numpy()
            np.testing.assert_allclose(loss, expected, rtol=2e-4, atol=1e-7)
            excess = _curve(table, "quantization", "excess", bits=bits, rounding=rounding).value.to_numpy()
            np.testing.assert_allclose(excess, loss - clean, rtol=1e-3, atol=1e-6)
        assert (_curve(table, "quantization", "excess", bits=bits, rounding="stochastic").value >= 0).all()


def test_every_bit_width_and_rounding_has_its_t_star_row(quantized_run):
    """One inflection row per (bits, rounding), finite exactly where interior; ``bits`` and ``rounding``
    are set on quantization rows only, and the other modifications' rows are stored once, not per bits."""
    cfg, table = quantized_run
    rows = table[(table.checkpoint == "inflection") & (table.modification == "quantization")]
    assert sorted(zip(rows.bits, rows.rounding)) == [(b, r) for b in (3.0, 4.0) for r in ("nearest", "stochastic")]
    assert set(rows.t_star_kind) <= set(KINDS)
    assert (np.isfinite(rows.value) == (rows.t_star_kind == "interior")).all()
    others = table[table.modification != "quantization"]
    assert others.bits.isna().all() and (others.rounding == "").all()
    assert len(_curve(table, "none", "pretrain_loss")) == cfg.n_t


@pytest.mark.parametrize("bits", [1, 17, -1, 2.5, True])
def test_bad_bits_are_refused_by_name(bits):
    with pytest.raises(ValueError, match=rf"bits={bits!r} "):
        config.TheoryConfig(bits=bits)
    with pytest.raises(ValueError, match=r"bits=1 must be 0 \(no quantization\) or lie in \[2, 16\]"):
        overrides.apply_overrides(presets.get("smoke"), overrides.read_overrides(["bits=1,3"]))


def test_the_config_bounds_are_the_theorys():
    assert config.BITS == (quantization.MIN_BITS, quantization.MAX_BITS)


def test_curvature_on_too_many_weights_is_refused():
    with pytest.raises(ValueError, match=r"curvature=true forms the dense Hessian of all 8,192 weights"):
        config.TheoryConfig(d_in=64, h=64, d_out=64, rank=64, curvature=True)


@pytest.fixture(scope="module")
def anneal_run(tmp_path_factory):
    cfg = presets.get("anneal", quick=True)
    cfg = dataclasses.replace(cfg, d_in=4, h=4, d_out=4, rank=4, budgets=(20, 40, 80, 160))
    return cfg, run_theory(cfg, "anneal", tmp_path_factory.mktemp("anneal"), quiet=True)


def test_curvature_rows_are_the_excess_gamma_squared_term(anneal_run):
    """Depth 2: (gamma^2 / 2) tr_sigma(H) is the Gaussian excess less its gamma^4 term
    gamma^4 sigma^4 d_out h d_in / 2, checkpoint by checkpoint; the top eigenvalue is positive."""
    cfg, table = anneal_run
    sigma, gamma = cfg.noise_sigma, cfg.gamma
    for _, rows in table.groupby(["series_mode", "seed"]):
        trace = _curve(rows, "none", "hessian_trace").value.to_numpy()
        excess = _curve(rows, "gaussian", "excess").value.to_numpy()
        fourth = gamma**4 * sigma**4 * cfg.d_out * cfg.h * cfg.d_in / 2
        np.testing.assert_allclose(gamma**2 / 2 * trace, excess - fourth, rtol=1e-3, atol=1e-7)
        assert (_curve(rows, "none", "top_eigenvalue").value > 0).all()


def test_trunk_and_branch_pair_at_equal_steps(anneal_run):
    """Series rows carry their budget in ``train_steps``. The trunk's last checkpoint is its own decay's
    end, the branch of the largest budget: equal there (same batches, same schedule), and different at
    the budgets before, where the trunk runs at constant lr and has more flow time (lr x steps) than the
    branch (lr (0.9 steps + 0.5): the linear decay over the last 20% sums to half its steps, plus half a step)."""
    cfg, table = anneal_run
    curves = table[table.checkpoint != "inflection"]
    assert set(curves.train_steps) == set(map(float, cfg.budgets))
    for modification, metric in (("none", "pretrain_loss"), ("none", "top_eigenvalue"), ("gaussian", "excess")):
        rows = _curve(table, modification, metric)
        pair = rows.pivot_table(index=["train_steps", "seed"], columns="series_mode", values="value")
        last = pair.loc[float(cfg.budgets[-1])]
        np.testing.assert_allclose(last.separate, last.single, rtol=1e-5)
        assert (pair.separate != pair.single).any()
    flow = _curve(table, "none", "pretrain_loss", seed=0).pivot_table(
        index="train_steps", columns="series_mode", values="pretrain_time"
    )
    np.testing.assert_allclose(flow.single.iloc[:-1], cfg.pretrain_lr * flow.index[:-1], rtol=1e-5)
    np.testing.assert_allclose(flow.separate, cfg.pretrain_lr * (0.9 * flow.index + 0.5), rtol=1e-5)
