"""Per-channel quantization of a tiny OLMo model's linear weights: the round-trip bounds, the grid,
unbiased stochastic rounding, and the exact restore."""

import pytest
import torch

from llm_validation.evaluate import pack_tokens, perplexity
from llm_validation.models import build_model, olmo_config
from llm_validation.quantize import (
    MAX_BITS,
    MIN_BITS,
    Quantization,
    grid_indices,
    grid_step,
    grid_steps,
    levels,
    quantization_record,
    quantize,
    quantized,
    quantized_parameters,
)

from .conftest import make_model, tiny_corpus

pytestmark = pytest.mark.usefixtures("one_torch_thread")
EPS32 = torch.finfo(torch.float32).eps
LM_HEAD, EMBED = "lm_head.weight", "model.embed_tokens.weight"


@pytest.fixture
def model(tokenizer):
    return make_model(tokenizer, seed=3)


def snapshot(model):
    return {name: t.clone() for name, t in model.state_dict().items()}


@pytest.mark.parametrize("bits", [8, 4, 3])
def test_nearest_moves_every_entry_by_at_most_half_a_step_onto_the_grid(model, bits):
    q = levels(bits)
    worst = 0.0
    for name, W in quantized_parameters(model).items():
        k, step = grid_indices(W, bits)
        Q = quantize(W, bits, name=name)
        assert k.dtype == torch.int32 and int(k.abs().max()) <= q, name
        assert (k.abs().amax(dim=1) == q).all(), name  # each row's largest entry is an end of its grid
        assert torch.equal(Q, k.float() * step[:, None])  # float32: Q is Delta_r k_rj exactly as computed
        ratio = Q.double() / step.double()[:, None]  # |Q| / Delta: integers up to one float32 rounding
        assert (ratio - ratio.round()).abs().max() <= q * EPS32
        row_max = W.detach().abs().amax(dim=1, keepdim=True).double()
        error = (Q.double() - W.detach().double()).abs()
        assert (error <= step.double()[:, None] / 2 + 2 * EPS32 * row_max).all(), name
        worst = max(worst, float((error / step.double()[:, None]).max()))
    assert 0.49 < worst <= 0.5 + 2 * q * EPS32  # the bound is reached, never passed


def test_grid_steps_are_the_row_maxima_over_q(model):
    steps = grid_steps(model, 4)
    params = quantized_parameters(model)
    assert list(steps) == list(params) and len(steps) == 2 * 7 + 1  # 7 Linears a layer, and the tied head
    for name, W in params.items():
        assert steps[name].shape == (W.shape[0],)
        torch.testing.assert_close(steps[name], W.detach().abs().amax(dim=1) / 7, rtol=0, atol=0)


def test_a_zero_row_stays_zero_and_every_row_is_quantized_alone(model):
    W = quantized_parameters(model)["model.layers.0.mlp.up_proj.weight"].detach().clone()
    W[5] = 0.0
    assert grid_step(W, 3)[5] == 0
    for rounding in ("nearest", "stochastic"):
        Q = quantize(W, 3, rounding, seed=2, name="w")
        assert torch.equal(Q[5], torch.zeros_like(W[5])) and torch.isfinite(Q).all()
    assert torch.equal(quantize(W, 3)[6:], quantize(W[6:], 3))  # per output channel: rows do not interact


def test_stochastic_rounding_is_within_a_step_unbiased_and_of_variance_delta2_p_1_minus_p(model):
    W = quantized_parameters(model)["model.layers.1.mlp.gate_proj.weight"].detach()
    bits, draws = 3, 400
    step = grid_step(W, bits).double()[:, None]
    x = W.double() / step
    p = x - x.floor()
    errors = torch.stack([quantize(W, bits, "stochastic", seed, "gate").double() - W.double() for seed in range(draws)])
    assert (errors.abs() < step).all()  # every draw, every entry: strictly within one step
    assert (errors[:, p == 0] == 0).all()  # an entry on the grid never moves
    scaled = errors / step  # per entry: mean 0, variance p (1 - p)
    total = p * (1 - p)
    z = scaled.mean().item() / (total.sum().sqrt().item() / draws**0.5 / W.numel())
    assert abs(z) < 4  # the mean over all entries and draws is unbiased within 4 standard errors
    per_entry = scaled.mean(0) / (total / draws).sqrt()
    assert (per_entry[total > 0].abs() > 4).float().mean() < 0.005  # ~6e-5 for a normal mean
    assert scaled.var(0).mean().item() == pytest.approx(total.mean().item(), rel=0.05)


def test_stochastic_draws_are_keyed_by_seed_and_name(model):
    W = quantized_parameters(model)[LM_HEAD].detach()
    draw = quantize(W, 4, "stochastic", seed=1, name=LM_HEAD)
    assert torch.equal(draw, quantize(W, 4, "stochastic", seed=1, name=LM_HEAD))
    assert not torch.equal(draw, quantize(W, 4, "stochastic", seed=2, name=LM_HEAD))
    assert not torch.equal(draw, quantize(W, 4, "stochastic", seed=1, name=EMBED))
    assert torch.equal(quantize(W, 4, seed=1), quantize(W, 4, seed=9))  # round-to-nearest draws nothing


def test_inside_the_block_every_linear_weight_is_quantized_and_restored_bit_for_bit_after(model, tokenizer):
    before = snapshot(model)
    blocks = pack_tokens(tokenizer(tiny_corpus(40, seed=1))["input_ids"], seq_len=32, separator=tokenizer.eos_token_id)
    clean = perplexity(model, blocks, 4).perplexity
    quantization = Quantization(model)
    for bits, rounding, seed in ((8, "nearest", 0), (3, "stochastic", 1), (2, "nearest", 0)):
        with quantization.applied(bits, rounding, seed) as steps:
            state = model.state_dict()
            for name in quantized_parameters(model):
                assert torch.equal(state[name], quantize(before[name], bits, rounding, seed, name)), name
                assert torch.equal(steps[name], grid_step(before[name], bits))
            assert torch.equal(state[EMBED], state[LM_HEAD])  # tied: the embedding is the quantized head
            norms = [n for n in state if "norm" in n or n.endswith("bias")]
            assert all(torch.equal(state[n], before[n]) for n in norms)
            assert perplexity(model, blocks, 4).perplexity != clean
    with pytest.raises(RuntimeError, match="inside"), quantized(model, 4):
        raise RuntimeError("inside")
    assert all(torch.equal(t, before[name]) for name, t in model.state_dict().items())
    assert perplexity(model, blocks, 4).perplexity == clean


def test_bfloat16_weights_are_quantized_in_float32_and_cast_back(model):
    model = model.to(torch.bfloat16)
    before = snapshot(model)
    W = quantized_parameters(model)[LM_HEAD].detach()
    k, step = grid_indices(W, 4)
    Q = quantize(W, 4)
    assert Q.dtype == torch.bfloat16 and torch.equal(Q, (k.float() * step[:, None]).to(torch.bfloat16))
    ulp = torch.finfo(torch.bfloat16).eps * Q.float().abs()  # one more rounding, to bfloat16's 8 bits
    assert ((Q.float() - W.float()).abs() <= step[:, None] / 2 + ulp / 2 + 2 * EPS32 * W.float().abs().max()).all()
    with quantized(model, 4, "stochastic", 3):
        pass
    assert all(torch.equal(t, before[name]) for name, t in model.state_dict().items())


def test_an_untied_embedding_stays_in_full_precision(tokenizer):
    model = build_model(olmo_config("tiny", vocab_size=len(tokenizer), tie_word_embeddings=False), 0)
    record = quantization_record(model)
    assert EMBED not in quantized_parameters(model) and LM_HEAD in quantized_parameters(model)
    assert record["also_named"] == {} and not record["embedding_quantized"] and record["n_tensors"] == 15
    embedding = model.model.embed_tokens.weight.detach().clone()
    with quantized(model, 2):
        assert torch.equal(model.model.embed_tokens.weight, embedding)


def test_the_tied_record_names_the_embedding(model):
    record = quantization_record(model)
    assert record["also_named"] == {LM_HEAD: [EMBED]} and record["embedding_quantized"]
    assert record["n_weights"] == sum(p.numel() for p in quantized_parameters(model).values())


@pytest.mark.parametrize("bits", [1, 17, 0, 8.0, True, "8"])
def test_bits_outside_2_to_16_are_refused_naming_the_value(model, bits):
    before = snapshot(model)
    with pytest.raises(ValueError, match=f"bits={bits!r} must be an integer from {MIN_BITS} to {MAX_BITS}"):
        with quantized(model, bits):
            pass
    assert all(torch.equal(t, before[name]) for name, t in model.state_dict().items())


def test_an_unknown_rounding_is_refused(model):
    with pytest.raises(ValueError, match="rounding='bogus' is unknown; allowed: nearest, stochastic"):
        quantize(quantized_parameters(model)[LM_HEAD], 4, "bogus")
    assert [levels(b) for b in (2, 3, 4, 8, 16)] == [1, 3, 7, 127, 32767]
