"""Curvature estimators against exact Hessians (a small OLMo, a quadratic) and against measured noise."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from llm_validation.curvature import (
    hessian_vector_product,
    hutchinson_trace,
    noise_excess_prediction,
    power_iteration,
    top_hessian_eigenvalue,
    weighted_hessian_trace,
)
from llm_validation.evaluate import pack_tokens, perplexity
from llm_validation.models import ModelPreset, build_model, count_parameters, olmo_config
from llm_validation.perturb import Perturbation

from .conftest import make_model, tiny_corpus

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VOCAB = 24
SMALL = ModelPreset(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, vocab_size=VOCAB)


def cyclic_blocks(n_blocks: int, seq_len: int, seed: int) -> torch.Tensor:
    """Token k+1 follows token k (mod VOCAB), 30% of tokens replaced at random: something to learn."""
    generator = torch.Generator().manual_seed(seed)
    blocks = (torch.randint(0, VOCAB, (n_blocks, 1), generator=generator) + torch.arange(seq_len)) % VOCAB
    noise = torch.randint(0, VOCAB, blocks.shape, generator=generator)
    return torch.where(torch.rand(blocks.shape, generator=generator) < 0.3, noise, blocks)


def train(model, blocks: torch.Tensor, steps: int, lr: float):
    """A few full-batch Adam steps, so the model is a checkpoint rather than an initialisation."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        logits = model(input_ids=blocks).logits[:, :-1]
        loss = F.cross_entropy(logits.flatten(0, 1), blocks[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model.eval()


@pytest.fixture(scope="module")
def small():
    """(model, held-out blocks, sigmas, exact Hessian over the perturbed tensors, flattened sigmas)."""
    model = train(build_model(olmo_config(SMALL), seed=0), cyclic_blocks(256, 16, seed=1), steps=100, lr=3e-2)
    blocks = cyclic_blocks(16, 16, seed=2)
    sigmas = Perturbation(model, "init").sigmas
    named = dict(model.named_parameters())
    shapes = {name: named[name].shape for name in sigmas}
    flat = torch.cat([named[name].detach().reshape(-1) for name in sigmas])

    def loss(flat_params):
        tensors = dict(zip(sigmas, flat_params.split([s.numel() for s in shapes.values()])))
        params = {name: tensor.view(shapes[name]) for name, tensor in tensors.items()}
        params["lm_head.weight"] = params["model.embed_tokens.weight"]  # tied: the same tensor
        logits = functional_call(model, params, (blocks,)).logits[:, :-1]
        return F.cross_entropy(logits.flatten(0, 1), blocks[:, 1:].flatten())

    with sdpa_kernel(SDPBackend.MATH):  # the CPU flash kernel has no double backward
        hessian = torch.autograd.functional.hessian(loss, flat).double()
    scale = torch.cat([torch.full((shapes[name].numel(),), sigma) for name, sigma in sigmas.items()]).double()
    assert count_parameters(model) == flat.numel() == 832  # every OLMo-1 tensor is perturbed: no norm weights
    return model, blocks, sigmas, (hessian + hessian.T) / 2, scale


def top_by_magnitude(matrix: torch.Tensor) -> float:
    eigenvalues = torch.linalg.eigvalsh(matrix)
    return eigenvalues[eigenvalues.abs().argmax()].item()


def test_hutchinson_matches_exact_weighted_trace(small):
    model, blocks, sigmas, hessian, scale = small
    exact = (scale**2 * hessian.diagonal()).sum().item()
    estimate = weighted_hessian_trace(model, blocks, sigmas, probes=256, seed=0)
    print(f"exact {exact:.6g} estimate {estimate.trace:.6g} +- {estimate.stderr:.3g}")
    assert estimate.probes == len(estimate.values) == 256
    assert estimate.trace == pytest.approx(exact, rel=0.10)
    assert abs(estimate.trace - exact) < 4 * estimate.stderr


def test_batches_are_weighted_by_tokens(small):
    model, blocks, sigmas, _, _ = small
    whole = weighted_hessian_trace(model, blocks, sigmas, probes=3, seed=5, batch_size=16)
    ragged = weighted_hessian_trace(model, blocks, sigmas, probes=3, seed=5, batch_size=5)  # 5, 5, 5, 1
    assert ragged.values == pytest.approx(whole.values, rel=1e-4)


def test_power_iteration_finds_top_eigenvalue(small):
    model, blocks, sigmas, hessian, scale = small
    for preconditioned, exact in ((False, hessian), (True, scale[:, None] * hessian * scale[None, :])):
        found = top_hessian_eigenvalue(model, blocks, iterations=100, sigmas=sigmas if preconditioned else None)
        print(f"S H S={preconditioned}: exact {top_by_magnitude(exact):.6g} found {found}")
        assert found.converged and found.iterations < 100
        assert found.eigenvalue == pytest.approx(top_by_magnitude(exact), rel=0.01)


def test_deterministic_and_leaves_the_model_unchanged(small):
    model, blocks, sigmas, _, _ = small
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    frozen = model.model.layers[0].mlp.down_proj.weight
    frozen.requires_grad_(False)
    model.train()
    try:
        first = weighted_hessian_trace(model, blocks, sigmas, probes=4, seed=7)
        assert weighted_hessian_trace(model, blocks, sigmas, probes=4, seed=7) == first
        assert weighted_hessian_trace(model, blocks, sigmas, probes=4, seed=8).values != first.values
        eigen = top_hessian_eigenvalue(model, blocks, iterations=5, seed=3)
        assert top_hessian_eigenvalue(model, blocks, iterations=5, seed=3) == eigen
        assert model.training and not frozen.requires_grad
        assert all(p.requires_grad and p.grad is None for p in model.parameters() if p is not frozen)
    finally:
        frozen.requires_grad_(True)
        model.eval()
    assert all(torch.equal(tensor, before[name]) for name, tensor in model.state_dict().items())


def test_bad_input_is_named(small):
    model, blocks, sigmas, _, _ = small
    with pytest.raises(ValueError, match=r"probes=0 must be an integer >= 1"):
        weighted_hessian_trace(model, blocks, sigmas, probes=0)
    with pytest.raises(ValueError, match=r"iterations=0 must be an integer >= 1"):
        top_hessian_eigenvalue(model, blocks, iterations=0)
    with pytest.raises(ValueError, match="lacks: nope.weight"):
        weighted_hessian_trace(model, blocks, {"nope.weight": 1.0})
    with pytest.raises(ValueError, match="tied"):
        weighted_hessian_trace(model, blocks, {"model.embed_tokens.weight": 1.0, "lm_head.weight": 1.0})
    with pytest.raises(ValueError, match=r"float32.*bfloat16"):
        weighted_hessian_trace(build_model(olmo_config(SMALL)).to(torch.bfloat16), blocks, sigmas, probes=1)


class Quadratic(torch.nn.Module):
    """L(theta) = (theta - a)^T A (theta - a) / 2 + c over two tensors (flattened and concatenated)."""

    def __init__(self, matrix: torch.Tensor, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.matrix, self.constant = matrix, 1.5
        self.anchor = torch.randn(17, generator=generator, dtype=torch.float64)
        self.w = torch.nn.Parameter(torch.randn(3, 4, generator=generator, dtype=torch.float64))
        self.b = torch.nn.Parameter(torch.randn(5, generator=generator, dtype=torch.float64))

    def forward(self, delta: torch.Tensor | None = None) -> torch.Tensor:
        x = torch.cat([self.w.reshape(-1), self.b]) - self.anchor
        x = x if delta is None else x + delta  # delta: [draws, 17] -> one loss per draw
        return 0.5 * (x @ self.matrix * x).sum(-1) + self.constant


def random_symmetric(seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    root = torch.randn(17, 17, generator=generator, dtype=torch.float64)
    return root @ root.T / 17 + torch.diag(torch.linspace(-1.0, 3.0, 17, dtype=torch.float64))


SIGMAS = (0.5, 2.0)  # sigma of w, sigma of b
SIGMA_FLAT = torch.tensor([SIGMAS[0]] * 12 + [SIGMAS[1]] * 5, dtype=torch.float64)


def test_quadratic_hessian_vector_product_is_exact():
    quadratic = Quadratic(random_symmetric(0))
    vector = torch.randn(17, dtype=torch.float64)
    hv = hessian_vector_product(quadratic, [quadratic.w, quadratic.b], [vector[:12].view(3, 4), vector[12:]])
    torch.testing.assert_close(torch.cat([hv[0].reshape(-1), hv[1]]), quadratic.matrix @ vector)


def test_quadratic_noise_excess_is_half_gamma_squared_weighted_trace():
    """E[L(theta + gamma S eps)] - L(theta) = (gamma^2 / 2) sum_p sigma_p^2 A_pp exactly for a quadratic."""
    quadratic, gamma = Quadratic(random_symmetric(1)), 0.7
    exact_trace = (SIGMA_FLAT**2 * quadratic.matrix.diagonal()).sum().item()
    analytic = 0.5 * gamma**2 * (SIGMA_FLAT**2 * quadratic.matrix.diagonal()).sum().item()
    assert noise_excess_prediction(exact_trace, gamma) == pytest.approx(analytic, rel=1e-6)

    generator = torch.Generator().manual_seed(2)
    eps = torch.randn(200_000, 17, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        excess = quadratic(gamma * SIGMA_FLAT * eps) - quadratic()
    mean, stderr = excess.mean().item(), excess.std().item() / math.sqrt(len(excess))
    print(f"Monte Carlo {mean:.6g} +- {stderr:.2g}, prediction {analytic:.6g}")
    assert abs(mean - analytic) < 3 * stderr

    estimate = hutchinson_trace(quadratic, [quadratic.w, quadratic.b], SIGMAS, probes=256, seed=0)
    print(f"Hutchinson {estimate.trace:.6g} +- {estimate.stderr:.2g}, exact {exact_trace:.6g}")
    assert abs(estimate.trace - exact_trace) < 3 * estimate.stderr


def test_hutchinson_is_exact_per_probe_for_a_diagonal_hessian():
    """z_p^2 = 1: v^T D v = sum_p sigma_p^2 D_pp whatever the signs, so every probe is the exact trace."""
    quadratic = Quadratic(torch.diag(torch.linspace(-2.0, 5.0, 17, dtype=torch.float64)))
    exact = (SIGMA_FLAT**2 * quadratic.matrix.diagonal()).sum().item()
    estimate = hutchinson_trace(quadratic, [quadratic.w, quadratic.b], SIGMAS, probes=5, seed=3)
    assert estimate.values == pytest.approx([exact] * 5, rel=1e-12)
    assert estimate.stderr == pytest.approx(0.0, abs=1e-12)


def test_quadratic_power_iteration():
    quadratic = Quadratic(random_symmetric(4))
    params = [quadratic.w, quadratic.b]
    preconditioned = SIGMA_FLAT[:, None] * quadratic.matrix * SIGMA_FLAT[None, :]
    for scales, matrix in ((None, quadratic.matrix), (SIGMAS, preconditioned)):
        found = power_iteration(quadratic, params, scales, iterations=500, tol=1e-10)
        assert found.converged
        assert found.eigenvalue == pytest.approx(top_by_magnitude(matrix), rel=1e-6)
    stopped = power_iteration(quadratic, params, iterations=2, tol=1e-10)
    assert (stopped.iterations, stopped.converged) == (2, False)


def test_tiny_olmo_noise_excess_matches_prediction(tokenizer):
    """Measured Delta-NLL under ``Perturbation(model, "init")`` at gamma = 1e-2 vs (gamma^2 / 2) tr_sigma(H).

    The raw mean of L(theta + d) - L(theta) over 64 draws is useless at this gamma: its first-order
    term g^T d has zero mean but a per-draw std gamma |S g| ~ 1.5e-4, twenty times the second-order
    signal (~7e-6), so its standard error (~2e-5) exceeds the effect. Each draw is therefore used as an
    antithetic pair: inside ``draw`` the weights are reflected about the exact snapshot (theta - d),
    and (L(theta + d) + L(theta - d)) / 2 - L(theta) = d^T H d / 2 + O(gamma^4) cancels every odd
    order exactly. Tolerance: 3 combined standard errors, sqrt(se_MC^2 + (gamma^2/2 se_trace)^2), of
    the 64-pair mean and of the 128-probe Hutchinson trace; the O(gamma^4) remainder is ~gamma^2 = 1e-4
    relative, and float32 rounding of the mean NLL (~1e-8 after averaging the tokens) is far below
    both. The combined error must itself be under 15% of the prediction, so the check has teeth.
    """
    model = make_model(tokenizer, seed=3)
    train_blocks = pack_tokens(tokenizer(tiny_corpus(200))["input_ids"], 32, tokenizer.eos_token_id)
    model = train(model, train_blocks, steps=30, lr=1e-2)
    blocks = pack_tokens(tokenizer(tiny_corpus(40, seed=1))["input_ids"], 32, tokenizer.eos_token_id)
    perturbation, gamma = Perturbation(model, "init"), 1e-2

    trace = weighted_hessian_trace(model, blocks, perturbation.sigmas, probes=128, seed=0)
    base = perplexity(model, blocks, batch_size=8).mean_nll
    raw, paired = [], []
    for seed in range(64):
        with perturbation.draw(gamma, seed):
            plus = perplexity(model, blocks, batch_size=8).mean_nll
            with torch.no_grad():
                for name, param in perturbation.params.items():
                    param.copy_(2 * perturbation.snapshot[name] - param)  # theta - d
            minus = perplexity(model, blocks, batch_size=8).mean_nll
        raw.append(plus - base)
        paired.append((plus + minus) / 2 - base)
    assert perplexity(model, blocks, batch_size=8).mean_nll == base  # restored bit for bit

    def mean_and_stderr(values):
        mean = sum(values) / len(values)
        return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))

    predicted = noise_excess_prediction(trace.trace, gamma)
    measured, se_measured = mean_and_stderr(paired)
    error = math.hypot(se_measured, noise_excess_prediction(trace.stderr, gamma))
    print(
        f"trace {trace.trace:.5g} +- {trace.stderr:.2g}; predicted {predicted:.4g}, paired {measured:.4g} "
        f"+- {se_measured:.2g}, raw {mean_and_stderr(raw)[0]:.3g} +- {mean_and_stderr(raw)[1]:.2g}"
    )
    assert error < 0.15 * predicted
    assert abs(measured - predicted) < 3 * error
