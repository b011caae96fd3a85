"""Offline corpora: document-level splits that never overlap, deterministic synthetic streams."""

import collections
import hashlib
import itertools
import json
import sys
import time

import pytest

from llm_validation.corpora import (
    DECONTAMINATE_CHARS,
    HELDOUT_FRACTION,
    SyntheticLanguage,
    corpus_source,
    load_corpus,
    python_documents,
    repetition,
    shakespeare_documents,
    split_documents,
    synthetic_documents,
)
from llm_validation.sitepackages import (
    SITEPACKAGES_DISTRIBUTIONS,
    is_generated,
    sitepackages_documents,
    sitepackages_excluded,
    sitepackages_roots,
    sitepackages_source,
)


@pytest.fixture(scope="module", params=["shakespeare", "python"])
def real_split(request):
    return request.param, load_corpus(request.param)


def test_unknown_corpus_names_the_value():
    with pytest.raises(ValueError, match="'c4'.*shakespeare, python, synthetic"):
        load_corpus("c4")


def assert_disjoint(documents, train, heldout):
    """No text on both sides, and no held-out line of decontamination length that training holds."""
    assert train and heldout
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


def test_real_splits_share_no_document_and_no_long_line(real_split):
    name, (train, heldout) = real_split
    assert_disjoint(shakespeare_documents() if name == "shakespeare" else python_documents(), train, heldout)


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


LICENCE = "# Licensed under the Apache License, Version 2.0 (the 'License');\n"


def write_packages(root, order=1):
    """A fake site-packages: 40 modules sharing a licence header, copies, and files to leave out."""
    files = {
        f"pkg/mod{i:02d}.py": f"{LICENCE}def f{i}(x):\n    return x * {i}  # module number {i} of forty\n"
        for i in range(40)
    }
    files |= {
        "pkg/copy.py": files["pkg/mod00.py"],  # the same bytes twice in one package ...
        "other/mod00.py": files["pkg/mod00.py"],  # ... and in another
        "other/crlf.py": files["pkg/mod01.py"].replace("\n", "\r\n"),  # the same text with CRLF endings
        "_pytest/runner.py": "def run():\n    pass\n",  # 'pytest' is not the word 'test'
        "pkg/tests/test_mod.py": "def test_f():\n    pass\n",
        "pkg/test_io.py": "def test_io():\n    pass\n",
        "pkg/_testing/helpers.py": "def helper():\n    pass\n",
        "pkg/internal_test_util/data.py": "DATA = 1\n",
        "pkg/conftest.py": "import pytest\n",
        "pkg/_vendor/six.py": "PY3 = True\n",
        "pkg/__pycache__/mod00.py": "stale = True\n",
        "__editable___pkg_1_0_finder.py": "MAPPING = {'pkg': '/home/someone/pkg'}\n",
        "pkg/__init__.py": "",
        "pkg/descriptor_pb2.py": "# Generated by the protocol buffer compiler.  DO NOT EDIT!\nX = 1\n",
        "pkg/table.py": f"TABLE = {list(range(400))}\n",  # one line of data over 1000 characters
        "pkg/huge.py": "x = 1\n" * 100_000,
        "pkg-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: pkg\nVersion: 1.0\n",
        "pkg-1.0.dist-info/RECORD": "pkg/mod00.py,,\npkg/copy.py,,\npkg/tests/test_mod.py,,\n",
        "vendorlib-2.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: vendorlib\nVersion: 2.0\n",
        "vendorlib-2.0.dist-info/RECORD": "pkg/_vendor/six.py,,\n",
    }
    for name, text in sorted(files.items())[::order]:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode())
    (root / "pkg" / "latin1.py").write_bytes("NAME = 'Andr\xe9'\n".encode("latin-1"))
    return root


@pytest.fixture
def site(tmp_path):
    return write_packages(tmp_path / "site-packages")


def test_sitepackages_counts_each_content_once_under_its_first_name(site):
    documents = sitepackages_documents([site], None)
    assert len(set(documents.values())) == len(documents) == 41
    assert "other/mod00.py" in documents and "pkg/mod00.py" not in documents and "pkg/copy.py" not in documents
    assert "pkg/mod01.py" not in documents and "\r" not in documents["other/crlf.py"]


def test_sitepackages_leaves_out_tests_vendored_generated_huge_and_non_utf8(site):
    names = set(sitepackages_documents([site], None))
    kept = {"other/mod00.py", "other/crlf.py", "_pytest/runner.py"}
    assert names == {f"pkg/mod{i:02d}.py" for i in range(2, 40)} | kept
    for name in (
        "pkg/tests/x.py",
        "pkg/test_io.py",
        "a/testing/b.py",
        "a/_testing/b.py",
        "conftest.py",
        "a/internal_test_util/b.py",
        "a/b_test.py",
        "pip/_vendor/six.py",
        "a/third_party/b.py",
        "x.dist-info/y.py",
        "__editable___x_finder.py",
    ):
        assert sitepackages_excluded(name), name
    for name in ("_pytest/runner.py", "pytest/__init__.py", "unittest/mock.py", "latest.py", "numpy/linalg/_linalg.py"):
        assert not sitepackages_excluded(name), name
    assert is_generated("# -*- coding: utf-8 -*-\n# This file was automatically generated from modular_x.py.\n")
    assert not is_generated("def f():\n    pass\n" * 5 + "# values generated by the user\n")


def test_sitepackages_order_is_by_content_hash_whatever_the_location(tmp_path):
    first = write_packages(tmp_path / "a" / "site-packages")
    second = write_packages(tmp_path / "elsewhere", order=-1)  # written in the opposite order
    documents = sitepackages_documents([first], None)
    hashes = [hashlib.sha256(text.encode()).hexdigest() for text in documents.values()]
    assert hashes == sorted(hashes)
    assert list(sitepackages_documents([second], None).items()) == list(documents.items())
    assert sitepackages_source([second], None) == sitepackages_source([first], None)


def test_sitepackages_source_pins_the_texts_without_machine_paths(site):
    source = sitepackages_source([site], None)
    documents = sitepackages_documents([site], None)
    expected = hashlib.sha256(b"".join(sorted(hashlib.sha256(t.encode()).digest() for t in documents.values())))
    assert source["sha256"] == expected.hexdigest()
    assert source["documents"] == 41 and source["chars"] == sum(map(len, documents.values()))
    assert source["packages"] == {"pkg": "1.0"}  # vendorlib owns only a vendored file
    assert str(site) not in json.dumps(source) and str(site.parent) not in json.dumps(source)
    (site / "pkg" / "mod05.py").write_text("changed = True\n")
    assert sitepackages_source([site], None) == source  # cached within the process


def test_sitepackages_keeps_only_the_files_the_named_distributions_record(site):
    # pkg's RECORD lists mod00, its byte copy (first name in sorted order) and a test file; names as PEP 503
    assert list(sitepackages_documents([site], ["PKG"])) == ["pkg/copy.py"]
    source = sitepackages_source([site], ["pkg"])
    assert source["documents"] == 1 and source["packages"] == {"pkg": "1.0"} and source["distributions"] == ["pkg"]
    assert sitepackages_source([site], ["vendorlib"])["documents"] == 0  # it owns only a vendored file
    with pytest.raises(ValueError, match="needs numpy installed"):
        sitepackages_documents([site], ["pkg", "numpy"])


def test_sitepackages_split_shares_no_document_and_no_licence_line(site):
    documents = sitepackages_documents([site], None)
    train, heldout = split_documents(documents, HELDOUT_FRACTION)
    assert_disjoint(documents, train, heldout)
    assert sum(LICENCE in text for text in train) == len(train) - 1  # all but _pytest/runner.py
    assert not any(LICENCE.strip() in text for text in heldout) and all("return x *" in text for text in heldout)


def test_repetition_is_budget_over_training_tokens():
    assert repetition(40_000_000, 160_000_000) == 4.0
    assert repetition(3_000_000, 20_000) == pytest.approx(0.00667, rel=1e-3)
    assert repetition(10, 0) == 0.0
    with pytest.raises(ValueError, match="train_tokens=0"):
        repetition(0, 100)


@pytest.mark.slow
def test_real_sitepackages_corpus_is_large_disjoint_and_pinned():
    start = time.perf_counter()
    documents = sitepackages_documents()
    assert time.perf_counter() - start < 60
    assert sum(map(len, documents.values())) > 50_000_000
    assert "numpy/linalg/_linalg.py" in documents and "torch/nn/functional.py" in documents
    assert not any(sitepackages_excluded(name) for name in documents)
    train, heldout = load_corpus("sitepackages")
    assert_disjoint(documents, train, heldout)
    source = corpus_source("sitepackages")
    text = json.dumps(source)
    assert not any(str(root) in text for root in sitepackages_roots()) and sys.prefix not in text
    assert source["packages"]["torch"].startswith("2.") and source["documents"] == len(documents)
    # only the pinned runtime distributions: dev tools and optional extras leave the corpus alone
    assert {name.lower().replace("_", "-") for name in source["packages"]} <= set(SITEPACKAGES_DISTRIBUTIONS)
