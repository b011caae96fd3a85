"""The token sequences of a pre-training series and the order a run reads them in: a function of the
step alone, so a resumed run reads exactly what the uninterrupted one did.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib

import numpy as np
import torch
from transformers import PreTrainedTokenizerFast

from llm_validation.corpora import corpus_source, load_corpus
from llm_validation.pretrain_config import PretrainConfig
from llm_validation.tokenizer import train_bpe_tokenizer


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """The series' tokenizer and its training stream packed into ``sequences`` (N x seq_len)."""

    tokenizer: PreTrainedTokenizerFast
    sequences: torch.Tensor
    description: dict


TOKENIZE_BATCH = 64  # documents tokenised at once


def prepare_data(config: PretrainConfig, tokenizer: PreTrainedTokenizerFast | None = None) -> TrainingData:
    """Load the training split, train the tokenizer on it (unless given), tokenise and pack.

    Documents are joined in split order, each followed by EOS (token 0), and the stream is cut into
    consecutive ``seq_len`` windows; the incomplete tail is dropped.
    """
    train, heldout = load_corpus(config.corpus, max_chars=config.max_train_chars)
    if tokenizer is None:
        tokenizer = train_bpe_tokenizer(train, config.model_vocab_size)
    eos = [tokenizer.eos_token_id]
    # Documents a batch at a time: the tokenizer returns Python lists (~36 bytes a token), which for the
    # whole 110M-character corpus at once would hold gigabytes; the arrays hold 8 bytes a token.
    stream = np.concatenate(
        [
            np.asarray(doc + eos, dtype=np.int64)
            for start in range(0, len(train), TOKENIZE_BATCH)
            for doc in tokenizer(train[start : start + TOKENIZE_BATCH], add_special_tokens=False)["input_ids"]
        ]
    )
    n_sequences = len(stream) // config.seq_len
    if n_sequences < 1:
        raise ValueError(f"corpus={config.corpus!r} gives {len(stream)} tokens, fewer than seq_len={config.seq_len}")
    sequences = torch.from_numpy(stream[: n_sequences * config.seq_len].reshape(n_sequences, config.seq_len))
    digest = hashlib.sha256()
    for text in train:
        digest.update(text.encode() + b"\0")
    description = {
        **corpus_source(config.corpus),
        "train_documents": len(train),
        "train_chars": sum(map(len, train)),
        "train_sha256": digest.hexdigest(),
        "train_tokens": n_sequences * config.seq_len,
        "heldout_documents": len(heldout),
        "heldout_chars": sum(map(len, heldout)),
    }
    return TrainingData(tokenizer, sequences, description)


@functools.lru_cache(maxsize=2)
def _epoch_permutation(n_sequences: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n_sequences)


def batch_indices(step: int, batch_size: int, n_sequences: int, seed: int) -> np.ndarray:
    """Rows of the packed data for update ``step``: a fresh seeded permutation every epoch.

    A function of the position alone, so a resumed run reads exactly what the uninterrupted one did.
    """
    positions = np.arange(step * batch_size, (step + 1) * batch_size)
    epochs, offsets = np.divmod(positions, n_sequences)
    return np.array([_epoch_permutation(n_sequences, seed, int(e))[o] for e, o in zip(epochs, offsets)])
