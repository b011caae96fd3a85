import json
import math

import pytest
import torch

from llm_validation.evaluate import MAX_LOSS, load_token_blocks, pack_tokens, perplexity, perplexity_of, read_texts

from .conftest import make_model, tiny_corpus


@pytest.fixture
def model(tokenizer):
    return make_model(tokenizer, seed=5)


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "heldout.txt"
    path.write_text("\n".join(tiny_corpus(30, seed=2)))
    return path


def nll_by_hand(model, blocks):
    with torch.no_grad():
        log_probs = torch.log_softmax(model(input_ids=blocks).logits.double(), dim=-1)
    picked = log_probs[:, :-1].gather(-1, blocks[:, 1:, None]).squeeze(-1)
    return -picked.mean().item()


def test_perplexity_is_exp_mean_token_nll(model, tokenizer, text_file):
    blocks = load_token_blocks(text_file, tokenizer, seq_len=16)
    mean_nll = nll_by_hand(model, blocks)
    for batch_size in (1, 3, len(blocks)):
        result = perplexity(model, blocks, batch_size)
        assert result.mean_nll == pytest.approx(mean_nll, rel=1e-6)
        assert result.perplexity == pytest.approx(math.exp(mean_nll), rel=1e-6)
        assert (result.n_tokens, result.batch_size, result.seq_len) == (len(blocks) * 15, batch_size, 16)
    assert (result.dtype, result.device) == ("float32", "cpu")


def test_perplexity_is_deterministic_and_keeps_training_flag(model, tokenizer, text_file):
    blocks = load_token_blocks(text_file, tokenizer, seq_len=16, max_blocks=5)
    model.train()
    assert perplexity(model, blocks, 2) == perplexity(model, blocks, 2)
    assert model.training


def test_bfloat16_dtype_recorded(model, tokenizer, text_file):
    blocks = load_token_blocks(text_file, tokenizer, seq_len=16, max_blocks=4)
    fp32 = perplexity(model, blocks, 4)
    bf16 = perplexity(model.to(torch.bfloat16), blocks, 4)
    assert bf16.dtype == "bfloat16"
    assert bf16.perplexity == pytest.approx(fp32.perplexity, rel=0.05)


def test_pack_drops_remainder_and_separates_documents():
    blocks = pack_tokens([[1, 2, 3], [4, 5]], seq_len=3, separator=0)
    assert blocks.tolist() == [[1, 2, 3], [0, 4, 5]]  # the trailing separator is the dropped remainder
    assert pack_tokens([[1, 2]], seq_len=3, separator=None).shape == (0, 3)
    with pytest.raises(ValueError, match="seq_len=1"):
        pack_tokens([[1, 2]], seq_len=1, separator=None)


def test_jsonl_and_text_read_the_same_documents(tmp_path, tokenizer):
    lines = tiny_corpus(5)
    jsonl = tmp_path / "heldout.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": line, "id": i}) for i, line in enumerate(lines)) + "\n\n")
    assert read_texts(jsonl) == lines
    single = tmp_path / "one.txt"
    single.write_text(lines[0])
    assert torch.equal(
        load_token_blocks(single, tokenizer, 4),
        pack_tokens([tokenizer(lines[0])["input_ids"]], 4, tokenizer.eos_token_id),
    )


@pytest.mark.parametrize("content", [None, "", "  \n\n", '{"text": ""}\n'])
def test_missing_or_empty_eval_file_named(tmp_path, tokenizer, content):
    path = tmp_path / "eval.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match="eval file .*eval.jsonl"):
        load_token_blocks(path, tokenizer, seq_len=8)


def test_jsonl_without_text_field_and_too_short_file(tmp_path, tokenizer):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\n')
    with pytest.raises(ValueError, match="bad.jsonl.*'text' field"):
        read_texts(bad)
    short = tmp_path / "short.txt"
    short.write_text("the")
    with pytest.raises(ValueError, match="short.txt has fewer tokens than one block of seq_len=64"):
        load_token_blocks(short, tokenizer, seq_len=64)


def test_bad_batch_size_and_blocks(model):
    with pytest.raises(ValueError, match="batch_size=0"):
        perplexity(model, torch.zeros(2, 4, dtype=torch.long), 0)
    with pytest.raises(ValueError, match="token_blocks"):
        perplexity(model, torch.zeros(0, 4, dtype=torch.long), 1)


def test_binary_eval_file_is_named_as_not_utf8(tmp_path):
    binary = tmp_path / "weights.bin"
    binary.write_bytes(b"text then \xdc\xff bytes")
    with pytest.raises(ValueError, match="eval file .*weights.bin is not UTF-8 text") as error:
        read_texts(binary)
    assert not isinstance(error.value, UnicodeDecodeError) and "\n" not in str(error.value)


def test_an_overflowing_loss_has_infinite_perplexity_never_an_exception(model, tokenizer, text_file):
    assert perplexity_of(MAX_LOSS) < math.inf and perplexity_of(MAX_LOSS + 1) == math.inf
    assert perplexity_of(1e6) == math.inf and math.isnan(perplexity_of(math.nan))
    blocks = load_token_blocks(text_file, tokenizer, 16)[:2]
    assert not perplexity(model, blocks, 2).diverged
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1e4)  # logits of ~1e4 and beyond: mean NLL far above MAX_LOSS
    result = perplexity(model, blocks, 2)
    assert result.mean_nll > MAX_LOSS and result.perplexity == math.inf and result.diverged
