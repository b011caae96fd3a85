"""The JAX perturbation and batched evaluation against the torch half: which tensors move and by how
much, pairing across checkpoints, the base perplexity, and the mean over 64 draws at two gammas."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from llm_validation import perturb as torch_perturb
from llm_validation.evaluate import perplexity as torch_perplexity
from llm_validation.jax_backend.evaluate import DrawEvaluator
from llm_validation.jax_backend.model import OlmoForCausalLM, split
from llm_validation.jax_backend.perturb import draw_keys, noise_scales, perturb
from llm_validation.jax_backend.spec import spec_from_config
from llm_validation.models import build_model, olmo_config
from tests.llm_validation.test_jax_olmo import jax_of

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DRAWS = 64
BLOCKS = np.random.default_rng(2).integers(0, 320, (6, 24))


@pytest.fixture(scope="module")
def models():
    """(torch model, its JAX twin) of the tiny preset with an untied head (so both rules show)."""
    model = build_model(olmo_config("tiny", tie_word_embeddings=False), seed=7)
    return model, jax_of(model)


def one_draw(params, sigmas, seed, gamma):
    return perturb(params, sigmas, jnp.asarray(draw_keys([seed], list(sigmas))[0]), jnp.float32(gamma))


@pytest.mark.parametrize("scale", ["init", "relative", "absolute"])
def test_sigmas_and_perturbed_tensors_are_the_torch_paths(models, scale):
    torch_model, jax_model = models
    expected = torch_perturb.noise_scales(torch_model, scale)
    params = split(jax_model)[1]
    got = noise_scales(params, spec_from_config(torch_model.config.to_dict()), scale)
    assert got.keys() == expected.keys()
    assert all(got[k] == pytest.approx(expected[k], rel=1e-6) for k in got)


def test_a_tied_embedding_is_one_tensor_perturbed_once():
    tied = build_model(olmo_config("tiny"), seed=1)
    params = split(jax_of(tied))[1]
    sigmas = noise_scales(params, spec_from_config(tied.config.to_dict()))
    assert sigmas.keys() == torch_perturb.noise_scales(tied).keys()
    assert "lm_head.weight" not in sigmas and "model.embed_tokens.weight" in sigmas


def test_a_draw_adds_gamma_sigma_standard_normal_noise_keyed_by_seed_and_name(models):
    torch_model, jax_model = models
    params = split(jax_model)[1]
    sigmas = {k: 0.02 for k in params}
    gamma = 3.0
    drawn = one_draw(params, sigmas, seed=5, gamma=gamma)
    eps = {k: (np.asarray(drawn[k]) - np.asarray(params[k])) / (gamma * 0.02) for k in params}
    pooled = np.concatenate([e.ravel() for e in eps.values()])
    assert abs(pooled.mean()) < 4 / np.sqrt(pooled.size) and abs(pooled.std() - 1) < 0.01
    # Another checkpoint (other weights): draw 5 is the same noise; draw 6 is other noise.
    other = {k: v * 2 for k, v in params.items()}
    again = one_draw(other, sigmas, seed=5, gamma=gamma)
    for k in params:
        np.testing.assert_allclose((np.asarray(again[k]) - np.asarray(other[k])) / (gamma * 0.02), eps[k], atol=1e-4)
    sixth = one_draw(params, sigmas, seed=6, gamma=gamma)
    assert not np.allclose(
        np.asarray(sixth["model.embed_tokens.weight"]), np.asarray(drawn["model.embed_tokens.weight"])
    )
    # Gamma 0 is the model itself, bit for bit.
    zero = one_draw(params, sigmas, seed=5, gamma=0.0)
    assert all(np.array_equal(np.asarray(zero[k]), np.asarray(params[k])) for k in params)


def test_only_named_tensors_move():
    biased = build_model(olmo_config("tiny", attention_bias=True), seed=2)
    params = split(jax_of(biased))[1]
    sigmas = noise_scales(params, spec_from_config(biased.config.to_dict()))
    drawn = one_draw(params, sigmas, seed=0, gamma=1.0)
    moved = {k for k in params if not np.array_equal(np.asarray(drawn[k]), np.asarray(params[k]))}
    assert moved == set(torch_perturb.noise_scales(biased)) and not any(k.endswith("bias") for k in moved)


@pytest.fixture(scope="module")
def evaluator(models):
    torch_model, jax_model = models
    return DrawEvaluator(jax_model, spec_from_config(torch_model.config.to_dict()), BLOCKS, 4, draws_per_call=DRAWS)


def test_the_unperturbed_perplexity_is_the_torch_paths(models, evaluator):
    torch_model, _ = models
    expected = torch_perplexity(torch_model, torch.tensor(BLOCKS), 4)
    got = evaluator.perplexities([(0.0, 0)] * DRAWS)[0]  # gamma 0: the model itself
    assert got.n_tokens == expected.n_tokens and got.seq_len == expected.seq_len
    assert abs(got.perplexity / expected.perplexity - 1) < 1e-6, (got.perplexity, expected.perplexity)


@pytest.mark.parametrize("gamma", [1.0, 4.0])
def test_the_mean_perturbed_perplexity_over_64_draws_agrees_with_torch(models, evaluator, gamma):
    torch_model, _ = models
    jax_values = np.exp(evaluator.mean_nlls([(gamma, seed) for seed in range(DRAWS)]))
    perturbation = torch_perturb.Perturbation(torch_model, "init")
    torch_values = []
    for seed in range(DRAWS):
        with perturbation.draw(gamma, seed):
            torch_values.append(torch_perplexity(torch_model, torch.tensor(BLOCKS), 4).perplexity)
    torch_values = np.array(torch_values)
    assert jax_values.std() > 0.1 and torch_values.std() > 0.1  # the noise is felt, draw by draw
    standard_error = np.sqrt(jax_values.var(ddof=1) / DRAWS + torch_values.var(ddof=1) / DRAWS)
    assert abs(jax_values.mean() - torch_values.mean()) < 2 * standard_error, (jax_values.mean(), torch_values.mean())


@pytest.fixture(scope="module")
def small(models):
    """The same model, five draws a call."""
    torch_model, jax_model = models
    return DrawEvaluator(jax_model, spec_from_config(torch_model.config.to_dict()), BLOCKS, 4, draws_per_call=5)


def test_chunks_do_not_change_the_numbers(evaluator, small):
    """A draw's value does not depend on the draws beside it in a call, nor on the call's size."""
    draws = [(2.0, seed) for seed in range(DRAWS)]
    np.testing.assert_allclose(small.mean_nlls(draws[:7]), evaluator.mean_nlls(draws)[:7], rtol=1e-6)


def test_bfloat16_draws_track_float32(models, small):
    torch_model, jax_model = models
    spec = spec_from_config(torch_model.config.to_dict())
    half = OlmoForCausalLM(spec, {k: v.astype(jnp.bfloat16) for k, v in split(jax_model)[1].items()})
    low = DrawEvaluator(half, spec, BLOCKS, 4, draws_per_call=5)
    assert low.dtype == "bfloat16"
    draws = [(0.0, 0), (2.0, 0), (2.0, 1), (4.0, 0), (4.0, 1)]
    np.testing.assert_allclose(low.mean_nlls(draws), small.mean_nlls(draws), rtol=2e-3)
