"""lm-evaluation-harness on an in-memory model, offline: the same log-likelihoods and accuracies as the
built-in scorer, on an inline task and on a local YAML task definition. (lm-eval's import costs
seconds: one evaluation serves both tasks.)"""

from __future__ import annotations

import json
import sys

import pytest
import torch

from llm_validation.lm_eval_adapter import accuracies, evaluate_tasks, mc_task
from llm_validation.multiple_choice import score_multiple_choice

from .conftest import make_model
from .test_multiple_choice import ITEMS

pytestmark = pytest.mark.usefixtures("one_torch_thread", "empty_offline_cache")

YAML = """task: yaml_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{query}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
"""


def tuned_toward_the_answers(tokenizer, steps: int = 8):
    """A tiny model after a few AdamW steps on the right answers, so the accuracies are not chance."""
    model = make_model(tokenizer, seed=2).train()
    texts = [f"{item.context} {item.choices[item.gold]}" for item in ITEMS]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
            row = torch.tensor([ids])
            optimizer.zero_grad()
            model(input_ids=row, labels=row).loss.backward()
            optimizer.step()
    return model.eval()


def test_lm_eval_and_the_builtin_scorer_agree(tokenizer, tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    data = tmp_path / "tasks" / "mc.jsonl"
    data.parent.mkdir()
    data.write_text(
        "".join(json.dumps({"query": i.context, "choices": list(i.choices), "label": i.gold}) + "\n" for i in ITEMS)
    )
    (tmp_path / "tasks" / "yaml_mc.yaml").write_text(YAML.format(data=data))

    model = tuned_toward_the_answers(tokenizer)
    ours = score_multiple_choice(model, tokenizer, ITEMS, batch_size=4)
    theirs = evaluate_tasks(
        model,
        tokenizer,
        [mc_task(ITEMS, "inline_mc"), "yaml_mc"],
        batch_size=4,
        num_fewshot=0,
        include_path=tmp_path / "tasks",
    )
    for task in ("inline_mc", "yaml_mc"):
        assert accuracies(theirs, task) == (ours.accuracy, ours.accuracy_norm)
        for got, want in zip(theirs["logprobs"][task], ours.logprobs, strict=True):
            assert got == pytest.approx(want, abs=1e-4)
    assert ours.accuracy != ours.accuracy_norm or 0 < ours.accuracy < 1  # a case that can tell scorers apart
    assert (theirs["batch_size"], theirs["num_fewshot"], theirs["dtype"], theirs["lm_eval"]) == (
        4,
        0,
        "float32",
        "0.4.13",
    )


def test_bad_arguments_and_a_missing_harness(tokenizer, monkeypatch, tmp_path):
    model = make_model(tokenizer)
    with pytest.raises(ValueError, match="batch_size=0"):
        evaluate_tasks(model, tokenizer, [mc_task(ITEMS)], batch_size=0, num_fewshot=0)
    with pytest.raises(ValueError, match="include_path=.*missing.*not a folder"):
        evaluate_tasks(model, tokenizer, ["x"], batch_size=1, num_fewshot=0, include_path=tmp_path / "missing")
    with pytest.raises(ValueError, match="no questions"):
        mc_task([])
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'overtraining\[lmeval\]'"):
        evaluate_tasks(model, tokenizer, [mc_task(ITEMS)], batch_size=1, num_fewshot=0)
