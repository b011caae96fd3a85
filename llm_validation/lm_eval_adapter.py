"""lm-evaluation-harness on an in-memory model and a local task definition (the ``lmeval`` extra).

    evaluate_tasks(model, tokenizer, tasks, batch_size=, num_fewshot=) -> {"results", "logprobs", ...}
    mc_task(items, name)  -> the lm-eval task config of ARC / PIQA-style questions (``MCItem``)

The model is handed over as it is (``HFLM(pretrained=<model>)``): whatever fine-tuning left in
memory is what is scored, in the dtype its weights have (HFLM ignores ``dtype`` for an instance),
and that dtype is recorded. ``tasks`` are inline task configs (``mc_task``) or the names of task
YAMLs under ``include_path``, a folder of local task definitions (``dataset_path: json`` with
``dataset_kwargs: {data_files: ...}`` reads a local file). lm-eval's own task index (whose datasets
come from the hub) is scanned only with ``include_defaults=True``; nothing here downloads.

``mc_task`` poses each question as the built-in scorer (``multiple_choice``) does: context
``query``, continuation ``" " + choice`` (lm-eval's ``target_delimiter``), ``acc`` and ``acc_norm``
(log-likelihood over the choice's characters), so on the same questions the two agree (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import nn
from transformers import PreTrainedTokenizerBase

from llm_validation.finetune_data import MCItem

INSTALL = "pip install 'overtraining[lmeval]' (lm-eval==0.4.13)"
_MC_METRICS = [
    {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
    {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
]


def _harness():
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise ImportError(f"the lm-eval adapter needs lm-evaluation-harness: {INSTALL}") from None
    return lm_eval, HFLM, TaskManager


def mc_task(items: Sequence[MCItem], name: str = "local_mc") -> dict:
    """An inline lm-eval task of multiple-choice questions: zero-shot by default, split ``test``,
    metrics ``acc`` and ``acc_norm``. The questions are held in memory (``custom_dataset``), so the
    harness reads no file and no dataset cache."""
    if not items:
        raise ValueError("no questions to score")
    rows = [{"query": item.context, "choices": list(item.choices), "gold": item.gold} for item in items]

    def dataset(**_):
        import datasets  # an lm-eval dependency

        return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})

    return {
        "task": name,
        "custom_dataset": dataset,
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "{{query}}",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{gold}}",
        "target_delimiter": " ",
        "metric_list": _MC_METRICS,
    }


def evaluate_tasks(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    tasks: Sequence[str | dict],
    *,
    batch_size: int,
    num_fewshot: int,
    include_path: str | Path | None = None,
    include_defaults: bool = False,
) -> dict:
    """lm-eval's ``simple_evaluate`` on the in-memory ``model``.

    Returns ``{"results": lm-eval's per-task metrics, "logprobs": {task: per question, the
    log-likelihood of each choice}, "batch_size", "num_fewshot", "dtype", "lm_eval": version}``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    if num_fewshot < 0:
        raise ValueError(f"num_fewshot={num_fewshot} must be >= 0")
    if not tasks:
        raise ValueError("no tasks to evaluate")
    if include_path is not None and not Path(include_path).is_dir():
        raise ValueError(f"include_path={str(include_path)!r} is not a folder of task definitions")
    lm_eval, HFLM, TaskManager = _harness()
    manager = TaskManager(
        include_path=None if include_path is None else str(include_path), include_defaults=include_defaults
    )
    harness = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    output = lm_eval.simple_evaluate(
        model=harness,
        tasks=list(tasks),
        num_fewshot=num_fewshot,
        batch_size=batch_size,
        task_manager=manager,
        log_samples=True,
        bootstrap_iters=0,  # no stderr bootstrap: deterministic and fast; accuracies are exact means
    )
    logprobs = {
        task: [
            tuple(float(resp[0]) for resp in sample["filtered_resps"])
            for sample in sorted(samples, key=lambda s: s["doc_id"])
        ]
        for task, samples in output["samples"].items()
    }
    return {
        "results": output["results"],
        "logprobs": logprobs,
        "batch_size": batch_size,
        "num_fewshot": num_fewshot,
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "lm_eval": lm_eval.__version__,
    }


def accuracies(evaluation: dict, task: str) -> tuple[float, float]:
    """(acc, acc_norm) of one task of an ``evaluate_tasks`` result."""
    metrics = evaluation["results"][task]
    return float(metrics["acc,none"]), float(metrics["acc_norm,none"])
