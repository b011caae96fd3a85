"""Random streams for the bulk draws (minibatches, Monte-Carlo noise).

XLA's CPU compiler takes seconds to compile a threefry Gaussian of any shape, and the bulk draws sit
inside every compiled sweep, so they use the ``rbg`` generator (XLA's RngBitGenerator), derived
deterministically from the caller's key: the same key still gives the same numbers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def bulk_key(key: jax.Array) -> jax.Array:
    """An ``rbg`` key carrying the bits of ``key`` (a raw uint32[2] threefry key or a typed key)."""
    data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    data = jnp.asarray(data, jnp.uint32).reshape(-1)[:2]
    return jax.random.wrap_key_data(jnp.concatenate([data, data ^ jnp.uint32(0x9E3779B9)]), impl="rbg")
