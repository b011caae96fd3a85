import math

import pytest
import torch
from torch import nn

from llm_validation.evaluate import pack_tokens, perplexity
from llm_validation.models import build_model, olmo_config
from llm_validation.perturb import gaussian_noise, noise_scales, perturbed, perturbed_parameters

from .conftest import make_model, tiny_corpus

EMBED = "model.embed_tokens.weight"


@pytest.fixture
def model(tokenizer):
    return make_model(tokenizer, seed=3)


@pytest.fixture
def blocks(tokenizer):
    return pack_tokens(tokenizer(tiny_corpus(40, seed=1))["input_ids"], seq_len=32, separator=tokenizer.eos_token_id)


def snapshot(model):
    return {name: t.clone() for name, t in model.state_dict().items()}


def test_restore_is_bit_exact_after_many_draws(model):
    before = snapshot(model)
    for draw in range(12):
        scale = ("init", "relative", "absolute")[draw % 3]
        with perturbed(model, gamma=0.1 * (draw + 1), seed=draw, scale=scale):
            assert not torch.equal(model.model.embed_tokens.weight, before[EMBED])
    with pytest.raises(RuntimeError, match="inside"), perturbed(model, 1.0, seed=99):
        raise RuntimeError("inside")
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_bfloat16_restore_is_bit_exact(model):
    model = model.to(torch.bfloat16)
    before = snapshot(model)
    for draw in range(3):
        with perturbed(model, 0.5, seed=draw):
            pass
    assert all(torch.equal(t, before[name]) for name, t in model.state_dict().items())


def test_one_seed_one_perturbed_perplexity(model, blocks):
    clean = perplexity(model, blocks, batch_size=4).perplexity
    with perturbed(model, 1.0, seed=7):
        first = perplexity(model, blocks, batch_size=4).perplexity
    with perturbed(model, 1.0, seed=7):
        second = perplexity(model, blocks, batch_size=4).perplexity
    with perturbed(model, 1.0, seed=8):
        other = perplexity(model, blocks, batch_size=4).perplexity
    assert first == second
    assert other != first and first != clean
    assert perplexity(model, blocks, batch_size=4).perplexity == clean


def deltas(model, gamma, seed, scale):
    before = snapshot(model)
    with perturbed(model, gamma, seed, scale) as sigmas:
        after = snapshot(model)
    return {name: after[name] - before[name] for name in sigmas}, sigmas


def test_same_noise_on_every_checkpoint(tokenizer):
    a, sigmas_a = deltas(make_model(tokenizer, seed=1), 0.5, seed=4, scale="init")
    b, sigmas_b = deltas(make_model(tokenizer, seed=2), 0.5, seed=4, scale="init")
    assert sigmas_a == sigmas_b
    for name in a:
        expected = 0.5 * 0.02 * gaussian_noise(4, name, a[name].shape)
        torch.testing.assert_close(a[name], expected, rtol=0, atol=1e-6)
        torch.testing.assert_close(b[name], expected, rtol=0, atol=1e-6)


def test_noise_is_keyed_by_seed_and_name():
    assert torch.equal(gaussian_noise(1, "w", (5, 3)), gaussian_noise(1, "w", (5, 3)))
    assert not torch.equal(gaussian_noise(1, "w", (5, 3)), gaussian_noise(2, "w", (5, 3)))
    assert not torch.equal(gaussian_noise(1, "w", (5, 3)), gaussian_noise(1, "v", (5, 3)))
    assert gaussian_noise(1, "w", (5, 3)).dtype == torch.float32


@pytest.mark.parametrize("scale", ["init", "relative", "absolute"])
def test_noise_std_matches_requested_scale(scale):
    model = build_model(olmo_config("tiny", vocab_size=4096), seed=0)  # a 131k-entry embedding
    rms = model.model.embed_tokens.weight.detach().pow(2).mean().sqrt().item()
    requested = 0.3 * {"init": 0.02, "relative": rms, "absolute": 1.0}[scale]
    delta, sigmas = deltas(model, 0.3, seed=0, scale=scale)
    assert sigmas[EMBED] == pytest.approx(requested / 0.3, rel=1e-6)
    assert delta[EMBED].numel() > 100_000
    assert delta[EMBED].std().item() == pytest.approx(requested, rel=0.02)


def test_tied_embedding_perturbed_once(model):
    assert model.lm_head.weight is model.model.embed_tokens.weight
    names = perturbed_parameters(model)
    assert EMBED in names and "lm_head.weight" not in names
    delta, _ = deltas(model, 1.0, seed=5, scale="absolute")
    torch.testing.assert_close(delta[EMBED], gaussian_noise(5, EMBED, delta[EMBED].shape), rtol=0, atol=1e-6)


def test_norms_and_biases_are_not_perturbed():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Embedding(3, 4))
    assert list(perturbed_parameters(model)) == ["0.weight", "2.weight"]
    assert noise_scales(model, "absolute") == {"0.weight": 1.0, "2.weight": 1.0}


@pytest.mark.parametrize("gamma", [-0.1, math.nan])
def test_bad_gamma_named(model, gamma):
    with pytest.raises(ValueError, match=f"gamma={gamma}"), perturbed(model, gamma, seed=0):
        pass


def test_bad_scale_and_missing_init_std(model):
    with pytest.raises(ValueError, match="scale='kaiming'.*allowed: init, relative, absolute"):
        noise_scales(model, "kaiming")
    with pytest.raises(ValueError, match="initializer_range"):
        noise_scales(nn.Linear(2, 2), "init")


def test_one_perturbation_serves_many_draws_exactly(folder_series):
    from llm_validation.checkpoints import load_checkpoint
    from llm_validation.perturb import Perturbation, perturbed

    root, _ = folder_series
    model, _ = load_checkpoint(root, "step10-tokens1K")
    original = {k: v.clone() for k, v in model.state_dict().items()}
    perturbation = Perturbation(model, "init")
    for seed in range(5):
        with perturbation.draw(0.5, seed):
            via_object = {k: v.clone() for k, v in model.state_dict().items()}
        with perturbed(model, 0.5, seed):
            via_function = {k: v.clone() for k, v in model.state_dict().items()}
        assert all(torch.equal(via_object[k], via_function[k]) for k in original)
        assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())
