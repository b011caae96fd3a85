"""Fine-tuning on finite samples of B: the empirical loss, its expectation, and GD on it."""

import jax
import jax.numpy as jnp
import numpy as np

from theory import finetune, tasks
from theory.network import task_loss


def test_the_empirical_loss_averages_to_the_population_loss():
    key = jax.random.PRNGKey(0)
    Ws = (jax.random.normal(key, (5, 4)) * 0.3, jax.random.normal(jax.random.fold_in(key, 1), (3, 5)) * 0.3)
    B = jax.random.normal(jax.random.fold_in(key, 2), (3, 4))
    X, Y = tasks.sample_dataset(jax.random.fold_in(key, 3), B, 200_000)
    np.testing.assert_allclose(finetune.sample_loss(Ws, X, Y), task_loss(Ws, B), rtol=2e-2)


def test_gd_on_few_noisy_samples_overfits_where_population_gd_does_not():
    key = jax.random.PRNGKey(1)
    W_T = (jnp.eye(6) * 0.5, jnp.eye(6) * 0.5)
    B = jnp.diag(jnp.linspace(1.0, 0.2, 6))
    data = tasks.sample_dataset(key, B, 8, label_noise=0.5)
    population = task_loss(finetune.finetune_gd(W_T, B, 0.05, 400), B)
    finite = task_loss(finetune.finetune_gd(W_T, B, 0.05, 400, data=data), B)
    assert population < 1e-3 < finite  # 8 noisy samples of a 6 x 6 task: the held-out loss stays up
