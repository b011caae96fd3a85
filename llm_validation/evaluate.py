"""Held-out perplexity on a fixed set of packed token blocks.

    PPL = exp( (1 / N) * sum_{b, t} -log p(x_{b,t+1} | x_{b,<=t}) ),

summed over every predicted token of every block (N = n_blocks * (seq_len - 1)), not averaged per
batch, so the number does not depend on the batch size. The same blocks serve every checkpoint and
every perturbation draw.

A mean NLL above ``MAX_LOSS`` = log(largest float) ~ 709.8 has no finite perplexity: it is ``inf``
(and a NaN loss gives NaN), never an exception, and ``Perplexity.diverged`` says so. Such a model
gives the held-out tokens a mean probability below 1e-308, hundreds of times worse in log terms than
a uniform guess over any vocabulary, so callers treat it as diverged (perturbation at large gamma,
fine-tuning at large lr).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase

from llm_validation.perplexity import MAX_LOSS, Perplexity, perplexity_of  # noqa: F401 (re-exported)


def read_texts(path: str | os.PathLike) -> list[str]:
    """Documents of a held-out file: each line's ``text`` field for ``.jsonl``, else the whole file as one.

    ValueError naming the file when it does not exist, is not UTF-8 text or holds no text."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"eval file {path} is a folder; give a .txt or .jsonl file")
    if path.exists() and not path.is_file():
        raise ValueError(f"eval file {path} is not a regular file (a pipe or a device); give a .txt or .jsonl file")
    if not path.exists():
        raise ValueError(f"eval file {path} does not exist")
    try:
        content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"eval file {path} is not UTF-8 text (byte {error.start}); give a .txt or .jsonl file"
        ) from None
    if path.suffix == ".jsonl":
        texts = []
        for number, line in enumerate(content.splitlines(), start=1):
            if line.strip():
                texts.append(_jsonl_text(path, number, line))
    else:
        texts = [content]
    texts = [text for text in texts if text.strip()]
    if not texts:
        raise ValueError(f"eval file {path} holds no text")
    return texts


def _jsonl_text(path: Path, number: int, line: str) -> str:
    """The ``text`` string of line ``number`` of a JSONL eval file; ValueError naming file and line."""
    try:
        record = json.loads(line)
    except ValueError as error:
        raise ValueError(f"eval file {path}: line {number} is not JSON ({error})") from None
    if not isinstance(record, dict) or "text" not in record:
        raise ValueError(f"eval file {path}: line {number} is not a JSON object with a 'text' field")
    if not isinstance(record["text"], str):
        found = "null" if record["text"] is None else type(record["text"]).__name__
        raise ValueError(f"eval file {path}: line {number}: 'text' is {found}; it must be a string")
    return record["text"]


def pack_tokens(documents: list[list[int]], seq_len: int, separator: int | None) -> torch.Tensor:
    """Concatenate documents (``separator`` between them, as in pre-training) into [n_blocks, seq_len].

    The remainder shorter than ``seq_len`` is dropped, so every block is full and every predicted
    token has the same kind of context as the rest; at most seq_len - 1 tokens are lost.
    """
    if seq_len < 2:
        raise ValueError(f"seq_len={seq_len} must be >= 2 (one context token and one predicted token)")
    stream: list[int] = []
    for document in documents:
        stream.extend(document)
        if separator is not None:
            stream.append(separator)
    n_blocks = len(stream) // seq_len
    return torch.tensor(stream[: n_blocks * seq_len], dtype=torch.long).view(n_blocks, seq_len)


def load_token_blocks(
    path: str | os.PathLike, tokenizer: PreTrainedTokenizerBase, seq_len: int, max_blocks: int | None = None
) -> torch.Tensor:
    """The held-out token set of a text or JSONL file: tokenised, EOS-separated, packed, the first ``max_blocks``."""
    texts = read_texts(path)
    documents = tokenizer(texts, add_special_tokens=False)["input_ids"]
    blocks = pack_tokens(documents, seq_len, tokenizer.eos_token_id)
    if len(blocks) == 0:
        raise ValueError(f"eval file {path} has fewer tokens than one block of seq_len={seq_len}")
    return blocks[:max_blocks]


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) under ``torch.inference_mode``; the model's training flag comes back after."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def perplexity(model: nn.Module, token_blocks: torch.Tensor, batch_size: int) -> Perplexity:
    """exp(mean token NLL) of ``model`` over all predicted tokens of ``token_blocks`` [n_blocks, seq_len].

    Logits are upcast to float32 before the log-softmax and NLLs summed in float64, so low-precision
    weights change the model, not the bookkeeping. The model is evaluated in eval mode (no dropout).
    A loss beyond ``MAX_LOSS`` gives perplexity ``inf``, a NaN loss NaN (``Perplexity.diverged``).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    if token_blocks.ndim != 2 or token_blocks.shape[0] == 0 or token_blocks.shape[1] < 2:
        raise ValueError(f"token_blocks must be [n_blocks >= 1, seq_len >= 2], got {tuple(token_blocks.shape)}")
    weight = next(model.parameters())
    total_nll = 0.0
    with evaluating(model):
        for batch in token_blocks.split(batch_size):
            batch = batch.to(weight.device)
            logits = model(input_ids=batch).logits[:, :-1].float()
            nll = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten(), reduction="sum")
            total_nll += nll.double().item()
    n_tokens = token_blocks.shape[0] * (token_blocks.shape[1] - 1)
    mean_nll = total_nll / n_tokens
    return Perplexity(
        perplexity=perplexity_of(mean_nll),
        mean_nll=mean_nll,
        n_tokens=n_tokens,
        batch_size=batch_size,
        seq_len=token_blocks.shape[1],
        dtype=str(weight.dtype).removeprefix("torch."),
        device=str(weight.device),
    )
