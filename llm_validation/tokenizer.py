"""Byte-level BPE tokenizers trained locally with ``tokenizers`` (no hub needed).

The result is a ``PreTrainedTokenizerFast`` that ``save_pretrained`` writes and ``AutoTokenizer``
loads back, so a checkpoint folder is self-contained.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

EOS = "<|endoftext|>"
PAD = "<|padding|>"


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts``; token 0 is ``EOS`` and token 1 is ``PAD``.

    Byte-level means every string round-trips exactly (``decode(encode(x)) == x``), whatever its
    characters, so held-out text never meets an unknown token.
    """
    if vocab_size < 258:
        raise ValueError(
            f"vocab_size={vocab_size} is too small; a byte-level BPE needs >= 258 (256 bytes + 2 specials)"
        )
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD)
