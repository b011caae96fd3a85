"""``ovt llm perturb --backend jax``: the perturb run's checkpoints measured by ``llm_validation.jax_backend``.

The plan, the token blocks, the store and the manifest are ``experiments.llm.kinds.perturb``'s (the same table for
either backend); this module checks the JAX devices and evaluates one checkpoint: its config.json and
safetensors read without torch, the base model and every (gamma, seed) draw in vmapped chunks on a
(draws, batch) mesh over the ``device``'s JAX devices (``cpu``, ``cuda``: JAX's gpu, ``tpu``).

The batch axis of the mesh is used only when one draw's weights and logits do not fit a device's share
of memory; then the fewest devices whose shares of a batch fit take it. Numbers do not depend on the
mesh (``jax_backend.evaluate``). Workers: one process (the devices are the parallelism here).
"""

from __future__ import annotations

import math

from rundir.lifecycle import UsageError

PLATFORMS = {"cpu": "cpu", "cuda": "gpu", "tpu": "tpu"}  # the --device names -> JAX's platform names


def jax_devices(device: str) -> list:
    """Every JAX device of ``device``'s platform; UsageError when there is none."""
    import jax

    platform = PLATFORMS[device]
    try:
        devices = jax.devices(platform)
    except RuntimeError:  # the platform is not installed or has no device
        devices = []
    if not devices:
        raise UsageError(f"device={device}: JAX sees no {platform} device here; allowed: cpu")
    return devices


def check(cfg) -> None:
    """The JAX backend's own checks of a perturb config: a device of its kind, noise drawn on the device."""
    if cfg.noise_device != "cpu":
        raise UsageError(
            f"noise_device={cfg.noise_device} is a torch option; the JAX backend draws its counter-based "
            "noise where the weights are, the same numbers on every device; allowed: cpu"
        )
    jax_devices(cfg.device)


def manifest_fields(device: str) -> dict:
    return {"devices": [str(d) for d in jax_devices(device)]}


def batch_shards(n_devices: int, weight_bytes: int, logit_bytes: int, budget: float) -> int:
    """The fewest devices (a divisor of ``n_devices``) whose shares of one batch's logits fit ``budget``
    beside a whole copy of the weights; all of them when none does."""
    for shards in range(1, n_devices + 1):
        if n_devices % shards == 0 and weight_bytes + logit_bytes / shards <= budget:
            return shards
    return n_devices


def evaluate_checkpoint(plan, revision, progress) -> tuple[list, dict, dict]:
    """(results [(modification, gamma, seed, Perplexity)], sigmas, mesh notes) of one checkpoint."""
    import jax.numpy as jnp

    from llm_validation.jax_backend.evaluate import (
        DrawEvaluator,
        draw_bytes,
        logit_bytes,
        make_mesh,
        memory_budget,
    )
    from llm_validation.jax_backend.model import OlmoForCausalLM
    from llm_validation.jax_backend.spec import read_spec
    from llm_validation.jax_backend.weights import checkpoint_folder, load_weights

    folder = checkpoint_folder(plan.source, revision.name, plan.is_folder)
    spec = read_spec(folder)
    weights = load_weights(folder, spec, {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[plan.cfg.dtype])
    devices = jax_devices(plan.cfg.device)
    seq_len = plan.blocks.shape[1]
    logits = logit_bytes(plan.cfg.batch_size, seq_len, spec.vocab_size)
    shards = batch_shards(len(devices), draw_bytes(weights), logits, memory_budget(devices[0]))
    mesh = make_mesh(devices, shards)
    evaluator = DrawEvaluator(
        OlmoForCausalLM(spec, weights), spec, plan.blocks.numpy(), plan.cfg.batch_size, plan.cfg.scale, mesh
    )
    draws = [(0.0, 0)] + [(gamma, seed) for gamma in plan.cfg.gammas for seed in range(plan.cfg.seeds)]
    values = evaluator.perplexities(draws, progress.update)
    results = [("none", math.nan, 0, values[0])]
    results += [("gaussian", gamma, seed, value) for (gamma, seed), value in zip(draws[1:], values[1:])]
    notes = {"mesh": dict(zip(mesh.axis_names, mesh.devices.shape)), "draws_per_call": evaluator.draws_per_call}
    return results, evaluator.sigmas, notes
