"""Gaussian weight perturbation with paired noise and exact restore.

    theta~_p = theta_p + gamma * sigma_p * eps_p,    eps_p ~ N(0, I),

the paper's eps ~ N(0, gamma^2 Sigma) with Sigma the initialisation covariance when ``scale='init'``.
eps_p is drawn in float32, in chunks of ``NOISE_CHUNK`` elements, each from a generator seeded by a
stable hash of (seed, name of p, chunk), so draw ``seed`` is the same noise on every checkpoint of a
series (paired comparisons), and (drawn on the CPU, the default) on every device; each chunk is
scaled, cast to the parameter's dtype and device, and added in place, so a draw never holds more
than one chunk of noise.

Perturbed parameters are the weights of ``nn.Linear`` and ``nn.Embedding`` modules. Under the
declared init scheme of transformers models (``PreTrainedModel._init_weights``) these are
N(0, initializer_range^2) and everything else is a constant (biases 0, norm weights 1), i.e. has
zero init variance, so norms and biases are left unchanged in every scale mode (OLMo-1's layer
norms carry no parameters at all). A tied embedding is one tensor and is perturbed once, under its
first name (``model.embed_tokens.weight``); an untied output layer (Pythia's ``embed_out``, OLMo-2's
and Amber's ``lm_head``) is a tensor of its own with its own sigma.

``scale='init'`` follows the model's family (``suites``): OLMo-1 models (and any model of no known
type) take ``config.initializer_range`` for every tensor, exactly as before families existed; a
Pythia, OLMo-2, SmolLM2 or Amber checkpoint takes its published per-tensor std
(``suites.family_of`` by hub id, else ``config.model_type``). ``perturbation_rule`` is the record of
that choice the run manifest keeps.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Iterator

import torch
from torch import nn

from llm_validation import suites

SCALES = ("init", "relative", "absolute")


def perturbed_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Linear and Embedding weights by name, each tensor once (tied weights keep their first name)."""
    found: dict[int, tuple[str, nn.Parameter]] = {}
    for prefix, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            found.setdefault(id(module.weight), (f"{prefix}.weight" if prefix else "weight", module.weight))
    return dict(found.values())


def noise_scales(model: nn.Module, scale: str = "init") -> dict[str, float]:
    """sigma_p for each perturbed parameter.

    ``init``: the init std, ``model.config.initializer_range`` (OLMo-1, unknown types) or the
    family's per-tensor std (``suites``); ``relative``: the tensor's RMS, sqrt(mean(theta_p^2));
    ``absolute``: 1, so gamma is the noise std itself.
    """
    params = perturbed_parameters(model)
    if scale == "init":
        family, config = _family(model) or suites.OLMO1, getattr(model, "config", None)
        return {name: float(suites.tensor_init(family, name).std(config)) for name in params}
    if scale == "relative":
        return {name: p.detach().float().pow(2).mean().sqrt().item() for name, p in params.items()}
    if scale == "absolute":
        return {name: 1.0 for name in params}
    raise ValueError(f"scale={scale!r} is unknown; allowed: {', '.join(SCALES)}")


def _family(model: nn.Module) -> suites.Family | None:
    """The model's family (``suites.family_of``); None for a model of no known type or without a config,
    which then takes OLMo-1's rule (every weight at ``config.initializer_range``)."""
    config = getattr(model, "config", None)
    return None if config is None else suites.family_of(config, getattr(model, "name_or_path", None))


def perturbation_rule(model: nn.Module, scale: str) -> dict:
    """What the manifest records about sigma (``suites.perturbation_record`` of this model's tensors)."""
    return suites.perturbation_record(_family(model) or suites.OLMO1, list(perturbed_parameters(model)), scale)


NOISE_CHUNK = 1 << 16  # elements per generator: a draw holds at most 256 KiB of noise at a time


def _chunk_noise(seed: int, name: str, chunk: int, numel: int, device, sample=torch.randn) -> torch.Tensor:
    # Python's hash() is salted per process; blake2b gives the same key in every run.
    key = int.from_bytes(hashlib.blake2b(f"{seed}:{name}:{chunk}".encode(), digest_size=8).digest(), "little")
    generator = torch.Generator(device=device).manual_seed(key)
    return sample(numel, generator=generator, dtype=torch.float32, device=device)


def _chunks(numel: int):
    for index, start in enumerate(range(0, numel, NOISE_CHUNK)):
        yield index, start, min(start + NOISE_CHUNK, numel)


def gaussian_noise(
    seed: int, name: str, shape: torch.Size | tuple[int, ...], device: str | torch.device = "cpu", sample=torch.randn
) -> torch.Tensor:
    """eps ~ N(0, I) in float32 (``sample=torch.rand``: U[0, 1)), a pure function of (seed, name,
    shape) on a given device type.

    The flattened tensor is cut into chunks of ``NOISE_CHUNK`` elements, each from its own generator
    keyed by (seed, name, chunk), so a draw can be added chunk by chunk without materialising a
    whole noise tensor. On the CPU (the default) the numbers are the same whatever device the model
    is on; a CUDA generator seeded alike gives another, equally reproducible stream, still paired
    across the checkpoints of a series, and spares the host the noise (dominant at OLMo scale).
    """
    numel = math.prod(shape)
    parts = [_chunk_noise(seed, name, i, stop - start, device, sample) for i, start, stop in _chunks(numel)]
    return (torch.cat(parts) if parts else torch.empty(0, device=device)).reshape(tuple(shape))


def add_noise_(param: torch.Tensor, seed: int, name: str, scale: float, device) -> None:
    """param += scale * gaussian_noise(seed, name, param.shape), chunk by chunk (scaled in float32)."""
    if not param.is_contiguous():  # no flat view to add into: one whole noise tensor instead
        param.add_(gaussian_noise(seed, name, param.shape, device).mul_(scale).to(param.device, param.dtype))
        return
    flat = param.view(-1)
    for index, start, stop in _chunks(flat.numel()):
        noise = _chunk_noise(seed, name, index, stop - start, device).mul_(scale)
        flat[start:stop].add_(noise.to(device=param.device, dtype=param.dtype))


class WeightCopy:
    """One exact copy of some of a model's weights (``params``: name -> parameter), on the CPU, off any
    accelerator; ``restore`` writes it back bit for bit. Taken once, it serves every modification
    of that checkpoint (a Gaussian draw, a quantization) with no new copy."""

    def __init__(self, params: dict[str, nn.Parameter]):
        self.params = params
        with torch.no_grad():
            self.snapshot = {name: p.detach().to("cpu", copy=True) for name, p in params.items()}

    def restore(self) -> None:
        with torch.no_grad():
            for name, original in self.snapshot.items():
                self.params[name].copy_(original)


class Perturbation(WeightCopy):
    """Gaussian draws on one model, restored bit for bit from one exact copy of its weights
    (``WeightCopy``): a draw costs the noise and two in-place passes, never a new copy.
    ``noise_device``: "cpu" (device-independent numbers) or "param" (generate on each weight's device).
    """

    def __init__(self, model: nn.Module, scale: str = "init", noise_device: str = "cpu"):
        if noise_device not in ("cpu", "param"):
            raise ValueError(f"noise_device={noise_device!r} is unknown; allowed: cpu, param")
        super().__init__(perturbed_parameters(model))
        self.sigmas = noise_scales(model, scale)
        self.noise_device = noise_device

    @contextlib.contextmanager
    def draw(self, gamma: float, seed: int) -> Iterator[dict[str, float]]:
        """theta <- theta + gamma * sigma_p * eps_p(seed) inside the block; the original bits after it."""
        if not gamma >= 0:
            raise ValueError(f"gamma={gamma} must be a number >= 0")
        try:
            with torch.no_grad():
                for name, param in self.params.items():
                    device = "cpu" if self.noise_device == "cpu" else param.device
                    add_noise_(param, seed, name, gamma * self.sigmas[name], device)
            yield self.sigmas
        finally:
            self.restore()

    def reflect(self) -> None:
        """Inside a draw, theta_0 + d -> theta_0 - d (= 2 theta_0 - theta, rounded once): the draw's
        antithetic partner. (L(theta_0 + d) + L(theta_0 - d)) / 2 - L(theta_0) has the excess's
        expectation with every odd order of d cancelled exactly, the first-order term whose spread
        over draws swamps a small excess included."""
        with torch.no_grad():
            for name, original in self.snapshot.items():
                param = self.params[name]
                param.mul_(-1).add_(original.to(param.device, param.dtype), alpha=2)


@contextlib.contextmanager
def perturbed(model: nn.Module, gamma: float, seed: int, scale: str = "init") -> Iterator[dict[str, float]]:
    """One draw: add gamma * sigma_p * eps_p to every perturbed parameter in place; restore bit for
    bit on exit. Yields {name: sigma_p} for the manifest. For many draws on one checkpoint, make one
    ``Perturbation`` and call ``draw`` on it, which copies the weights once instead of per draw.
    """
    if not gamma >= 0:
        raise ValueError(f"gamma={gamma} must be a number >= 0")
    with Perturbation(model, scale).draw(gamma, seed) as sigmas:
        yield sigmas
