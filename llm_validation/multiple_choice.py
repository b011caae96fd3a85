"""Log-likelihood multiple-choice scoring (ARC / PIQA / HellaSwag shape), zero-shot.

For question q with context c and choices a_1..a_K, each choice is scored as a continuation
``" " + a_k`` of c (lm-eval's target delimiter):

    s_k = sum_{t in continuation} log p(x_t | x_{<t}),
    accuracy      = mean_q [ argmax_k s_k == gold ],
    accuracy_norm = mean_q [ argmax_k s_k / len(a_k) == gold ],

len(a_k) counting the characters of the choice without the delimiter, as lm-eval's ``acc_norm``
does. Continuation tokens are found as lm-eval finds them: the whole text ``c + " " + a_k`` is
tokenised and the tokens after ``len(tokenize(c))`` are the continuation; a sequence longer than the
model's context keeps its last tokens. Ties go to the first choice (argmax).

``lm_eval_adapter`` hands the same in-memory model to lm-evaluation-harness instead (the
``lmeval`` extra), on a local task definition or lm-eval's own tasks; on the same questions the
two give the same log-likelihoods and accuracies (tested).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from llm_validation.evaluate import evaluating
from llm_validation.finetune_data import MCItem


@dataclasses.dataclass(frozen=True)
class MCScores:
    """Per question, per choice: ``logprobs`` = s_k; the two accuracies; how they were computed."""

    logprobs: tuple[tuple[float, ...], ...]
    accuracy: float
    accuracy_norm: float
    batch_size: int
    num_fewshot: int
    dtype: str
    device: str


def continuation_tokens(
    tokenizer: PreTrainedTokenizerBase, items: Sequence[MCItem], max_length: int
) -> list[tuple[list[int], int]]:
    """For every (question, choice) pair in order: (token ids, number of continuation tokens at the end)."""
    contexts = tokenizer([item.context for item in items], add_special_tokens=False)["input_ids"]
    texts = [f"{item.context} {choice}" for item in items for choice in item.choices]
    wholes = tokenizer(texts, add_special_tokens=False)
    pairs = []
    whole = iter(wholes["input_ids"])
    for item, context in zip(items, contexts):
        for _ in item.choices:
            ids = next(whole)
            n_continuation = len(ids) - len(context)
            if not 0 < n_continuation < max_length:
                raise ValueError(
                    f"a choice of {item.context[:40]!r} has {n_continuation} tokens; allowed: 1..{max_length - 1}"
                )
            pairs.append((ids[-max_length:], n_continuation))
    return pairs


def score_multiple_choice(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, items: Sequence[MCItem], *, batch_size: int = 16
) -> MCScores:
    """Score every choice of every question; batched longest-first, deterministic, in eval mode."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    if not items:
        raise ValueError("no questions to score")
    weight = next(model.parameters())
    pairs = continuation_tokens(tokenizer, items, model.config.max_position_embeddings)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    # Longest first, so a batch holds similar lengths; the sort is stable, hence deterministic.
    order = sorted(range(len(pairs)), key=lambda i: -len(pairs[i][0]))
    sums = torch.zeros(len(pairs), dtype=torch.float64)
    with evaluating(model):
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            sums[batch] = _continuation_logprobs([pairs[i] for i in batch], model, pad, weight.device)
    logprobs, hits, hits_norm, k = [], 0, 0, 0
    for item in items:
        s = sums[k : k + len(item.choices)]
        k += len(item.choices)
        lengths = torch.tensor([len(choice) for choice in item.choices], dtype=torch.float64)
        hits += int(s.argmax()) == item.gold
        hits_norm += int((s / lengths).argmax()) == item.gold
        logprobs.append(tuple(s.tolist()))
    return MCScores(
        logprobs=tuple(logprobs),
        accuracy=hits / len(items),
        accuracy_norm=hits_norm / len(items),
        batch_size=batch_size,
        num_fewshot=0,
        dtype=str(weight.dtype).removeprefix("torch."),
        device=str(weight.device),
    )


def _continuation_logprobs(pairs: list[tuple[list[int], int]], model: nn.Module, pad: int, device) -> torch.Tensor:
    """s for each pair of one batch. Right padding, so no mask: causal attention never sees a pad."""
    length = max(len(ids) for ids, _ in pairs)
    ids_BxL = torch.full((len(pairs), length), pad, dtype=torch.long)
    for row, (ids, _) in enumerate(pairs):
        ids_BxL[row, : len(ids)] = torch.tensor(ids)
    # Only the continuation positions go through the log-softmax: [sum of continuations, V], not [B, L, V].
    rows = torch.cat([torch.full((n,), row) for row, (_, n) in enumerate(pairs)])
    targets = torch.cat([torch.arange(len(ids) - n, len(ids)) for ids, n in pairs])
    logits_BxLxV = model(input_ids=ids_BxL.to(device)).logits
    logp_NxV = logits_BxLxV[rows.to(device), (targets - 1).to(device)].float().log_softmax(-1)
    token_logp = logp_NxV.gather(1, ids_BxL[rows, targets].to(device)[:, None])[:, 0].double().cpu()
    return torch.zeros(len(pairs), dtype=torch.float64).index_add_(0, rows, token_logp)
