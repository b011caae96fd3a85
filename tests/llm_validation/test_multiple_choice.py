"""The log-likelihood multiple-choice scorer against a per-question hand computation."""

from __future__ import annotations

import pytest
import torch

from llm_validation.finetune_data import MCItem
from llm_validation.multiple_choice import score_multiple_choice

from .conftest import make_model
from .test_finetune_data import tokenizer  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Short and long choices side by side, so raw and length-normalised accuracy can disagree.
ITEMS = [
    MCItem("the model read a", ("word", "long line of text about the data"), 1),
    MCItem("early loss", ("is small", "flat", "sharp curve point"), 0),
    MCItem("a", ("b", "the late layer norm head"), 1),
    MCItem("tune the step and the noise then", ("learn", "forget the test"), 1),
    MCItem("value", ("x", "yy", "zzz", "the"), 3),
]


def by_hand(model, tokenizer, item: MCItem) -> list[float]:
    """sum_t log_softmax(logits)[t - 1, x_t] over the continuation, one unpadded sequence at a time."""
    encode = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    n_context = len(encode(item.context))
    scores = []
    for choice in item.choices:
        ids = torch.tensor(encode(item.context + " " + choice))
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids[None]).logits[0].double(), dim=-1)
        scores.append(sum(logp[t - 1, ids[t]].item() for t in range(n_context, len(ids))))
    return scores


def accuracy(scores, items, lengths) -> float:
    picks = [max(range(len(s)), key=lambda k: (s[k] / n[k], -k)) for s, n in zip(scores, lengths)]
    return sum(pick == item.gold for pick, item in zip(picks, items)) / len(items)


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_scores_and_accuracies_match_the_hand_computation(tokenizer, batch_size):
    model = make_model(tokenizer, seed=2)
    result = score_multiple_choice(model, tokenizer, ITEMS, batch_size=batch_size)
    expected = [by_hand(model, tokenizer, item) for item in ITEMS]
    for got, want in zip(result.logprobs, expected):
        assert got == pytest.approx(want, abs=1e-4)
    ones = [[1] * len(item.choices) for item in ITEMS]
    chars = [[len(choice) for choice in item.choices] for item in ITEMS]
    assert result.accuracy == accuracy(expected, ITEMS, ones)
    assert result.accuracy_norm == accuracy(expected, ITEMS, chars)
    assert (result.batch_size, result.num_fewshot, result.dtype) == (batch_size, 0, "float32")


def test_scoring_is_deterministic_and_leaves_the_model_alone(tokenizer):
    model = make_model(tokenizer, seed=2)
    before = {name: t.clone() for name, t in model.state_dict().items()}
    first = score_multiple_choice(model, tokenizer, ITEMS, batch_size=2)
    assert score_multiple_choice(model, tokenizer, ITEMS, batch_size=2) == first
    assert all(torch.equal(before[name], t) for name, t in model.state_dict().items()) and not model.training
    # Length normalisation makes a difference on these questions for this model, so both are exercised.
    assert first.accuracy != first.accuracy_norm
