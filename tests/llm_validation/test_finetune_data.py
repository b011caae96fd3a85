"""Readers and loss masks of the fine-tuning formats, against spans located by hand."""

from __future__ import annotations

import gzip
import json
import re

import pytest
import torch

from llm_validation.finetune_data import IGNORE, TULU_TEMPLATE, DataError, MCItem, load_examples, read_multiple_choice

from .conftest import make_tokenizer

HH_TURNS = "\n\nHuman: what is {i} and {i}?\n\nAssistant: it is {j}.\n\nHuman: sure?\n\nAssistant: yes, {j}."
HH_ROWS = [{"chosen": HH_TURNS.format(i=i, j=2 * i)} for i in range(24)]
MC_ROWS = [
    {"query": f"the number {i} is", "choices": ["small", "a very large value"], "label": i % 2} for i in range(12)
]


def write_jsonl(path, rows):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    return path


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


def expected_positions(tokenizer, text, spans):
    """Token positions of character spans, counted by tokenising the text up to each span boundary.

    Every boundary used below falls between pre-tokens (before a space, after a newline or colon),
    where a BPE never merges, so prefix token counts are positions in the whole text.
    """
    count = lambda s: len(tokenizer(s, add_special_tokens=False)["input_ids"])  # noqa: E731
    return [t for a, b in spans for t in range(count(text[:a]), count(text[:b]))]


def assert_mask(examples, row, tokenizer, text, spans):
    ids, labels, mask = examples.input_ids[row], examples.labels[row], examples.attention_mask[row]
    n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    trained = torch.nonzero(labels != IGNORE).flatten().tolist()
    assert trained == expected_positions(tokenizer, text, spans)
    assert torch.equal(labels[trained], ids[trained])
    assert tokenizer.decode(ids[:n]) == text
    assert mask.tolist() == [1] * n + [0] * (len(mask) - n)
    assert (ids[n:] == tokenizer.pad_token_id).all()


@pytest.mark.parametrize("name", ["hh.jsonl", "hh.jsonl.gz"])
def test_hh_trains_on_every_assistant_turn_and_the_closing_eos(tmp_path, tokenizer, name):
    examples = load_examples(write_jsonl(tmp_path / name, HH_ROWS), "hh", tokenizer, seq_len=128)
    assert len(examples) == len(HH_ROWS)
    for row in (0, 7):
        text = HH_ROWS[row]["chosen"] + tokenizer.eos_token
        first = text.index(" it is")
        second = text.index(" yes")
        spans = [(first, text.index("\n\nHuman: sure")), (second, len(text))]
        assert_mask(examples, row, tokenizer, text, spans)


CUSTOM_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


@pytest.mark.parametrize("template", [None, CUSTOM_TEMPLATE])
def test_messages_train_on_assistant_turns_only(tmp_path, template):
    tokenizer = make_tokenizer()
    tokenizer.chat_template = template
    conversation = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "say two"},
        {"role": "assistant", "content": "two"},
        {"role": "user", "content": "and three"},
        {"role": "assistant", "content": "three then"},
    ]
    examples = load_examples(write_jsonl(tmp_path / "m.jsonl", [{"messages": conversation}]), "messages", tokenizer, 96)
    eos = tokenizer.eos_token
    if template is None:  # TULU: "<|assistant|>\n" header, EOS closing each assistant turn
        text = (
            "<|system|>\nbe brief\n<|user|>\nsay two\n<|assistant|>\ntwo" + eos + "\n"
            "<|user|>\nand three\n<|assistant|>\nthree then" + eos
        )
        assert text == tokenizer.apply_chat_template(conversation, chat_template=TULU_TEMPLATE, tokenize=False)
        spans = [(text.index("two" + eos), text.index(eos) + len(eos)), (text.index("three then"), len(text))]
    else:
        text = "system: be brief\nuser: say two\nassistant: two\nuser: and three\nassistant: three then\n"
        first = text.index("assistant: two") + len("assistant:")
        spans = [(first, text.index("user: and")), (text.index(" three then"), len(text))]
    assert_mask(examples, 0, tokenizer, text, spans)


def test_mc_trains_on_the_gold_answer_only(tmp_path, tokenizer):
    examples = load_examples(write_jsonl(tmp_path / "mc.jsonl", MC_ROWS), "mc", tokenizer, seq_len=32)
    for row in (0, 1):
        item = MC_ROWS[row]
        text = item["query"] + " " + item["choices"][item["label"]]
        assert_mask(examples, row, tokenizer, text, [(len(item["query"]), len(text))])
    second = read_multiple_choice(tmp_path / "mc.jsonl")[1]
    assert second == MCItem("the number 1 is", ("small", "a very large value"), 1)


def test_text_is_packed_with_eos_and_trains_on_every_token(tmp_path, tokenizer):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "b.py").write_text("def g(y):\n    return y * 2\n" * 6)
    (tmp_path / "src" / "a.py").write_text("def f(x):\n    return x + 1\n" * 6)
    examples = load_examples(tmp_path / "src", "text", tokenizer, seq_len=16)
    encode = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    a_text, b_text = (tmp_path / "src" / "a.py").read_text(), (tmp_path / "src" / "b.py").read_text()
    stream = encode(a_text) + [0] + encode(b_text) + [0]
    assert examples.input_ids.flatten().tolist() == stream[: len(stream) // 16 * 16]
    assert torch.equal(examples.labels, examples.input_ids)
    assert bool(examples.attention_mask.all())
    # The same first document as a JSONL row gives the same leading blocks.
    rows = load_examples(write_jsonl(tmp_path / "t.jsonl", [{"text": a_text}]), "text", tokenizer, 16)
    assert torch.equal(rows.input_ids, examples.input_ids[: (len(encode(a_text)) + 1) // 16])
    (tmp_path / "src" / "__pycache__").mkdir()
    (tmp_path / "src" / "__pycache__" / "a.pyc").write_bytes(b"\xa7\r\r\n\x00")
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'src' / '__pycache__' / 'a.pyc'}: not UTF-8")):
        load_examples(tmp_path / "src", "text", tokenizer, seq_len=16)


def test_rows_without_a_trained_token_in_reach_are_dropped_loudly(tmp_path, tokenizer):
    short = [{"chosen": f"\n\nHuman: hi\n\nAssistant: ok {i}"} for i in range(2)]
    long_prompt = {"chosen": "\n\nHuman: " + "word " * 40 + "\n\nAssistant: late"}
    path = write_jsonl(tmp_path / "hh.jsonl", [short[0], long_prompt, short[1]])
    with pytest.warns(UserWarning, match=re.escape(f"{path}: row 2")):
        examples = load_examples(path, "hh", tokenizer, seq_len=32)
    assert len(examples) == 2
    train, heldout = examples.split(1)
    assert torch.equal(train.input_ids, examples.input_ids[:1]) and torch.equal(heldout.labels, examples.labels[1:])


@pytest.mark.parametrize(
    ("fmt", "bad_line", "message"),
    [
        ("hh", "{not json", "not valid JSON"),
        ("hh", json.dumps({"prompt": "x"}), "missing field 'chosen'"),
        ("hh", json.dumps({"chosen": "\n\nHuman: hi there"}), "no '\\n\\nAssistant:' turn"),
        ("hh", json.dumps({"chosen": "Assistant: hi"}), "must start with"),
        ("messages", json.dumps({"messages": [{"role": "bot", "content": "x"}]}), "role 'bot' is unknown"),
        ("messages", json.dumps({"messages": [{"role": "user", "content": "x"}]}), "no assistant turn"),
        ("messages", json.dumps({"messages": [{"role": "assistant", "content": "x"}]}), "starts with an assistant"),
        ("mc", json.dumps({"query": "q", "choices": ["a", "b"], "label": 2}), "outside 0..1"),
        ("mc", json.dumps({"question": "q", "choices": ["a"], "gold": 0}), "at least two"),
        ("mc", json.dumps({"query": "q", "choices": ["a", "b"], "label": "0"}), "must be int"),
        ("text", json.dumps(["a list"]), "expected a JSON object"),
    ],
)
def test_malformed_rows_raise_data_error_naming_file_and_row(tmp_path, tokenizer, fmt, bad_line, message):
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]
    good = {"hh": HH_ROWS[0], "messages": {"messages": chat}, "mc": MC_ROWS[0]}
    good_line = json.dumps(good.get(fmt, {"text": "fine words"}))
    path = tmp_path / "bad.jsonl"
    path.write_text(f"{good_line}\n\n{bad_line}\n{good_line}\n")  # the blank line still counts: row 3
    with pytest.raises(DataError, match=re.escape(f"{path}: row 3") + ".*" + re.escape(message)):
        load_examples(path, fmt, tokenizer, seq_len=32)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("rows.jsonl", b'{"text": "fine"}\n{"text": "\xdc\xff"}\n', "not UTF-8 text"),
        ("notes.txt", b"plain \xdc\xff bytes", "not UTF-8 text"),
        ("rows.jsonl.gz", b"not gzip at all", "not a readable gzip file"),
    ],
)
def test_a_file_that_is_not_utf8_text_is_a_data_error_naming_it(tmp_path, tokenizer, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    for fmt in ("text", "hh"):
        with pytest.raises(DataError, match=re.escape(f"{path}: {message}")):
            load_examples(path, fmt, tokenizer, seq_len=16)
    if name.endswith(".jsonl"):
        with pytest.raises(DataError, match=re.escape(f"{path}: {message}")):
            read_multiple_choice(path)
