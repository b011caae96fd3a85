"""Post-training quantization of a model's linear weights, with exact restore.

Symmetric b-bit quantization per output channel, as ``theory.quantization`` defines it for a linear
network: row r of a weight W (shape (out, in); row = output channel) is put on the grid
Delta_r x {-q, ..., q},

    q = 2^(b-1) - 1,      Delta_r = max_j |W_rj| / q,      Q(W)_rj = Delta_r k_rj,  k_rj in {-q, ..., q},

a zero row keeping Delta_r = 0 and staying zero. With x = W / Delta_r:

- round-to-nearest (``rounding="nearest"``): k = round(x) (ties to even), so |Q(W) - W| <= Delta_r / 2;
- stochastic rounding (``rounding="stochastic"``): k = floor(x) + [u < p], p = x - floor(x),
  u ~ U[0, 1), so Q(W) is unbiased, E Q(W) = W, with entry variance Delta_r^2 p (1 - p) and
  |Q(W) - W| < Delta_r. Draw ``seed`` takes u from ``perturb.gaussian_noise``'s generators (CPU,
  blake2b-keyed chunks) under the key (seed, ``rounding:`` + the tensor's name), so draw k is the same
  u on every checkpoint of a series (paired, as perturb's noise is) and on every device.

Everything is computed in float32 whatever the weights' dtype and the result cast back: a float32
weight holds Delta_r k exactly as computed; a bfloat16 weight rounds it once more to bfloat16 (8
significant bits: off the grid by at most half a bfloat16 ulp of the value).

Which tensors (``quantized_parameters``): the weight of every ``nn.Linear``, each tensor once. A tied
output layer (OLMo-1, the mini series) *is* the input embedding, so there the embedding matrix is
quantized too, per row (per token), under the Linear's name (``lm_head.weight``); an untied model's
``nn.Embedding`` stays in full precision (a lookup table, not a matrix product), as do biases and
norm weights. ``quantization_record`` is the record of that choice a run manifest keeps.
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Iterator

import torch
from torch import nn

from llm_validation.perturb import WeightCopy, gaussian_noise

MIN_BITS, MAX_BITS = 2, 16  # 1 bit has no symmetric grid (q = 0); beyond 16 the grid is finer than float32's
ROUNDINGS = ("nearest", "stochastic")
POLICY = (
    "every nn.Linear weight, symmetric per output channel (row); a tied lm_head is the input embedding and is "
    "quantized once, under its Linear name; an untied nn.Embedding, biases and norm weights stay in full precision"
)


def levels(bits: int) -> int:
    """q = 2^(bits - 1) - 1, the largest grid index; ValueError unless ``bits`` is an integer in
    [MIN_BITS, MAX_BITS]."""
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bits={bits!r} must be an integer from {MIN_BITS} to {MAX_BITS}")
    return 2 ** (int(bits) - 1) - 1


def _check_rounding(rounding: str) -> None:
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding={rounding!r} is unknown; allowed: {', '.join(ROUNDINGS)}")


def grid_step(W: torch.Tensor, bits: int) -> torch.Tensor:
    """Delta_r = max_j |W_rj| / q per output channel of ``W`` (rows; any trailing dims flattened),
    float32, shape (rows,); 0 for a zero row."""
    return W.detach().reshape(W.shape[0], -1).float().abs().amax(dim=1) / levels(bits)


def grid_indices(
    W: torch.Tensor, bits: int, rounding: str = "nearest", seed: int = 0, name: str = ""
) -> tuple[torch.Tensor, torch.Tensor]:
    """(k, Delta): the grid index of every entry of ``W`` (int32, W's shape, |k| <= q) and the step of
    every row (float32, shape (rows,)), so that Q(W) = Delta_r k_rj. ``seed`` and ``name`` key the
    uniforms of stochastic rounding (ignored by round-to-nearest)."""
    _check_rounding(rounding)
    q = levels(bits)
    step = grid_step(W, bits)
    rows = W.detach().reshape(W.shape[0], -1).float()
    x = rows / torch.where(step > 0, step, 1.0)[:, None]  # a zero row: x = 0, exact
    if rounding == "nearest":
        k = torch.round(x)
    else:
        u = gaussian_noise(seed, f"rounding:{name}", x.shape, "cpu", torch.rand).to(x.device)
        low = torch.floor(x)
        k = low + (u < x - low)
    # |x| <= q up to one float32 rounding of max|W| / (max|W| / q): the clamp keeps k on the grid.
    return k.clamp_(-q, q).to(torch.int32).reshape(W.shape), step


def quantize(W: torch.Tensor, bits: int, rounding: str = "nearest", seed: int = 0, name: str = "") -> torch.Tensor:
    """Q(W) = Delta_r k_rj (``grid_indices``), computed in float32 and cast to W's dtype and device."""
    k, step = grid_indices(W, bits, rounding, seed, name)
    flat = k.reshape(W.shape[0], -1).float() * step[:, None]
    return flat.reshape(W.shape).to(W.dtype)


def quantized_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every ``nn.Linear`` weight by name, each tensor once (a tensor shared by two Linears keeps the
    first name)."""
    found: dict[int, tuple[str, nn.Parameter]] = {}
    for prefix, module in model.named_modules():
        if isinstance(module, nn.Linear):
            found.setdefault(id(module.weight), (f"{prefix}.weight" if prefix else "weight", module.weight))
    return dict(found.values())


def grid_steps(model: nn.Module, bits: int) -> dict[str, torch.Tensor]:
    """Delta per output channel of every quantized tensor: {name: float32 tensor (rows,)}."""
    return {name: grid_step(p, bits) for name, p in quantized_parameters(model).items()}


def quantization_record(model: nn.Module) -> dict:
    """What the manifest records about the quantized tensors: the policy, their names, and the names
    each one also goes by (a tied lm_head's ``model.embed_tokens.weight``)."""
    params = quantized_parameters(model)
    by_id = {id(p): name for name, p in params.items()}
    aliases: dict[str, list[str]] = {}
    for other, p in model.named_parameters(remove_duplicate=False):
        if id(p) in by_id and other != by_id[id(p)]:
            aliases.setdefault(by_id[id(p)], []).append(other)
    embeddings = {f"{prefix}.weight" for prefix, m in model.named_modules() if isinstance(m, nn.Embedding)}
    return {
        "policy": POLICY,
        "tensors": list(params),
        "n_tensors": len(params),
        "n_weights": sum(p.numel() for p in params.values()),
        "also_named": aliases,
        "embedding_quantized": any(name in embeddings for names in aliases.values() for name in names),
    }


class Quantization(WeightCopy):
    """Quantizations of one model's linear weights, each restored bit for bit from one exact copy of
    them (``perturb.WeightCopy``): taken once, it serves every (bits, rounding, seed) of a checkpoint."""

    def __init__(self, model: nn.Module):
        super().__init__(quantized_parameters(model))

    @contextlib.contextmanager
    def applied(self, bits: int, rounding: str = "nearest", seed: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        """W <- Q(W) for every quantized weight inside the block, yielding {name: Delta per row}; the
        original bits after it."""
        levels(bits)
        _check_rounding(rounding)
        try:
            with torch.no_grad():
                steps = {name: grid_step(param, bits) for name, param in self.params.items()}
                for name, param in self.params.items():
                    param.copy_(quantize(param, bits, rounding, seed, name))
            yield steps
        finally:
            self.restore()


@contextlib.contextmanager
def quantized(
    model: nn.Module, bits: int, rounding: str = "nearest", seed: int = 0
) -> Iterator[dict[str, torch.Tensor]]:
    """One quantization of ``model`` in place, restored bit for bit on exit; yields {name: Delta per
    row}. For several on one checkpoint, make one ``Quantization`` and call ``applied`` on it."""
    with Quantization(model).applied(bits, rounding, seed) as steps:
        yield steps
