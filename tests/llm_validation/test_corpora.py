"""Offline corpora: document-level splits that never overlap, deterministic synthetic streams."""

import collections
import itertools

import pytest

from llm_validation.corpora import (
    DECONTAMINATE_CHARS,
    SyntheticLanguage,
    load_corpus,
    python_documents,
    shakespeare_documents,
    split_documents,
    synthetic_documents,
)


@pytest.fixture(scope="module", params=["shakespeare", "python"])
def real_split(request):
    return request.param, load_corpus(request.param)


def test_unknown_corpus_names_the_value():
    with pytest.raises(ValueError, match="'c4'.*shakespeare, python, synthetic"):
        load_corpus("c4")


def test_real_splits_share_no_document_and_no_long_line(real_split):
    name, (train, heldout) = real_split
    assert train and heldout
    documents = shakespeare_documents() if name == "shakespeare" else python_documents()
    assert 0.05 < len(heldout) / len(documents) < 0.15
    assert not set(train) & set(heldout)
    train_lines = {line.strip() for text in train for line in text.splitlines()}
    shared = [
        line
        for text in heldout
        for line in text.splitlines()
        if len(line.strip()) >= DECONTAMINATE_CHARS and line.strip() in train_lines
    ]
    assert shared == []


def test_split_is_by_name_hash_not_order_and_cap_leaves_heldout_alone():
    documents = {f"doc{i}": f"text {i}\n" * 10 for i in range(40)}
    reordered = dict(reversed(documents.items()))
    assert split_documents(documents, 0.1) == split_documents(reordered, 0.1)
    full, capped = split_documents(documents, 0.1), split_documents(documents, 0.1, max_chars=200)
    assert len(full.heldout) == 4 and capped.heldout == full.heldout
    assert sum(map(len, capped.train)) <= 200 and capped.train == full.train[: len(capped.train)]


def test_shakespeare_markup_is_stripped():
    plays = shakespeare_documents()
    assert len(plays) == 38
    hamlet = plays["tragedies/hamlet"]
    assert hamlet.startswith("Hamlet\n\nACT I\n") and "BERNARDO\nWho's there?\n" in hamlet
    assert not any(mark in text for text in plays.values() for mark in ("**", "#", "_", "\\["))


def test_python_corpus_leaves_out_tests_and_machine_specific_files():
    names = python_documents()
    assert "json/decoder.py" in names and "os.py" in names
    assert not any(part in ("test", "tests", "encodings") for name in names for part in name.split("/"))
    assert not any("_sysconfigdata" in name for name in names)


def test_synthetic_stream_is_deterministic_with_random_access():
    language = SyntheticLanguage(vocab_size=50, words_per_document=30)
    first = list(itertools.islice(synthetic_documents(language), 70))
    assert first == list(itertools.islice(synthetic_documents(language), 70))
    assert first[65:] == list(itertools.islice(synthetic_documents(language, start=65), 5))
    other_seed = list(
        itertools.islice(synthetic_documents(SyntheticLanguage(vocab_size=50, words_per_document=30, seed=1)), 5)
    )
    assert other_seed != first[:5]
    assert all(len(text.replace(".", "").split()) == 30 and text.endswith(".\n") for text in first)


def test_synthetic_words_follow_a_heavy_tailed_law():
    language = SyntheticLanguage(vocab_size=200, num_states=4, zipf_exponent=1.2)
    words = [w for text in itertools.islice(synthetic_documents(language), 200) for w in text.replace(".", "").split()]
    counts = sorted(collections.Counter(words).values(), reverse=True)
    assert counts[0] > 10 * counts[len(counts) // 2]


def test_synthetic_split_is_disjoint_and_sized():
    train, heldout = load_corpus("synthetic", max_chars=50_000, language=SyntheticLanguage(words_per_document=50))
    assert sum(map(len, train)) <= 50_000 and len(heldout) == max(1, round(len(train) / 9))
    assert not set(train) & set(heldout)
