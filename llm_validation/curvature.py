"""Curvature of the held-out loss: the sigma-weighted Hessian trace and the top Hessian eigenvalue.

L(theta) is the mean next-token NLL over every predicted token of the held-out blocks (the loss
``llm_validation.evaluate.perplexity`` exponentiates). Its small-noise excess under the paper's
perturbation theta + gamma * sigma * eps, eps ~ N(0, I), is, to second order,

    E[L(theta + gamma sigma eps)] - L(theta) ~ (gamma^2 / 2) tr_sigma(H),   tr_sigma(H) = sum_p sigma_p^2 H_pp,

estimated by Hutchinson's estimator v^T H v with v_p = sigma_p z_p, z_p = +-1 (Rademacher), so
E[v v^T] = S^2 with S = diag(sigma) and E[v^T H v] = tr(S H S) = tr_sigma(H). Hessian-vector
products are double backprop: H v = grad_theta (grad_theta L . v), never the Hessian itself. The
loss over all blocks is the token-weighted mean, L = sum_b n_b L_b / n, and H v is linear in L, so
each batch contributes the HVP of its NLL sum / n; one batch's graph is held at a time.

Work in float32: the caller passes a float32 model (float64 also works; bfloat16 second
derivatives are rounding noise and are refused). The model runs in eval mode (no dropout); its
parameters are never written, only differentiated (``requires_grad`` is switched on for the
differentiated tensors and restored after).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

LossFn = Callable[[], "torch.Tensor | Iterable[torch.Tensor]"]  # L, or the terms of L = sum of terms
Tensors = Sequence[torch.Tensor]


@dataclasses.dataclass(frozen=True)
class TraceEstimate:
    """Hutchinson estimate of tr_sigma(H): mean and standard error (NaN for one probe) over probes."""

    trace: float
    stderr: float
    probes: int
    values: tuple[float, ...]  # v_k^T H v_k per probe k


@dataclasses.dataclass(frozen=True)
class EigenEstimate:
    """Largest-magnitude eigenvalue (Rayleigh quotient, signed) by power iteration."""

    eigenvalue: float
    iterations: int
    converged: bool


def _dot(a: Tensors, b: Tensors) -> float:
    """sum_p a_p . b_p, accumulated in float64."""
    return sum((x.double() * y.double()).sum().item() for x, y in zip(a, b))


def hessian_vector_product(loss_fn: LossFn, params: Tensors, vectors: Tensors) -> list[torch.Tensor]:
    """[H v restricted to ``params``] for L = ``loss_fn()`` (a scalar, or an iterable of scalar terms
    summed; each term's graph is freed before the next): grad_theta(grad_theta L_term . v), summed."""
    terms = loss_fn()
    terms = [terms] if isinstance(terms, torch.Tensor) else terms
    total = [torch.zeros_like(p) for p in params]
    for term in terms:
        grads = torch.autograd.grad(term, params, create_graph=True, allow_unused=True, materialize_grads=True)
        dot = sum((g * v).sum() for g, v in zip(grads, vectors))
        if dot.requires_grad:  # else L is at most linear in params: H v = 0
            hvs = torch.autograd.grad(dot, params, allow_unused=True, materialize_grads=True)
            for acc, hv in zip(total, hvs):
                acc.add_(hv)
    return total


def _check_count(name: str, value: int) -> None:
    if not (isinstance(value, int) and value >= 1):
        raise ValueError(f"{name}={value!r} must be an integer >= 1")


def hutchinson_trace(
    loss_fn: LossFn, params: Tensors, sigmas: Sequence[float], *, probes: int = 32, seed: int = 0
) -> TraceEstimate:
    """tr_sigma(H) = sum_p sigma_p^2 H_pp by the mean of v^T H v, v_p = sigma_p z_p, z Rademacher drawn on
    the CPU from a generator seeded with ``seed`` (same probes on every device; per probe, tensor order)."""
    _check_count("probes", probes)
    generator = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(probes):
        vs = [
            (torch.randint(0, 2, p.shape, generator=generator).to(p.dtype) * 2 - 1).mul_(s).to(p.device)
            for p, s in zip(params, sigmas)
        ]
        hvs = hessian_vector_product(loss_fn, params, vs)
        values.append(_dot(vs, hvs))
    mean = math.fsum(values) / probes
    var = math.fsum((x - mean) ** 2 for x in values) / (probes - 1) if probes > 1 else math.nan
    return TraceEstimate(trace=mean, stderr=math.sqrt(var / probes), probes=probes, values=tuple(values))


def power_iteration(
    loss_fn: LossFn, params: Tensors, scales: Sequence[float] | None = None, *, iterations=50, tol=1e-4, seed=0
) -> EigenEstimate:
    """Largest-|lambda| eigenvalue of H (``scales`` None) or of S H S, S = diag(scales) per tensor.

    u <- M u / |M u| from a CPU Gaussian start seeded with ``seed``; lambda_k = u_k^T M u_k; stops when
    |lambda_k - lambda_{k-1}| < tol |lambda_k| (converged) or after ``iterations`` products.
    """
    _check_count("iterations", iterations)
    generator = torch.Generator().manual_seed(seed)
    scales = [1.0] * len(params) if scales is None else list(scales)
    u = [torch.randn(p.shape, generator=generator).to(p.device, p.dtype) for p in params]
    eigenvalue, previous = 0.0, math.nan
    for step in range(1, iterations + 1):
        norm = math.sqrt(_dot(u, u))
        if norm == 0.0:  # M u = 0: the Hessian vanishes along everything power iteration can reach
            return EigenEstimate(eigenvalue=0.0, iterations=step - 1, converged=True)
        u = [x / norm for x in u]
        mu = hessian_vector_product(loss_fn, params, [x * s for x, s in zip(u, scales)])
        mu = [x * s for x, s in zip(mu, scales)]
        eigenvalue = _dot(u, mu)
        if abs(eigenvalue - previous) < tol * abs(eigenvalue):
            return EigenEstimate(eigenvalue=eigenvalue, iterations=step, converged=True)
        previous, u = eigenvalue, mu
    return EigenEstimate(eigenvalue=eigenvalue, iterations=iterations, converged=False)


@contextlib.contextmanager
def _differentiable(model: nn.Module, params: Tensors):
    """Eval mode with gradients on, ``requires_grad`` set on ``params``; both flags restored after. The
    math SDPA kernel: the CPU flash-attention kernel has no double backward."""
    flags, was_training = [p.requires_grad for p in params], model.training
    for p in params:
        if p.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"curvature needs float32 parameters, got {p.dtype}; pass a float32 model")
    model.eval()
    try:
        with torch.inference_mode(False), torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):
            for p in params:
                p.requires_grad_(True)
            yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        model.train(was_training)


def _nll_terms(model: nn.Module, blocks: torch.Tensor, batch_size: int) -> LossFn:
    """L as its batch terms: each batch's NLL sum divided by the total number of predicted tokens."""
    if blocks.ndim != 2 or blocks.shape[0] == 0 or blocks.shape[1] < 2:
        raise ValueError(f"blocks must be [n_blocks >= 1, seq_len >= 2], got {tuple(blocks.shape)}")
    _check_count("batch_size", batch_size)
    n_tokens, device = blocks.shape[0] * (blocks.shape[1] - 1), next(model.parameters()).device

    def terms():
        for batch in blocks.split(batch_size):
            batch = batch.to(device)
            logits = model(input_ids=batch).logits[:, :-1].float()
            yield F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten(), reduction="sum") / n_tokens

    return terms


def _named(model: nn.Module, names: Iterable[str]) -> list[torch.Tensor]:
    every = dict(model.named_parameters(remove_duplicate=False))
    unknown = [name for name in names if name not in every]
    if unknown:
        raise ValueError(f"sigmas name parameters the model lacks: {', '.join(unknown)}")
    params = [every[name] for name in names]
    if len({id(p) for p in params}) < len(params):
        raise ValueError("sigmas name one (tied) tensor twice; give each tensor once, as Perturbation.sigmas does")
    return params


def weighted_hessian_trace(
    model: nn.Module, blocks: torch.Tensor, sigmas: dict[str, float], *, probes=32, seed=0, batch_size=8
) -> TraceEstimate:
    """Hutchinson estimate of tr_sigma(H) = sum_p sigma_p^2 H_pp of the mean held-out NLL over ``blocks``.

    ``sigmas`` is {parameter name: sigma_p} as ``Perturbation(model, scale).sigmas`` gives it (Linear and
    Embedding weights, a tied embedding once); parameters not named have v = 0, i.e. do not count.
    """
    params = _named(model, sigmas)
    loss_fn = _nll_terms(model, blocks, batch_size)
    with _differentiable(model, params):
        return hutchinson_trace(loss_fn, params, list(sigmas.values()), probes=probes, seed=seed)


def top_hessian_eigenvalue(
    model: nn.Module, blocks: torch.Tensor, *, iterations=50, tol=1e-4, seed=0, batch_size=8, sigmas=None
) -> EigenEstimate:
    """Largest-magnitude eigenvalue of the Hessian of the mean held-out NLL, by power iteration.

    ``sigmas`` None: of H over every parameter with ``requires_grad`` (each tensor once). ``sigmas``
    given: of the preconditioned S H S, S = diag(sigma_p), over the named (perturbed) tensors only —
    the curvature in noise units, whose trace is tr_sigma(H).
    """
    if sigmas is None:
        params, scales = [p for p in model.parameters() if p.requires_grad], None
        if not params:
            raise ValueError("the model has no parameter with requires_grad; pass sigmas to name the tensors")
    else:
        params, scales = _named(model, sigmas), list(sigmas.values())
    loss_fn = _nll_terms(model, blocks, batch_size)
    with _differentiable(model, params):
        return power_iteration(loss_fn, params, scales, iterations=iterations, tol=tol, seed=seed)


def noise_excess_prediction(trace: float, gamma: float) -> float:
    """(gamma^2 / 2) tr_sigma(H): the second-order prediction of E[L(theta + gamma sigma eps)] - L(theta).

    Taylor: L(theta + d) = L + g^T d + d^T H d / 2 + O(|d|^3) with d = gamma S eps. E[eps] = 0 removes
    the first-order term; E[eps eps^T] = I gives E[d^T H d] = gamma^2 tr(S H S) = gamma^2 tr_sigma(H).
    Exact for a quadratic loss.
    """
    return 0.5 * gamma * gamma * trace
