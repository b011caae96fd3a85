"""Fine-tuning data: local JSONL / text files turned into fixed-length, loss-masked examples.

Formats (``fmt``):

- ``hh``: Anthropic-HH rows, field ``chosen`` = ``"\\n\\nHuman: ...\\n\\nAssistant: ..."``. Loss on the
  text of every Assistant turn (from after ``"Assistant:"`` up to the next turn marker).
- ``messages``: TULU-style rows, field ``messages`` = ``[{"role", "content"}, ...]``, rendered with the
  tokenizer's chat template, or ``TULU_TEMPLATE`` when it has none. Loss on every assistant turn.
- ``text``: plain text, loss on every token. A ``.jsonl`` file gives one document per row (field
  ``text``); any other file is one document; a folder gives every file under it, sorted by path
  (e.g. Python source as a Starcoder-Python analogue; a file that is not UTF-8, such as a stray
  ``.pyc``, is a ``DataError``). Documents are packed EOS-separated into blocks of ``seq_len``, as
  in pre-training.
- ``mc``: multiple choice rows in the ARC / PIQA / HellaSwag shape, ``{"query" | "question": str,
  "choices": [str, ...], "label" | "gold": int}``. Training text is ``context + " " + gold choice``
  with loss on the gold answer only, the continuation the scorer in ``multiple_choice`` reads.

Chat rows end with EOS, and that EOS is a loss token: the model learns where a response stops. Labels
follow the Hugging Face convention: ``labels[t] = input_ids[t]`` where token t is trained, -100
elsewhere, and the loss shifts them (token t is predicted from tokens < t). Examples are cut to
``seq_len`` tokens and right-padded, so a pad never precedes a real token.

``corpus:NAME`` (format ``text``) is the training split of a built-in corpus (``corpora.CORPORA``),
capped at ``CORPUS_CHARS`` characters of whole documents and joined by blank lines into one document:
``corpus:python`` is the Python source ``ovt reproduce`` fine-tunes on, with no file to write.

A file ending in ``.gz`` is read through gzip. Any file that is not UTF-8 text (or not gzip, for
``.gz``) is a ``DataError`` naming it. ``hf:ORG/NAME`` reads a hub dataset through the
``datasets`` package for users who have the hub; that path needs network and is not tested here.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from transformers import PreTrainedTokenizerBase

from llm_validation.corpora import load_corpus
from llm_validation.evaluate import pack_tokens

FORMATS = ("hh", "messages", "text", "mc")
IGNORE = -100  # the label torch's cross_entropy skips (``ignore_index``)

# open-instruct's "tulu" template: a role header per turn, EOS closing each assistant turn.
TULU_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<|system|>\n' + message['content'] + '\n' }}"
    "{% elif message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + '\n' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{% if not loop.last %}{{ '<|assistant|>\n' + message['content'] + eos_token + '\n' }}"
    "{% else %}{{ '<|assistant|>\n' + message['content'] + eos_token }}{% endif %}"
    "{% endif %}"
    "{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
    "{% endfor %}"
)
_ROLES = ("system", "user", "assistant")
_HH_TURN = re.compile(r"\n\n(Human|Assistant):")


class DataError(ValueError):
    """A malformed input row; the message names the file, the 1-based row and what is wrong."""


@dataclasses.dataclass(frozen=True)
class Examples:
    """Fixed-length examples, three ``[n, seq_len]`` int64 tensors."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    attention_mask: torch.Tensor

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def split(self, n_heldout: int) -> tuple[Examples, Examples]:
        """``(train, heldout)``: the last ``n_heldout`` examples are held out."""
        if not 0 < n_heldout < len(self):
            raise ValueError(f"n_heldout={n_heldout} must lie in [1, {len(self) - 1}] for {len(self)} examples")
        cut = len(self) - n_heldout
        return self.select(slice(None, cut)), self.select(slice(cut, None))

    def select(self, index: slice | Sequence[int]) -> Examples:
        """The examples at ``index`` (a slice or a list of row numbers)."""
        return Examples(*(getattr(self, field.name)[index] for field in dataclasses.fields(self)))


@dataclasses.dataclass(frozen=True)
class MCItem:
    """One multiple-choice question: the context, the choices and the index of the right one."""

    context: str
    choices: tuple[str, ...]
    gold: int


class _Spanned(NamedTuple):
    """A rendered text and the character spans ``[start, end)`` that carry the loss."""

    text: str
    spans: list[tuple[int, int]]


def load_examples(
    source: str | os.PathLike, fmt: str, tokenizer: PreTrainedTokenizerBase, seq_len: int, *, split: str = "train"
) -> Examples:
    """Read ``source`` in format ``fmt`` into examples of ``seq_len`` tokens (``split`` is for hub names)."""
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt!r} is unknown; allowed: {', '.join(FORMATS)}")
    if seq_len < 2:
        raise ValueError(f"seq_len={seq_len} must be >= 2 (one context token and one predicted token)")
    if fmt == "text":
        return _packed_text(_text_documents(source, split), tokenizer, seq_len, source)
    rendered = [(where, _render(fmt, row, where, tokenizer)) for where, row in _rows(source, split)]
    return _masked_examples(rendered, tokenizer, seq_len, source)


def read_multiple_choice(source: str | os.PathLike, *, split: str = "validation") -> list[MCItem]:
    """The questions of an ``mc`` JSONL file (or ``hf:`` dataset of that shape)."""
    items = [_mc_item(row, where) for where, row in _rows(source, split)]
    if not items:
        raise DataError(f"{source}: no rows")
    return items


def _rows(source: str | os.PathLike, split: str) -> Iterator[tuple[str, dict]]:
    """``("FILE: row N", row)`` for every non-blank line of a JSONL file (N counts blank lines too)."""
    if str(source).startswith("hf:"):
        yield from _hub_rows(str(source)[3:], split)
        return
    path = Path(source)
    with _open_text(path) as handle:
        for number, line in enumerate(_lines(handle, path), start=1):
            if not line.strip():
                continue
            where = f"{path}: row {number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{where}: not valid JSON ({error.msg} at column {error.colno})") from None
            if not isinstance(row, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
            yield where, row


def _lines(handle, path: Path) -> Iterator[str]:
    """The lines of an open text file; DataError naming the file when it is not UTF-8 (or not gzip)."""
    try:
        yield from handle
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    except (gzip.BadGzipFile, EOFError) as error:
        raise DataError(f"{path}: not a readable gzip file ({error})") from None


def _open_text(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def _hub_rows(name: str, split: str) -> Iterator[tuple[str, dict]]:
    try:
        import datasets
    except ImportError:
        raise ImportError(f"reading hf:{name} needs the `datasets` package (pip install datasets)") from None
    for number, row in enumerate(datasets.load_dataset(name, split=split), start=1):
        yield f"hf:{name}[{split}]: row {number}", dict(row)


CORPUS = "corpus:"
CORPUS_CHARS = 400_000


def corpus_text(source: str) -> str:
    """The one document of ``corpus:NAME``: the corpus' training split, capped at ``CORPUS_CHARS``
    characters of whole documents, joined by blank lines."""
    return "\n\n".join(load_corpus(source.removeprefix(CORPUS), max_chars=CORPUS_CHARS).train)


def _text_documents(source: str | os.PathLike, split: str) -> list[str]:
    if str(source).startswith(CORPUS):
        return [corpus_text(str(source))]
    path = Path(source)
    if str(source).startswith("hf:") or path.name.endswith((".jsonl", ".jsonl.gz")):
        return [_field(row, "text", str, where) for where, row in _rows(source, split)]
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    documents = []
    for file in files:
        with _open_text(file) as handle:
            documents.append("".join(_lines(handle, file)))
    return documents


def _field(row: dict, key: str, kind: type, where: str):
    if key not in row:
        raise DataError(f"{where}: missing field {key!r} (fields: {', '.join(map(repr, row)) or 'none'})")
    value = row[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DataError(f"{where}: field {key!r} must be {kind.__name__}, got {type(value).__name__}")
    return value


def _one_of(row: dict, keys: tuple[str, str], kind: type, where: str):
    present = [key for key in keys if key in row]
    if len(present) != 1:
        raise DataError(f"{where}: expected exactly one of the fields {keys[0]!r} / {keys[1]!r}")
    return _field(row, present[0], kind, where)


def _render(fmt: str, row: dict, where: str, tokenizer: PreTrainedTokenizerBase) -> _Spanned:
    if fmt == "hh":
        return _render_hh(_field(row, "chosen", str, where), where, tokenizer.eos_token)
    if fmt == "messages":
        return _render_messages(_field(row, "messages", list, where), where, tokenizer)
    item = _mc_item(row, where)
    answer = " " + item.choices[item.gold]
    return _Spanned(item.context + answer, [(len(item.context), len(item.context) + len(answer))])


def _render_hh(chosen: str, where: str, eos: str) -> _Spanned:
    """Spans of the Assistant turns of an HH transcript; the closing EOS joins the last one."""
    markers = list(_HH_TURN.finditer(chosen))
    if not markers or markers[0].start() != 0 or markers[0].group(1) != "Human":
        raise DataError(f"{where}: field 'chosen' must start with '\\n\\nHuman:'")
    text = chosen + eos
    ends = [m.start() for m in markers[1:]] + [len(text)]
    spans = [(m.end(), end) for m, end in zip(markers, ends) if m.group(1) == "Assistant"]
    if not spans:
        raise DataError(f"{where}: field 'chosen' has no '\\n\\nAssistant:' turn")
    return _Spanned(text, spans)


def _render_messages(messages: list, where: str, tokenizer: PreTrainedTokenizerBase) -> _Spanned:
    """Spans of the assistant turns, found by rendering growing prefixes of the conversation.

    A turn occupies the characters between the rendering of the turns before it (with the generation
    prompt) and the rendering up to and including it; that needs a prefix-stable template.
    """
    for index, message in enumerate(messages):
        turn = f"{where}: messages[{index}]"
        if not isinstance(message, dict):
            raise DataError(f"{turn} must be an object with 'role' and 'content'")
        if _field(message, "role", str, turn) not in _ROLES:
            raise DataError(f"{turn}: role {message['role']!r} is unknown; allowed: {', '.join(_ROLES)}")
        _field(message, "content", str, turn)
    if not any(message["role"] == "assistant" for message in messages):
        raise DataError(f"{where}: field 'messages' has no assistant turn")
    if messages[0]["role"] == "assistant":
        raise DataError(f"{where}: field 'messages' starts with an assistant turn (it must answer a user turn)")
    template = tokenizer.chat_template or TULU_TEMPLATE

    def render(turns: list, prompt: bool) -> str:
        return tokenizer.apply_chat_template(
            turns, chat_template=template, add_generation_prompt=prompt, tokenize=False
        )

    text = render(messages, False)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] == "assistant":
            before, through = render(messages[:index], True), render(messages[: index + 1], False)
            if not (through.startswith(before) and text.startswith(through)):
                raise ValueError("the chat template is not prefix-stable, so assistant turns cannot be located")
            spans.append((len(before), len(through)))
    return _Spanned(text, spans)


def _mc_item(row: dict, where: str) -> MCItem:
    context = _one_of(row, ("query", "question"), str, where)
    choices = _field(row, "choices", list, where)
    gold = _one_of(row, ("label", "gold"), int, where)
    if not context:
        raise DataError(f"{where}: the question is empty")
    if len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
        raise DataError(f"{where}: field 'choices' must be a list of at least two non-empty strings")
    if not 0 <= gold < len(choices):
        raise DataError(f"{where}: answer index {gold} is outside 0..{len(choices) - 1}")
    return MCItem(context, tuple(choices), gold)


def _masked_examples(
    rendered: Sequence[tuple[str, _Spanned]], tokenizer: PreTrainedTokenizerBase, seq_len: int, source
) -> Examples:
    """Tokenise whole texts (so BPE merges match the scorer's) and label tokens that start in a span."""
    if not rendered:
        raise DataError(f"{source}: no rows")
    encoded = tokenizer([r.text for _, r in rendered], add_special_tokens=False, return_offsets_mapping=True)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    input_ids = torch.full((len(rendered), seq_len), pad, dtype=torch.long)
    labels = torch.full_like(input_ids, IGNORE)
    attention_mask = torch.zeros_like(input_ids)
    keep, cut = [], []
    for i, ((where, r), ids, offsets) in enumerate(zip(rendered, encoded["input_ids"], encoded["offset_mapping"])):
        ids, starts = ids[:seq_len], torch.tensor([start for start, _ in offsets[:seq_len]])
        trained = torch.zeros(len(ids), dtype=torch.bool)
        for a, b in r.spans:
            trained |= (starts >= a) & (starts < b)
        if not trained.any():
            cut.append(where)
            continue
        n = len(ids)
        input_ids[i, :n] = torch.tensor(ids)
        labels[i, :n] = torch.where(trained, input_ids[i, :n], IGNORE)
        attention_mask[i, :n] = 1
        keep.append(i)
    if cut:
        # One over-long row should not stop a 100k-row run, but a silent loss of rows would mislead.
        warnings.warn(
            f"{len(cut)} row(s) have no trained token within seq_len={seq_len} and were dropped (first: {cut[0]})",
            stacklevel=2,
        )
    if not keep:
        raise DataError(f"{source}: no row has a trained token within seq_len={seq_len}")
    return Examples(input_ids, labels, attention_mask).select(keep)


def _packed_text(documents: Iterable[str], tokenizer: PreTrainedTokenizerBase, seq_len: int, source) -> Examples:
    documents = [d for d in documents if d.strip()]
    token_lists = tokenizer(documents, add_special_tokens=False)["input_ids"] if documents else []
    blocks = pack_tokens(token_lists, seq_len, tokenizer.eos_token_id)
    if len(blocks) == 0:
        raise DataError(f"{source}: fewer tokens than one block of seq_len={seq_len}")
    return Examples(blocks, blocks.clone(), torch.ones_like(blocks))
