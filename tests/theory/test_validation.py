import jax
import jax.numpy as jnp
import pytest

from theory import closed_form, finetune, measure, network, perturbation, simulate, tasks


@pytest.mark.parametrize("call, name", [
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
])
def test_bad_arguments_raise_value_error_naming_them(call, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        call()
