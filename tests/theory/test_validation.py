import ast
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import theory
from theory import closed_form, finetune, measure, network, perturbation, protocol, simulate, tasks


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: tasks.power_law_spectrum(0), "n"),
        (lambda: tasks.power_law_spectrum(-3), "n"),
        (lambda: network.widths(0, 4, 4), "d_in"),
        (lambda: network.widths(4, -1, 4), "h"),
        (lambda: tasks.teacher(jax.random.PRNGKey(0), jnp.ones(3), 0, 4), "d_out"),
        (lambda: perturbation.gaussian_excess(jnp.ones((3, 2)), jnp.ones((4, 3)), -0.1, 1.0, 1.0), "gamma"),
        (lambda: perturbation.gaussian_excess(jnp.ones((3, 2)), jnp.ones((4, 5)), 0.1, 1.0, 1.0), "W1"),
        (lambda: finetune.finetune_gd((jnp.ones((2, 2)), jnp.ones((2, 2))), jnp.ones((2, 2)), 0.0, 10), "lr"),
        (lambda: finetune.finetune_gd((jnp.ones((2, 2)), jnp.ones((2, 2))), jnp.ones((2, 2)), -1e-3, 10), "lr"),
        (lambda: simulate.schedule("cosine", 0.0, 10), "lr"),
        (lambda: simulate.schedule("linear", 0.1, 10), "schedule"),
        (lambda: tasks.explicit_spectrum([0.1, 0.5, 0.2]), "values"),
        (lambda: tasks.with_spectrum(tasks.teacher(jax.random.PRNGKey(0), jnp.ones(3), 4, 4), jnp.ones(2)), "b"),
        (lambda: closed_form.mode_strength(-1.0, 1e-3, 1.0), "s"),
        (lambda: closed_form.mode_strength(1.0, 0.0, 1.0), "u0"),
        (lambda: measure.inflection(jnp.ones(4), jnp.ones(5)), "T"),
        (lambda: simulate.budget_series(None, None, [200, 100], "separate"), "budgets"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(call, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        call()


def _depth3():
    return tuple(jnp.eye(3)[None] for _ in range(3))  # a trajectory of one T, three layers


@pytest.mark.parametrize(
    "call",
    [
        lambda: simulate.train(
            simulate.minibatch_objective(jnp.eye(3), 4), (jnp.eye(3), jnp.eye(3)), simulate.optimizer("sgd", 0.1), 2, 1
        ),
        lambda: simulate.budget_series(
            simulate.minibatch_objective(jnp.eye(3), 4), (jnp.eye(3), jnp.eye(3)), [2, 4], "single"
        ),
        lambda: measure.hessian_trace(
            lambda Ws: network.task_loss(Ws, jnp.eye(3)), (jnp.eye(3), jnp.eye(3)), n_probes=4
        ),
    ],
    ids=["train_minibatch", "budget_series_minibatch", "hutchinson"],
)
def test_random_draws_need_an_explicit_key(call):
    """No silent PRNGKey(0): a function that draws raises a ValueError naming ``key`` when none is given."""
    with pytest.raises(ValueError, match=r"\bkey\b is required"):
        call()


def test_deterministic_paths_need_no_key(default_setup):
    st = default_setup
    c = protocol.closed_form_curves(
        st["s"],
        st["b"],
        st["u0"],
        st["T"][:3],
        gamma=0.1,
        sigma1=st["sigma"],
        sigma2=st["sigma"],
        d_in=st["d"],
        h=st["d"],
        d_out=st["d"],
        tau=1.0,
    )
    assert c.excess.shape == (3,)
    # The Gaussian excess is exact at every depth: depth 3 draws nothing either.
    c3 = protocol.closed_form_curves(
        jnp.ones(2),
        jnp.ones(2),
        1e-3,
        jnp.ones(3),
        gamma=0.1,
        sigma1=0.1,
        sigma2=0.1,
        d_in=3,
        h=3,
        d_out=3,
        tau=1.0,
        depth=3,
    )
    sim3 = protocol.simulated_curves(_depth3(), jnp.eye(3), jnp.eye(3), gamma=0.1, sigmas=(0.1,) * 3, lr=0.1, steps=1)
    assert c3.excess.shape == (3,) and sim3.excess.shape == (1,)
    Ws = simulate.train(
        simulate.population_objective(jnp.eye(3)), (jnp.eye(3), jnp.eye(3)), simulate.optimizer("sgd", 0.1), 2, 1
    )
    assert Ws[0].shape == (2, 3, 3)


def test_tuned_choice_skips_diverged_and_breaks_ties_low():
    losses = np.array([[np.nan, 0.3, 0.1, 0.1], [np.inf, 0.2, 0.5, np.nan], [np.nan, np.nan, np.inf, np.nan]])
    np.testing.assert_array_equal(finetune.tuned_choice(losses, axis=1), [2, 1, 0])
    np.testing.assert_array_equal(finetune.tuned_choice(jnp.asarray(losses.T)), [2, 1, 0])
    assert isinstance(finetune.tuned_choice(losses, axis=1), np.ndarray)  # NumPy in, NumPy out: exact on tables


def test_theory_imports_only_jax_side_libraries():
    """theory/ is pure JAX math: no flax, no torch or transformers, no LLM code, no experiments layer."""
    forbidden = {"flax", "chex", "torch", "transformers", "llm_validation", "experiments", "paper_figures"}
    for path in pathlib.Path(theory.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            )
            assert not {n.split(".")[0] for n in names} & forbidden, (path.name, names)
