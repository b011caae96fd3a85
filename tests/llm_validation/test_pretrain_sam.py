"""Sharpness-aware minimisation in pre-training: the update is SAM's formula, runs are deterministic,
resume bit for bit, and differ from plain AdamW."""

import dataclasses

import pytest
import torch

from llm_validation.models import build_model, olmo_config
from llm_validation.pretrain import PretrainConfig, pretrain, sam_gradient
from tests.llm_validation.test_pretrain import CONFIG, assert_same_weights, weights

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SAM = dataclasses.replace(CONFIG, budgets=(1024,), sam_rho=0.05)


def _loss_grads(model, batch):
    model.zero_grad(set_to_none=True)
    model(input_ids=batch, labels=batch).loss.backward()
    return [p.grad.detach().clone() for p in model.parameters()]


def test_the_sam_gradient_is_the_gradient_at_the_ascent_point_and_the_weights_come_back_bit_for_bit():
    torch.manual_seed(0)
    model = build_model(olmo_config("tiny", vocab_size=320), seed=0)
    batch = torch.randint(0, 320, (4, 16))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g = _loss_grads(model, batch)
    norm = torch.sqrt(sum((x.double() ** 2).sum() for x in g))
    # By hand: w + rho g / ||g|| on a copy, and its gradient there.
    twin = build_model(olmo_config("tiny", vocab_size=320), seed=0)
    with torch.no_grad():
        for p, x in zip(twin.parameters(), g):
            p.add_(x * (0.05 / norm).float())
    expected = _loss_grads(twin, batch)

    _loss_grads(model, batch)
    sam_gradient(model, batch, 0.05)
    got = [p.grad for p in model.parameters()]
    assert max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(got, expected)) < 1e-5
    assert max(float((a - b).abs().max()) for a, b in zip(got, g)) > 1e-6  # not the plain gradient
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_sam_series_is_deterministic_resumes_bit_for_bit_and_differs_from_adamw(tmp_path):
    whole = pretrain(SAM, tmp_path / "a", progress=False)
    out, calls, resumed = tmp_path / "b", 0, []
    while not resumed:  # killed every 3 updates, started again
        resumed = pretrain(SAM, out, progress=False, resume_every=2, max_steps_this_call=3)
        calls += 1
    assert calls >= 3
    assert_same_weights(whole[0], resumed[0])
    plain = pretrain(dataclasses.replace(SAM, sam_rho=0.0), tmp_path / "c", progress=False)
    key = "model.embed_tokens.weight"
    assert not torch.equal(weights(whole[0])[key], weights(plain[0])[key])


@pytest.mark.parametrize("field", ["sam_rho", "weight_decay"])
def test_a_negative_sam_radius_or_weight_decay_names_the_value(field):
    with pytest.raises(ValueError, match=rf"^{field}=-0.1 must be >= 0$"):
        PretrainConfig(**{field: -0.1})
