"""``ovt llm pretrain``: a series perturb reads unchanged, its perplexity store, resume, exit codes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from experiments import cli
from experiments.llm.kinds import pretrain as llm_pretrain_cli
from llm_validation import checkpoints, evaluate, pretrain
from llm_validation.evaluate import load_token_blocks, perplexity
from rundir import store
from tests.experiments.conftest import ovt

# 4 x 32 = 128 tokens a step: 1K, 2K, 4K tokens are 8, 16 and 31 steps of a ~20k-parameter model.
SERIES = (
    "--preset",
    "20k",
    "--corpus",
    "synthetic",
    "--max-train-chars",
    "20000",
    "--seq-len",
    "32",
    "--batch-size",
    "4",
    "--lr",
    "3e-3",
    "--threads",
    "1",
    "--quiet",
)
NAMES = ["step8-tokens1024", "step16-tokens2048", "step31-tokens3968"]


def pretrain_args(out, budgets="1K,2K,4K", *extra):
    return ("llm", "pretrain", "--budgets", budgets, "--out", out, *SERIES, *extra)


pytestmark = pytest.mark.usefixtures("one_torch_thread", "empty_offline_cache")


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """The series built once through the CLI; treat as read-only."""
    out = tmp_path_factory.mktemp("pretrain") / "series"
    assert cli.main([str(a) for a in pretrain_args(out)]) == 0
    return out


def weights(folder):
    return AutoModelForCausalLM.from_pretrained(folder).state_dict()


def test_the_series_is_listed_and_stores_the_heldout_perplexity_of_every_checkpoint(capsys, series):
    code, out, err = ovt(capsys, "llm", "revisions", series)
    assert code == 0, err
    lines = out.splitlines()
    assert [line.split()[0] for line in lines[1:-1]] == NAMES
    assert lines[-1].startswith(f"{len(NAMES)} revisions; ")  # the footer: count, parameters, family

    table = pd.read_parquet(series / store.METRICS)
    assert list(table.columns[:12]) == list(store.REQUIRED_COLUMNS)
    assert (
        list(table.checkpoint) == NAMES and set(table.modification) == {"none"} and set(table.metric) == {"perplexity"}
    )
    assert list(table.pretrain_time) == [1024.0, 2048.0, 3968.0] and set(table.seed) == {0}
    assert table[["gamma", "lr", "steps", "reg"]].isna().all().all()
    tokenizer = AutoTokenizer.from_pretrained(series / "tokenizer")
    blocks = load_token_blocks(series / "heldout.txt", tokenizer, 32)
    for name, value in zip(table.checkpoint, table.value):
        model, _ = checkpoints.load_checkpoint(series, name)
        assert value == perplexity(model, blocks, llm_pretrain_cli.EVAL_BATCH_SIZE).perplexity
    assert table.value.iloc[0] > table.value.iloc[-1]  # more tokens, lower held-out perplexity

    manifest = store.read_manifest(series)
    assert manifest["command"] == "llm pretrain" and manifest["status"] == "complete"
    assert manifest["config"]["series"] == json.loads((series / "series.json").read_text())["config"]
    assert manifest["eval"]["n_blocks"] == len(blocks) and manifest["eval"]["path"] == "heldout.txt"
    assert [r["name"] for r in manifest["revisions"]] == NAMES
    assert all(
        json.loads((series / n / "checkpoint.json").read_text())["tokens"] == t
        for n, t in zip(NAMES, table.pretrain_time)
    )


def test_perturb_reads_the_folder_as_a_series_and_agrees_on_the_base_curve(capsys, tmp_path, series):
    out = tmp_path / "perturb"
    code, _, err = ovt(
        capsys,
        "llm",
        "perturb",
        "--model",
        series,
        "--tokens",
        "1K,2K,4K",
        "--eval-text",
        series / "heldout.txt",
        "--gammas",
        "1",
        "--seeds",
        "1",
        "--scale",
        "init",
        "--seq-len",
        "32",
        "--batch-size",
        str(llm_pretrain_cli.EVAL_BATCH_SIZE),
        "--out",
        out,
        "--quiet",
    )
    assert code == 0, err
    base = pd.read_parquet(out / store.METRICS).query("modification == 'none'")
    stored = pd.read_parquet(series / store.METRICS)
    assert list(base.checkpoint) == NAMES and list(base.value) == list(stored.value)
    assert store.read_manifest(out)["setup"] == store.read_manifest(series)["setup"] == "series"


def test_a_rerun_trains_and_evaluates_only_what_is_missing(capsys, tmp_path, series, monkeypatch):
    copy = tmp_path / "series"
    shutil.copytree(series, copy)
    before = pd.read_parquet(copy / store.METRICS)

    def refuse(*args, **kwargs):
        raise AssertionError("finished work was redone")

    with monkeypatch.context() as patch:
        patch.setattr(pretrain, "_train", refuse)
        patch.setattr(evaluate, "perplexity", refuse)
        code, _, err = ovt(capsys, *pretrain_args(copy))
    assert code == 0, err
    pd.testing.assert_frame_equal(pd.read_parquet(copy / store.METRICS), before)
    assert store.read_manifest(copy)["status"] == "complete"

    # As if killed before the last checkpoint was saved and while the table had two rows.
    shutil.rmtree(copy / NAMES[-1])
    store.write_table(copy / store.METRICS, before.iloc[:2])
    calls = []
    original = evaluate.perplexity
    monkeypatch.setattr(evaluate, "perplexity", lambda *a, **k: calls.append(1) or original(*a, **k))
    code, _, err = ovt(capsys, *pretrain_args(copy))
    assert code == 0, err
    assert len(calls) == 1
    pd.testing.assert_frame_equal(pd.read_parquet(copy / store.METRICS), before)
    wa, wb = weights(series / NAMES[-1]), weights(copy / NAMES[-1])
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_single_mode_saves_on_the_way_and_max_blocks_caps_the_eval(capsys, tmp_path):
    out = tmp_path / "single"
    code, _, err = ovt(capsys, *pretrain_args(out, "1K,2K", "--mode", "single", "--max-blocks", "3"))
    assert code == 0, err
    table = pd.read_parquet(out / store.METRICS)
    assert list(table.checkpoint) == NAMES[:2] and np.isfinite(table.value).all()
    assert [json.loads((out / n / "checkpoint.json").read_text())["mode"] for n in NAMES[:2]] == ["single"] * 2
    manifest = store.read_manifest(out)
    assert manifest["eval"]["n_blocks"] == 3 and manifest["eval"]["max_blocks"] == 3
    assert manifest["config"]["series"]["mode"] == "single"


def _bad_cases():
    def args(budgets="1K,2K", **replace):
        argv = list(pretrain_args("OUT", budgets))
        for flag, value in replace.items():
            argv[argv.index(flag.replace("_", "-")) + 1] = value
        return argv

    return [
        (args(__preset="huge"), "invalid choice: 'huge'"),
        (args(__corpus="latin"), "invalid choice: 'latin'"),
        (args() + ["--mode", "twice"], "invalid choice: 'twice'"),
        (args(budgets="1K,0"), "budget=0 must be a positive whole number"),
        (args(budgets="1K,-5"), "--budgets '-5' is not a token count"),
        (args(budgets="lots"), "--budgets 'lots' is not a token count"),
        (args(budgets="1K,1.5"), "budget=1.5 must be a positive whole number"),
        (args(budgets="1K,1e400"), "--budgets '1e400' must be a finite number"),
        (args(budgets="2e15"), "--budgets 2e15 must be <= 1e+15"),
        (args(budgets="1K,1e12"), "budgets: 1T tokens is 7,812,500,000 steps of 128 tokens"),
        (args(__lr="0"), "--lr 0 must be > 0"),
        (args(__lr="inf"), "--lr 'inf' must be a finite number"),
        (args(__seq_len="x"), "--seq-len 'x' is not an integer"),
        (args(__seq_len="1000"), "seq_len=1000 must lie in [2, 512] for preset '20k'"),
        (args(__batch_size="2000"), "--batch-size 2000 must be >= 1 and <= 1,024"),
        (args(__threads="0"), "--threads 0 must be >= 1"),
        (args() + ["--seed", "-1"], "--seed -1 must be >= 0"),
        (args() + ["--vocab-size", "100"], "vocab_size=100 (preset '20k') must be >= 258"),
        (args() + ["--vocab-size", "10000000"], "--vocab-size 10000000 must be >= 1 and <= 1,000,000"),
        (args() + ["--max-blocks", "0"], "--max-blocks 0 must be >= 1"),
        (args(__out="BLOCKED"), "not writable"),
        (args(__out="CLUTTERED"), "holds no series.json"),
        (args(__out="SERIES"), "holds a series with other lr=0.003"),
    ]


@pytest.mark.parametrize("argv, needle", _bad_cases())
def test_bad_input_exits_2_with_one_line_and_writes_nothing(capsys, tmp_path, series, argv, needle):
    (tmp_path / "file").write_text("x")
    (tmp_path / "cluttered").mkdir()
    (tmp_path / "cluttered" / "notes.txt").write_text("mine")
    other = tmp_path / "other"
    shutil.copytree(series, other)
    paths = {
        "OUT": tmp_path / "out",
        "BLOCKED": tmp_path / "file" / "out",
        "CLUTTERED": tmp_path / "cluttered",
        "SERIES": other,
    }
    argv = [paths.get(a, a) for a in argv]
    if paths["SERIES"] in argv:
        argv[argv.index("--lr") + 1] = "1e-2"
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    code, out, err = ovt(capsys, *argv)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("ovt") and needle in err, err
    assert not (tmp_path / "out").exists() and not (tmp_path / "file" / "out").exists()
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_a_failed_series_without_checkpoints_is_replaced_by_a_corrected_command(capsys, tmp_path, monkeypatch):
    out = tmp_path / "series"

    def fail(*args, **kwargs):
        raise RuntimeError("out of memory, say")

    with monkeypatch.context() as patch:
        patch.setattr(pretrain, "_train", fail)
        code, _, err = ovt(capsys, *pretrain_args(out, "1K"))
    assert code == 1 and "out of memory, say" in err, err
    manifest = store.read_manifest(out)
    assert manifest["status"] == "failed" and "out of memory, say" in manifest["error"]
    assert (out / "series.json").is_file() and not list(out.glob("*/checkpoint.json"))

    argv = list(pretrain_args(out, "1K"))
    argv[argv.index("--lr") + 1] = "1e-2"  # another config: replaces the failed, empty series
    code, _, err = ovt(capsys, *argv)
    assert code == 0 and "replacing the unfinished series" in err, err
    assert json.loads((out / "series.json").read_text())["config"]["lr"] == 1e-2
    manifest = store.read_manifest(out)
    assert manifest["status"] == "complete" and "error" not in manifest and "resumed" not in manifest
    assert list(pd.read_parquet(out / store.METRICS).checkpoint) == NAMES[:1]


def test_a_failed_series_with_a_checkpoint_is_kept_and_resumed(capsys, tmp_path, series):
    copy = tmp_path / "series"
    shutil.copytree(series, copy)
    manifest = store.read_manifest(copy)
    store.write_json(copy / store.MANIFEST, {**manifest, "status": "failed", "error": "RuntimeError: boom"})
    before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    argv = list(pretrain_args(copy))
    argv[argv.index("--lr") + 1] = "1e-2"
    code, _, err = ovt(capsys, *argv)
    assert code == 2 and "holds a series with other lr=0.003" in err, err
    assert {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()} == before
    code, _, err = ovt(capsys, *pretrain_args(copy))  # the same command resumes it
    assert code == 0, err
    manifest = store.read_manifest(copy)
    assert manifest["status"] == "complete" and manifest["resumed"] and "error" not in manifest
