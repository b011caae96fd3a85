"""Held-out perplexity of many Gaussian draws of one checkpoint, in few compiled calls.

    PPL_k = exp( (1 / N) * sum_{b, t} -log p_{theta~_k}(x_{b,t+1} | x_{b,<=t}) ),

the torch half's number (``llm_validation.evaluate``: logits upcast to float32, token NLLs in float32;
here they are summed in float64) for every draw k = (gamma_k, seed_k). A chunk of C draws is one
call of ``perturb`` vmapped over (key, gamma), which stacks C perturbed copies of the weights, then
one vmapped forward pass per batch of blocks: the weights are perturbed once per draw, not once per
batch, and C copies plus C batches of logits are the chunk's memory (``draws_per_call`` sizes it).

Devices: a ``jax.sharding`` mesh of shape (draws, batch). The stacked copies are split over the
``draws`` axis (each device holds C / n_draws of them, whole) and every batch of blocks over the
``batch`` axis (for a model whose single draw does not fit a device's share of the batch); XLA sums
a draw's NLL over the batch devices. A chunk is padded to a multiple of the draw devices and a batch
to a multiple of the batch devices, the padding weighted 0, so the table is the one-device table.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from llm_validation.jax_backend.model import OlmoForCausalLM, merge, split
from llm_validation.jax_backend.perturb import draw_keys, noise_scales, perturb
from llm_validation.jax_backend.spec import OlmoSpec
from llm_validation.perplexity import MAX_LOSS, Perplexity, perplexity_of  # noqa: F401 (re-exported)

CPU_CHUNK_BYTES = 1 << 30  # a chunk's stacked weights and logits on a device that reports no memory limit
DEVICE_MEMORY_SHARE = 0.5  # of a device's memory limit, for one chunk (the rest: base weights, XLA's scratch)


def draw_bytes(params: dict[str, jax.Array]) -> int:
    """Device memory of one draw's weights: its perturbed copy and its float32 noise."""
    return sum(p.size * (p.dtype.itemsize + 4) for p in params.values())


def logit_bytes(batch: int, seq_len: int, vocab_size: int) -> int:
    """Device memory of one draw's logits on a batch: three float32 [batch, seq_len, vocab] arrays
    (the logits, their log-softmax and XLA's temporaries)."""
    return 3 * 4 * batch * seq_len * vocab_size


def memory_budget(device: jax.Device) -> float:
    """The bytes one chunk may take on ``device``: a share of its limit, or ``CPU_CHUNK_BYTES``."""
    stats = device.memory_stats() or {}
    return DEVICE_MEMORY_SHARE * stats["bytes_limit"] if "bytes_limit" in stats else CPU_CHUNK_BYTES


def make_mesh(devices: Sequence[jax.Device] | None = None, batch_shards: int = 1) -> Mesh:
    """A (draws, batch) mesh over ``devices`` (default all of JAX's): batch_shards devices share a batch."""
    devices = list(devices if devices is not None else jax.devices())
    if batch_shards < 1 or len(devices) % batch_shards:
        raise ValueError(f"batch_shards={batch_shards} must divide the {len(devices)} devices")
    return Mesh(np.array(devices).reshape(len(devices) // batch_shards, batch_shards), ("draws", "batch"))


@functools.partial(jax.jit, static_argnames=("names", "sharding"))
def _perturbed_stack(params, sigmas, keys, gammas, names, sharding):
    """C perturbed copies: {name: [C, ...]}, split over the mesh's draws axis."""

    def one(key_rows, gamma):
        return perturb(params, dict(zip(names, sigmas)), key_rows, gamma)

    stack = jax.vmap(one)(keys, gammas)
    return jax.lax.with_sharding_constraint(stack, sharding)


def _draw_nll(graphdef, params, tokens, weights):
    """-log p of every predicted token [batch, seq_len - 1], float32, for one draw's weights (padding 0);
    summed on the host in float64, so the sum adds no float32 rounding of its own."""
    logits = merge(graphdef, params)(tokens)[:, :-1].astype(jnp.float32)
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
    return nll * weights[:, None]


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _stack_nll(stack, tokens, weights, graphdef):
    """[C, batch, seq_len - 1] token NLLs of one batch under each of C stacked draws."""
    return jax.vmap(_draw_nll, in_axes=(None, 0, None, None))(graphdef, stack, tokens, weights)


class DrawEvaluator:
    """Perplexity of (gamma, seed) draws of one model on fixed token blocks [n_blocks, seq_len].

    ``draws_per_call``: draws per compiled call (default: as many as fit ``chunk_bytes`` on a device,
    at least one per draw device). ``scale``: sigma_p's rule (``perturb.noise_scales``).
    """

    def __init__(
        self,
        model: OlmoForCausalLM,
        spec: OlmoSpec,
        blocks: np.ndarray,
        batch_size: int,
        scale: str = "init",
        mesh: Mesh | None = None,
        draws_per_call: int | None = None,
    ):
        blocks = np.asarray(blocks)
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        if blocks.ndim != 2 or blocks.shape[0] == 0 or blocks.shape[1] < 2:
            raise ValueError(f"token_blocks must be [n_blocks >= 1, seq_len >= 2], got {tuple(blocks.shape)}")
        self.mesh = mesh or make_mesh()
        self.n_draw_devices, self.n_batch_devices = self.mesh.devices.shape
        self.graphdef, params = split(model)
        self.sigmas = noise_scales(params, spec, scale)
        self.names = tuple(self.sigmas)
        self.params = jax.device_put(params, NamedSharding(self.mesh, P()))
        self.dtype = str(next(iter(params.values())).dtype)
        self.blocks, self.batch_size = blocks.astype(np.int32), batch_size
        self.padded_batch = -(-batch_size // self.n_batch_devices) * self.n_batch_devices
        self.draws_per_call = self._round_to_devices(draws_per_call or self._fitting_draws(params, spec))

    def _round_to_devices(self, draws: int) -> int:
        return max(1, -(-draws // self.n_draw_devices)) * self.n_draw_devices

    def _fitting_draws(self, params, spec: OlmoSpec) -> int:
        """Draws per device whose stacked weights and float32 logits fit its share of memory."""
        logits = logit_bytes(self.padded_batch, self.blocks.shape[1], spec.vocab_size) // self.n_batch_devices
        per_device = max(1, int(memory_budget(self.mesh.devices.flat[0]) // (draw_bytes(params) + logits)))
        return per_device * self.n_draw_devices

    def _batches(self):
        """(tokens, weights) of every batch, padded to ``padded_batch`` rows of weight 0, split over batch devices."""
        sharding = NamedSharding(self.mesh, P("batch"))
        for start in range(0, len(self.blocks), self.batch_size):
            batch = self.blocks[start : start + self.batch_size]
            pad = self.padded_batch - len(batch)
            tokens = np.concatenate([batch, np.repeat(batch[:1], pad, axis=0)])
            weights = np.concatenate([np.ones(len(batch), np.float32), np.zeros(pad, np.float32)])
            yield jax.device_put(tokens, sharding), jax.device_put(weights, sharding)

    def mean_nlls(
        self, draws: Sequence[tuple[float, int]], progress: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """Mean NLL per predicted token of every (gamma, seed) draw, float64 [len(draws)]; gamma 0 is
        the model itself (its noise times 0 adds exact zeros)."""
        sigmas = jnp.asarray([self.sigmas[n] for n in self.names], jnp.float32)
        draw_sharding = NamedSharding(self.mesh, P("draws"))
        totals = np.zeros(len(draws), np.float64)
        batches = list(self._batches())
        size = min(self.draws_per_call, self._round_to_devices(len(draws)))  # no chunk larger than the work
        for start in range(0, len(draws), size):
            chunk = list(draws[start : start + size])
            real = len(chunk)
            chunk += [chunk[0]] * (size - real)  # padding, computed and dropped
            keys = jax.device_put(draw_keys([seed for _, seed in chunk], list(self.names)), draw_sharding)
            gammas = jax.device_put(np.asarray([gamma for gamma, _ in chunk], np.float32), draw_sharding)
            stack = _perturbed_stack(self.params, sigmas, keys, gammas, self.names, draw_sharding)
            for tokens, weights in batches:
                nll = np.asarray(_stack_nll(stack, tokens, weights, self.graphdef))[:real]
                totals[start : start + real] += nll.astype(np.float64).sum(axis=(1, 2))
            if progress is not None:
                progress(real)
        return totals / (self.blocks.shape[0] * (self.blocks.shape[1] - 1))

    def perplexities(self, draws, progress=None) -> list[Perplexity]:
        n_blocks, seq_len = self.blocks.shape
        platform = self.mesh.devices.flat[0].platform
        return [
            Perplexity(
                perplexity_of(nll), float(nll), n_blocks * (seq_len - 1), self.batch_size, seq_len, self.dtype, platform
            )
            for nll in self.mean_nlls(draws, progress)
        ]
