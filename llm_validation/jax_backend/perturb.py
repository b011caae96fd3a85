"""Gaussian weight perturbation in JAX, with the torch half's semantics (``llm_validation.perturb``):

    theta~_p = theta_p + gamma * sigma_p * eps_p,    eps_p ~ N(0, I),

on every Linear and Embedding weight (the q/k/v/o and MLP projections, the embedding, and an untied
output matrix), never on biases (zero init variance; OLMo-1's norms have no parameters). A tied
embedding is one tensor, perturbed once, under ``model.embed_tokens.weight``. ``sigma_p`` is the
config's ``initializer_range`` (``init``), the tensor's RMS (``relative``) or 1 (``absolute``).

eps_p of draw ``seed`` is ``jax.random.normal`` under threefry keys made from a stable hash of
(seed, name), one key per chunk of the tensor as on the torch path, so draw k is the same noise on
every checkpoint of a series (paired draws) and, threefry being counter-based, on every device and
under any sharding. It is drawn in float32, scaled, cast to the weight's dtype and added, as on the
torch path; it is not torch's stream of numbers, only its distribution.
"""

from __future__ import annotations

import hashlib

import jax
import jax.numpy as jnp
import numpy as np

from llm_validation.jax_backend.spec import OlmoSpec

SCALES = ("init", "relative", "absolute")
NOISE_CHUNK = 1 << 12  # elements per fold_in key: fixed, so a tensor's noise is a function of (seed, name) alone


def perturbed_names(params: dict[str, jax.Array]) -> list[str]:
    """The names of the perturbed tensors: every weight matrix (embedding included), no bias."""
    return [name for name in params if name.endswith(".weight")]


def noise_scales(params: dict[str, jax.Array], spec: OlmoSpec, scale: str = "init") -> dict[str, float]:
    """sigma_p of each perturbed tensor: ``init`` the init std, ``relative`` sqrt(mean(theta_p^2)), ``absolute`` 1."""
    names = perturbed_names(params)
    if scale == "init":
        return {name: float(spec.initializer_range) for name in names}
    if scale == "relative":
        return {name: float(jnp.sqrt(jnp.mean(jnp.square(params[name].astype(jnp.float32))))) for name in names}
    if scale == "absolute":
        return {name: 1.0 for name in names}
    raise ValueError(f"scale={scale!r} is unknown; allowed: {', '.join(SCALES)}")


def draw_key(seed: int, name: str) -> np.ndarray:
    """The raw threefry key (two uint32 words) of tensor ``name`` in draw ``seed``: blake2b of "seed:name"."""
    digest = hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest()
    return np.frombuffer(digest, dtype="<u4").astype(np.uint32)


def draw_keys(seeds, names: list[str]) -> np.ndarray:
    """[len(seeds), len(names), 2] uint32: every (seed, name) key, made on the host."""
    return np.stack([np.stack([draw_key(int(seed), name) for name in names]) for seed in seeds])


def perturb(
    params: dict[str, jax.Array], sigmas: dict[str, float], keys: jax.Array, gamma: jax.Array
) -> dict[str, jax.Array]:
    """One draw: theta_p + gamma * sigma_p * eps_p for the names of ``sigmas`` (in order, ``keys`` [P, 2]
    their raw keys); every other tensor unchanged. Traceable: vmap it over (keys, gamma) for K draws.

    eps_p, flattened, is cut into chunks of ``NOISE_CHUNK`` elements, chunk c drawn under
    fold_in(key_p, c) (the last one cut short): every chunk of every tensor comes from one vmapped
    random call, which XLA compiles once, instead of one call per tensor (seconds each to compile)."""
    names = list(sigmas)
    sizes = [params[name].size for name in names]
    counts = [-(-size // NOISE_CHUNK) for size in sizes]
    owner = np.repeat(np.arange(len(names)), counts)
    index = np.concatenate([np.arange(count) for count in counts]).astype(np.uint32)
    tensor_keys = jax.random.wrap_key_data(keys[owner], impl="threefry2x32")
    chunk_keys = jax.vmap(jax.random.fold_in)(tensor_keys, jnp.asarray(index))
    noise = jax.vmap(lambda key: jax.random.normal(key, (NOISE_CHUNK,), jnp.float32))(chunk_keys)
    out, start = dict(params), 0
    for name, size, count in zip(names, sizes, counts):
        weight = params[name]
        eps = noise[start : start + count].reshape(-1)[:size].reshape(weight.shape)
        out[name] = weight + (eps * (gamma * sigmas[name])).astype(weight.dtype)
        start += count
    return out
