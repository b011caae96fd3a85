import jax
import jax.numpy as jnp
import pytest

from theory import tasks

# Relative tolerances that hold in float32 and float64 (CI runs this folder both ways).
F64 = jax.config.jax_enable_x64


@pytest.fixture
def key():
    return jax.random.PRNGKey(0)


@pytest.fixture
def default_setup():
    """docs/THEORY.md's default: d = h = 32, power-law spectrum s_i = 1/i, B with the reversed spectrum."""
    d = 32
    s = tasks.power_law_spectrum(d, 1.0, 1.0)
    return dict(s=s, b=tasks.reversed_spectrum(s), u0=1e-6, d=d, sigma=1.0 / jnp.sqrt(d), T=jnp.logspace(-1, 4, 61))
