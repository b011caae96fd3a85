"""The input contract of the public ``theory`` API, on generated inputs: a bad argument (not a number, not
finite, beyond the float dtype JAX computes in, of the wrong sign, empty, misshapen) raises one ValueError
that names it; good arguments give the right numbers, whatever their dtype, jitted or not."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from theory import (
    closed_form,
    finetune,
    linear_fit,
    linear_model,
    measure,
    mitigation,
    network,
    perturbation,
    prediction,
    protocol,
    simulate,
    tasks,
)

SETTINGS = settings(max_examples=50, derandomize=True, deadline=None, database=None)
FLOAT = np.finfo(jnp.result_type(float))  # the dtype JAX computes in: float32, or float64 under x64

W = (0.5 * np.eye(3, 2), 0.3 * np.ones((4, 3)))
A = np.ones((4, 2))
KEY = jax.random.PRNGKey(0)
TASK = tasks.teacher(KEY, jnp.array([1.0, 0.5]), 4, 4)
CURVES = dict(gamma=0.2, sigma1=0.1, sigma2=0.1, d_in=2, h=2, d_out=2, tau=1.0)


def full(shape, v):
    """A nested list of ``shape`` holding ``v`` everywhere (whatever ``v`` is: np.full would judge it first)."""
    return [full(shape[1:], v) for _ in range(shape[0])] if shape else v


# (function, argument, what the argument allows, the call with ``v`` in that argument's place).
CASES = [
    ("power_law_spectrum", "s1", "positive", lambda v: tasks.power_law_spectrum(4, v)),
    ("power_law_spectrum", "alpha", "non_negative", lambda v: tasks.power_law_spectrum(4, 1.0, v)),
    ("exponential_spectrum", "rate", "non_negative", lambda v: tasks.exponential_spectrum(4, 1.0, v)),
    ("explicit_spectrum", "values", "positive", lambda v: tasks.explicit_spectrum([2.0, v])),
    ("with_spectrum", "b", "non_negative", lambda v: tasks.with_spectrum(TASK, [1.0, v])),
    ("correlated_matrix", "rho", "real", lambda v: tasks.correlated_matrix(TASK, v, KEY)),
    ("init_gaussian", "sigmas", "positive", lambda v: network.init_gaussian(KEY, (2, 3, 4), v)),
    ("task_loss", "A", "real", lambda v: network.task_loss(W, full((4, 2), v))),
    ("mode_strength", "s", "positive", lambda v: closed_form.mode_strength(v, 1e-3, 1.0)),
    ("mode_strength", "u0", "positive", lambda v: closed_form.mode_strength(1.0, v, 1.0)),
    ("mode_strength", "t", "non_negative", lambda v: closed_form.mode_strength(1.0, 1e-3, v)),
    ("mode_strength", "weight_decay", "non_negative", lambda v: closed_form.mode_strength(1.0, 1e-3, 1.0, v)),
    ("logistic_strength", "target", "real", lambda v: closed_form.logistic_strength(v, 0.5, 1.0)),
    ("learning_time", "u0", "positive", lambda v: closed_form.learning_time(1.0, v)),
    ("finetune_strength", "tau", "non_negative", lambda v: closed_form.finetune_strength(1.0, 0.5, v)),
    ("mode_flow", "reg", "non_negative", lambda v: closed_form.mode_flow(0.1, 1.0, [1.0], 3, reg=v)),
    ("mode_flow", "dt_max", "positive", lambda v: closed_form.mode_flow(0.1, 1.0, [1.0], 3, dt_max=v)),
    ("gaussian_excess", "W1", "real", lambda v: perturbation.gaussian_excess(full((3, 2), v), W[1], 0.2, 1, 1)),
    ("gaussian_excess", "gamma", "non_negative", lambda v: perturbation.gaussian_excess(*W, v, 1.0, 1.0)),
    ("gaussian_excess", "sigma2", "non_negative", lambda v: perturbation.gaussian_excess(*W, 0.2, 1.0, v)),
    ("excess", "Ws[1]", "real", lambda v: perturbation.excess((W[0], full((4, 3), v)), 0.2, (1.0, 1.0))),
    ("excess", "gamma", "non_negative", lambda v: perturbation.excess(W, v, (1.0, 1.0))),
    ("excess", "sigmas[0]", "non_negative", lambda v: perturbation.excess(W, 0.2, (v, 1.0))),
    ("harm_threshold", "sigma1", "non_negative", lambda v: perturbation.harm_threshold(0.2, v, 1.0, 2, 2)),
    ("finetune_gd", "lr", "positive", lambda v: finetune.finetune_gd(W, A, v, 2)),
    ("finetune_gd", "reg", "non_negative", lambda v: finetune.finetune_gd(W, A, 0.1, 2, v)),
    ("shrinking_lr", "T_ref", "positive", lambda v: finetune.shrinking_lr(0.1, [1.0, 2.0], v, 1.0)),
    ("schedule", "lr", "positive", lambda v: simulate.schedule("cosine", v, 10)),
    ("schedule", "warmup", "non_negative", lambda v: simulate.schedule("cosine", 0.1, 10, v)),
    ("gradient_flow", "dt_max", "positive", lambda v: simulate.gradient_flow(sum, W, [1.0], v)),
    ("with_weight_decay", "weight_decay", "non_negative", lambda v: mitigation.with_weight_decay(sum, v)),
    ("gaussian_t_star", "u0", "positive", lambda v: prediction.gaussian_t_star([1.0, 0.5], v, 0.2, 0.1, 0.1, 2, 2)),
    ("closed_form_curves", "T", "non_negative", lambda v: protocol.closed_form_curves([1], [1], 1e-3, [v], **CURVES)),
    ("closed_form_curves", "u0", "positive", lambda v: protocol.closed_form_curves([1], [1], v, [1.0], **CURVES)),
    ("inflection", "T", "positive", lambda v: measure.inflection([v, 2.0, 3.0], [1.0, 0.5, 1.0])),
    ("LinearModel", "kappa", "positive", lambda v: linear_model.LinearModel(1.0, 1.0, 1e-6, v, 0.0, 4)),
]  # fmt: skip

NOT_NUMBERS = st.sampled_from(
    [None, "abc", "", b"1", True, np.bool_(False), 1 + 2j, {}, object(), [1.0, "a"], [[1.0], [1.0, 2.0]]]
)
NOT_FINITE = st.sampled_from([float("nan"), float("inf"), -float("inf"), np.float64("nan")])
# Finite in float64 but not in the float JAX computes in: beyond its largest number (float32 only), or
# nonzero and below its smallest normal one (it would flush to zero).
SUBNORMAL = st.floats(min_value=5e-324, max_value=float(FLOAT.tiny) / 2, allow_subnormal=True)
OUT_OF_RANGE = (
    st.one_of(SUBNORMAL, st.floats(min_value=float(FLOAT.max) * 2, max_value=1e308)) if FLOAT.bits == 32 else SUBNORMAL
)
OUT_OF_RANGE = st.one_of(OUT_OF_RANGE, OUT_OF_RANGE.map(lambda x: -x))
WRONG_SIGN = {
    "positive": st.floats(min_value=-1e30, max_value=-1e-30) | st.just(0.0),
    "non_negative": st.floats(min_value=-1e30, max_value=-1e-30),
    "real": st.nothing(),
}


def bad_values(allows: str):
    return st.one_of(NOT_NUMBERS, NOT_FINITE, OUT_OF_RANGE, WRONG_SIGN[allows])


def _one_line_naming(error: pytest.ExceptionInfo, name: str) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    assert re.search(rf"(?<![\w\[]){re.escape(name)}(?![\w\]])", message), (name, message)
    return message


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
@settings(SETTINGS, max_examples=16)
@given(data=st.data())
def test_bad_arguments_raise_one_value_error_naming_them(case, data):
    function, name, allows, call = case
    value = data.draw(bad_values(allows), label=f"{function}({name}=...)")
    with pytest.raises(ValueError) as error:
        call(value)
    _one_line_naming(error, name)


# Cases whose argument is one scalar with no other constraint (a time step is left out: a tiny one
# would integrate for ever).
SCALARS = [c for c in CASES if c[2] != "real" and c[0] not in ("explicit_spectrum", "inflection") and c[1] != "dt_max"]


@SETTINGS
@given(case=st.sampled_from(SCALARS), value=st.floats(min_value=1e-30, max_value=1e30))
def test_values_in_range_are_taken(case, value):
    """The other side of the same checks: any finite value in range and of the allowed sign passes."""
    case[3](value)


@st.composite
def integer_networks(draw, depths=(1, 2, 3)):
    depth = draw(st.sampled_from(depths))
    widths = draw(st.lists(st.integers(1, 4), min_size=depth + 1, max_size=depth + 1))
    Ws = tuple(
        draw(hnp.arrays(np.int64, (widths[k + 1], widths[k]), elements=st.integers(-3, 3))) for k in range(depth)
    )
    return Ws


NOISE = st.just(0.0) | st.floats(min_value=1e-3, max_value=1.0)


@SETTINGS
@given(Ws=integer_networks(), gamma=NOISE, sigma=NOISE)
def test_integer_weights_give_the_excess_of_their_float_copies(Ws, gamma, sigma):
    """Integer weights are cast to float (never gamma to an integer): the same excess as the float
    copies, equal to the sum over noisy-layer subsets, and at depth 2 to ``gaussian_excess``."""
    sigmas = (sigma,) * len(Ws)
    as_float = tuple(W.astype(float) for W in Ws)
    exact = perturbation.excess(Ws, gamma, sigmas)
    np.testing.assert_allclose(exact, perturbation.excess(as_float, gamma, sigmas), rtol=1e-6)
    np.testing.assert_allclose(exact, perturbation._excess_by_subsets(as_float, gamma, sigmas), rtol=1e-4, atol=1e-6)
    if len(Ws) == 2:
        np.testing.assert_allclose(exact, perturbation.gaussian_excess(*Ws, gamma, sigma, sigma), rtol=1e-4, atol=1e-6)
    if gamma > 0 and sigma > 0:
        assert float(exact) > 0  # never the 0.0 of a gamma cast to an integer


@SETTINGS
@given(
    net=integer_networks(depths=(2,)),
    scale=st.floats(min_value=1e-3, max_value=10.0),
    gamma=NOISE,
    sigmas=st.tuples(NOISE, NOISE),
)
def test_excess_agrees_with_gaussian_excess(net, scale, gamma, sigmas):
    Ws = tuple(scale * W for W in net)
    np.testing.assert_allclose(
        perturbation.excess(Ws, gamma, sigmas), perturbation.gaussian_excess(*Ws, gamma, *sigmas), rtol=1e-4, atol=1e-8
    )


@SETTINGS
@given(s=st.integers(1, 5), t=st.integers(0, 50))
def test_integer_scalars_give_the_numbers_of_floats(s, t):
    np.testing.assert_allclose(
        closed_form.mode_strength(s, 1e-3, t), closed_form.mode_strength(float(s), 1e-3, float(t))
    )
    np.testing.assert_allclose(tasks.power_law_spectrum(4, s, 1), tasks.power_law_spectrum(4, float(s), 1.0))


def test_checks_pass_through_jit_and_vmap():
    """The checks run at the Python boundary only: the jitted and vmapped functions give the eager numbers."""
    sigmas = (0.3, 0.5)
    eager = perturbation.excess(W, 0.2, sigmas)
    jitted = jax.jit(lambda Ws, g: perturbation.excess(Ws, g, sigmas))(tuple(map(jnp.asarray, W)), 0.2)
    np.testing.assert_allclose(jitted, eager, rtol=1e-6)
    gammas = jnp.array([0.1, 0.2])
    batched = jax.vmap(lambda g: perturbation.excess(tuple(map(jnp.asarray, W)), g, sigmas))(gammas)
    np.testing.assert_allclose(batched[1], eager, rtol=1e-6)
    strengths = jax.jit(closed_form.mode_strength)(jnp.array([1.0, 0.5]), 1e-3, 2.0)
    np.testing.assert_allclose(strengths, closed_form.mode_strength(np.array([1.0, 0.5]), 1e-3, 2.0), rtol=1e-6)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: perturbation.excess([], 0.2, []), "Ws"),
        (lambda: perturbation.excess(None, 0.2, (1.0,)), "Ws"),
        (lambda: perturbation.excess(W, 0.2, (1.0,)), "sigmas"),
        (lambda: perturbation.excess((W[1], W[0]), 0.2, (1.0, 1.0)), "Ws"),
        (lambda: perturbation.excess(W, [0.2, 0.3], (1.0, 1.0)), "gamma"),
        (lambda: network.end_to_end((np.ones(3),)), "Ws[0]"),
        (lambda: network.task_loss(W, np.ones((2, 4))), "A"),
        (lambda: network.widths(4, 4.0, 4), "h"),
        (lambda: network.init_gaussian(KEY, (2, 3, 4), (0.1, 0.1, 0.1)), "sigmas"),
        (lambda: network.init_aligned_balanced(np.eye(4, 2), np.eye(4, 3), 1e-3, 4), "V"),
        (lambda: tasks.teacher(0, [1.0], 2, 2), "key"),
        (lambda: tasks.permuted_spectrum([1.0, 0.5], [0.0, 1.0]), "permutation"),
        (lambda: tasks.permuted_spectrum([1.0, 0.5], [0, 0]), "permutation"),
        (lambda: tasks.rotated(None, 0.1, KEY), "task"),
        (lambda: tasks.correlated_matrix(TASK, 1.5, KEY), "rho"),
        (lambda: closed_form.mode_strength(np.ones(3), np.ones(2), 1.0), "u0"),
        (lambda: closed_form.mode_flow(0.1, 1.0, [2.0, 1.0]), "t_grid"),
        (lambda: finetune.tuned_choice([[1.0, np.nan]], axis=2), "axis"),
        (lambda: finetune.tuned_choice([], axis=0), "finetune_losses"),
        (lambda: simulate.budget_series(None, None, [100.5, 200], "separate"), "budgets[0]"),
        (lambda: simulate.optimizer("sgd", 0.1, momentum=1.5), "momentum"),
        (lambda: simulate.train(None, W, simulate.optimizer("sgd", 0.1), 2, 1), "objective"),
        (lambda: measure.inflection([3.0, 2.0, 1.0], [1.0, 0.5, 1.0]), "T"),
        (lambda: measure.sharpness(None, W, KEY), "loss_fn"),
        (lambda: protocol.closed_form_curves([1.0, 0.5, 0.2], [1.0] * 3, 1e-3, [1.0], **CURVES), "s"),
        (lambda: protocol.simulated_curves(W, A, A, gamma=0.1, sigmas=(1.0, 1.0), lr=0.1, steps=1), "Ws_T[0]"),
        (lambda: linear_fit.fit_linear_model([1.0, 2.0, 3.0], [1.0, 0.5]), "T"),
        (lambda: linear_model.LinearModel(1.0, 1.0, 1e-6, 1.0, 0.0, 16.7), "rank"),
    ],
)
def test_shapes_types_and_structure_are_refused_by_name(call, name):
    with pytest.raises(ValueError) as error:
        call()
    _one_line_naming(error, name)
