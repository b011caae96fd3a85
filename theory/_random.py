"""Random streams for every Gaussian draw of ``theory/`` (teachers, inits, minibatches, noise).

XLA's CPU compiler takes seconds to compile a threefry Gaussian of a batched shape (4 s for an
80 x 16 x 8 draw, against 0.8 s for ``rbg``), and these draws sit inside every compiled sweep, so
they use the ``rbg`` generator (XLA's RngBitGenerator) keyed deterministically by the caller's key:
callers still pass ordinary keys, and the same key gives the same numbers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def bulk_key(key: jax.Array) -> jax.Array:
    """An ``rbg`` key carrying the bits of ``key`` (a raw uint32[2] threefry key or a typed key)."""
    data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    data = jnp.asarray(data, jnp.uint32).reshape(-1)[:2]
    return jax.random.wrap_key_data(jnp.concatenate([data, data ^ jnp.uint32(0x9E3779B9)]), impl="rbg")


def normal(key: jax.Array, shape, dtype=None) -> jax.Array:
    """N(0, 1) draws of ``shape`` from the ``rbg`` stream of ``key``."""
    return jax.random.normal(bulk_key(key), shape, jnp.result_type(float) if dtype is None else dtype)
