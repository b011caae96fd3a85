import jax
import jax.numpy as jnp
import numpy as np
import pytest

from theory import network, simulate, tasks


@pytest.mark.parametrize("kind", simulate.SCHEDULES)
def test_schedule_reaches_exactly_zero_at_budget(kind):
    lr = simulate.schedule(kind, 0.1, 100, warmup=10)
    values = jnp.array([lr(t) for t in range(0, 120)])
    assert float(values[:99].min()) >= 0 and float(values.max()) <= 0.1 + 1e-7
    assert np.all(np.asarray(values[100:]) == 0.0)
    if kind != "constant":
        assert float(values[99]) < 0.02  # annealed: the last step's rate is near zero


def test_budget_series_separate_vs_single(key):
    s = tasks.power_law_spectrum(4, 1.0, 1.0)
    task = tasks.teacher(key, s, 6, 6)
    Ws0 = network.init_gaussian(key, network.widths(6, 8, 6), 0.05)
    objective = simulate.minibatch_objective(task.matrix, 16, 0.1)
    budgets = [100, 200, 400]
    sep = simulate.budget_series(objective, Ws0, budgets, "separate", peak_lr=0.05, key=key)
    one = simulate.budget_series(objective, Ws0, budgets, "single", peak_lr=0.05, key=key)
    assert sep[0].shape == (3, 8, 6) and one[0].shape == (3, 8, 6)
    # The longest budget is the same run in both designs (same schedule, same batches).
    np.testing.assert_allclose(sep[0][-1], one[0][-1], rtol=1e-5, atol=1e-6)
    # An annealed short run differs from the un-annealed snapshot of the long run.
    assert float(jnp.max(jnp.abs(sep[0][0] - one[0][0]))) > 1e-3
    # Both learn: loss decreases along the budgets.
    losses = jax.vmap(lambda W: network.task_loss(W, task.matrix))(sep)
    assert bool(jnp.all(jnp.diff(losses) < 0))


def test_separate_run_equals_standalone_run(key):
    """Padding with lr = 0 after the budget leaves the run exactly where a run of that length ends."""
    task = tasks.teacher(key, tasks.power_law_spectrum(3), 4, 4)
    Ws0 = network.init_gaussian(key, network.widths(4, 4, 4), 0.1)
    objective = simulate.population_objective(task.matrix)
    sep = simulate.budget_series(objective, Ws0, [50, 150], "separate", opt_name="adam", peak_lr=0.01, key=key)
    alone = simulate.train(
        objective, Ws0, simulate.optimizer("adam", simulate.schedule("cosine", 0.01, 50.0)), 50, 50, key
    )
    np.testing.assert_allclose(sep[0][0], alone[0][0], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", simulate.OPTIMIZERS)
def test_every_optimizer_learns(key, name):
    task = tasks.teacher(key, tasks.power_law_spectrum(3), 4, 4)
    Ws0 = network.init_gaussian(key, network.widths(4, 6, 4), 0.1)
    opt = simulate.optimizer(name, 0.02 if name.startswith("adam") else 0.1, weight_decay=1e-4)
    Ws = simulate.train(simulate.population_objective(task.matrix), Ws0, opt, 600, 600)
    assert float(network.task_loss(jax.tree.map(lambda w: w[-1], Ws), task.matrix)) < 0.05 * float(
        network.task_loss(Ws0, task.matrix)
    )


def test_finite_sample_loss_is_unbiased(key):
    A = jax.random.normal(key, (3, 5))
    Ws = network.init_gaussian(key, network.widths(5, 4, 3), 0.3)
    X, Y = tasks.sample_dataset(key, A, 200_000, 0.0)
    np.testing.assert_allclose(network.sample_loss(Ws, X, Y), network.task_loss(Ws, A), rtol=2e-2)


def test_task_families_geometry(key):
    s = tasks.power_law_spectrum(3)
    task = tasks.teacher(key, s, 8, 8)
    rot = tasks.rotated(task, 0.3, key)
    cosines = jnp.linalg.svd(task.U.T @ rot.U, compute_uv=False)
    np.testing.assert_allclose(cosines, jnp.cos(0.3), rtol=1e-4)
    np.testing.assert_allclose(tasks.rotated(task, 0.0, key).matrix, task.matrix, atol=1e-5)
    B = tasks.correlated_matrix(task, 1.0, key)
    np.testing.assert_allclose(B, task.matrix, atol=1e-5)
    B0 = tasks.correlated_matrix(task, 0.5, key)
    corr = jnp.sum(B0 * task.matrix) / jnp.sum(task.matrix**2)
    assert 0.2 < float(corr) < 0.8
