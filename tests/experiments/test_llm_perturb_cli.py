"""``ovt llm perturb``: the store it writes, pairing, resume, exit codes."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from experiments.llm.kinds import perturb as llm_perturb_cli
from llm_validation import checkpoints
from llm_validation.evaluate import load_token_blocks, perplexity
from llm_validation.perturb import perturbed
from rundir import store
from tests.experiments.conftest import ovt
from tests.llm_validation.conftest import HUB_REPO, make_tokenizer, tiny_corpus

pytestmark = pytest.mark.usefixtures("one_torch_thread", "empty_offline_cache")


@pytest.fixture(scope="module")
def eval_text(tmp_path_factory):
    path = tmp_path_factory.mktemp("eval") / "held_out.txt"
    path.write_text("\n".join(tiny_corpus(60, seed=9)))
    return path


@pytest.fixture
def loads(monkeypatch):
    """Every model ``perturb`` loads, in order (the run discards them; the test keeps them)."""
    loaded, original = [], checkpoints.load_checkpoint

    def load(*args, **kwargs):
        model, tokenizer = original(*args, **kwargs)
        loaded.append((args[1], model, tokenizer))
        return model, tokenizer

    monkeypatch.setattr(checkpoints, "load_checkpoint", load)
    return loaded


SMALL = ("--seq-len", 32, "--max-blocks", 4, "--batch-size", 3, "--quiet")


def perturb_args(model, eval_text, out, *extra, gammas="0.5,2", seeds=2, revisions=None):
    which = ("--revisions", revisions) if revisions else ("--tokens", "1e3,2K,5000")
    return (
        "llm",
        "perturb",
        "--model",
        model,
        *which,
        "--eval-text",
        eval_text,
        "--gammas",
        gammas,
        "--seeds",
        seeds,
        "--scale",
        "init",
        "--out",
        out,
        *SMALL,
        *extra,
    )


def test_perturb_writes_the_store_pairs_draws_and_restores(capsys, tmp_path, folder_series, eval_text, loads):
    root, seeds = folder_series
    out = tmp_path / "run"
    code, _, err = ovt(capsys, *perturb_args(root, eval_text, out))
    assert code == 0, err

    table = pd.read_parquet(out / store.METRICS)
    assert list(table.columns) == [*store.REQUIRED_COLUMNS, "mean_nll", "n_tokens", "diverged", "t_star_kind"]
    infl = table.checkpoint == "inflection"
    assert set(table.t_star_kind[~infl]) <= {""} and set(table.t_star_kind[infl]) <= {
        "interior",
        "flat",
        "below",
        "above",
        "none",
    }
    assert not table.diverged.any()
    inflections = table[table.metric == "inflection"]  # one per gamma, from the mean over draws
    assert len(inflections) == 2 and set(inflections.seed) == {-1} and set(inflections.modification) == {"gaussian"}
    table = table[table.metric != "inflection"]
    assert len(table) == 3 * (1 + 2 * 2)
    stored = sorted(p.name for p in (out / store.CHUNKS).iterdir())  # each checkpoint's rows and its notes
    assert stored == [f"0000{i}.{kind}" for i in range(3) for kind in ("json", "parquet")]
    assert set(table.source) == {"llm"} and set(table.setup) == {root.name} and set(table.metric) == {"perplexity"}
    assert table[["lr", "steps", "reg"]].isna().all().all()
    assert dict(zip(table.checkpoint, table.pretrain_time)) == {
        "step10-tokens1K": 1000.0,
        "step20-tokens2K": 2000.0,
        "step40-tokens5K": 5000.0,
    }
    none = table[table.modification == "none"]
    assert len(none) == 3 and none.gamma.isna().all() and (none.seed == 0).all()
    noisy = table[table.modification == "gaussian"]
    assert sorted(set(zip(noisy.gamma, noisy.seed))) == [(0.5, 0), (0.5, 1), (2.0, 0), (2.0, 1)]
    assert noisy.groupby("checkpoint").size().eq(4).all()
    assert (table.n_tokens == 4 * 31).all()
    assert all(math.isclose(math.exp(n), v) for n, v in zip(table.mean_nll, table.value))

    manifest = store.read_manifest(out)
    assert [r["name"] for r in manifest["revisions"]] == list(seeds)
    assert [r["tokens"] for r in manifest["revisions"]] == [1000, 2000, 5000]
    assert manifest["eval"]["sha256"] == hashlib.sha256(eval_text.read_bytes()).hexdigest()
    config = manifest["config"]  # what the numbers depend on: the config's fields and what they resolved to
    assert manifest["eval"]["n_tokens"] == 124 and config["seq_len"] == 32 and config["batch_size"] == 3
    assert config["dtype"] == "float32" and config["device"] == "cpu" and config["scale"] == "init"
    assert config["seeds"] == 2 and config["eval_sha256"] == manifest["eval"]["sha256"]
    assert config["revisions"] == list(seeds) and "threads" not in config and "eval_text" not in config
    assert manifest["run_config"]["seeds"] == 2 and "gammas" not in manifest  # each setting recorded once
    assert manifest["status"] == "complete" and manifest["finished"] and manifest["versions"]["torch"]
    sigma = manifest["sigma"]
    assert sigma["checkpoint"] == "step10-tokens1K" and set(sigma["by_parameter"].values()) == {0.02}
    assert "model.embed_tokens.weight" in sigma["by_parameter"] and sigma["n_tensors"] == len(sigma["by_parameter"])

    # Paired draws: every checkpoint's (gamma, k) row is draw seed=k, and the models it ran are restored.
    assert [name for name, *_ in loads] == list(seeds)
    blocks = load_token_blocks(eval_text, loads[0][2], 32, 4)
    for name, model, _ in loads:
        rows = table[table.checkpoint == name]
        base = rows[rows.modification == "none"].value.item()
        draw = rows[(rows.modification == "gaussian") & (rows.gamma == 2.0) & (rows.seed == 1)].value.item()
        assert perplexity(model, blocks, 3).perplexity == base  # restored after the run's 4 draws
        with perturbed(model, 2.0, seed=1, scale="init"):
            assert perplexity(model, blocks, 3).perplexity == draw
    by_checkpoint = noisy.pivot_table(index=["gamma", "seed"], columns="checkpoint", values="value")
    assert (by_checkpoint.nunique(axis=1) == 3).all()  # same noise, different checkpoints, different numbers


def test_perturb_is_deterministic_and_resumes_after_the_stored_checkpoints(
    capsys, tmp_path, folder_series, eval_text, loads
):
    root, _ = folder_series
    first, second = tmp_path / "first", tmp_path / "second"
    for out in (first, second):
        code, _, err = ovt(capsys, *perturb_args(root, eval_text, out, gammas="1", seeds=1))
        assert code == 0, err
    table = pd.read_parquet(first / store.METRICS)
    pd.testing.assert_frame_equal(table, pd.read_parquet(second / store.METRICS))
    assert len(table) == 3 * 2 + 1  # + the inflection row of the one gamma

    (second / store.METRICS).unlink()
    (second / store.CHUNKS / "00001.parquet").unlink()
    del loads[:]
    code, _, err = ovt(capsys, *perturb_args(root, eval_text, second, gammas="1", seeds=1))
    assert code == 0, err
    assert [name for name, *_ in loads] == ["step20-tokens2K"]  # only the missing checkpoint ran again
    pd.testing.assert_frame_equal(table, pd.read_parquet(second / store.METRICS))
    assert store.read_manifest(second)["resumed"]


def test_perturb_from_the_offline_hub_cache_records_the_commit(capsys, tmp_path, hub_cache, eval_text):
    out = tmp_path / "hub"
    argv = perturb_args(hub_cache, eval_text, out, gammas="1", seeds=1)
    argv = tuple("1900,2.2K" if a == "1e3,2K,5000" else a for a in argv)  # both nearest to step20-tokens2K
    code, _, err = ovt(capsys, *argv)
    assert code == 0, err
    table = pd.read_parquet(out / store.METRICS)
    table = table[table.metric != "inflection"]  # one checkpoint: its inflection is NaN
    assert set(table.setup) == {HUB_REPO} and list(table.checkpoint.unique()) == ["step20-tokens2K"]
    assert len(table) == 2
    (revision,) = store.read_manifest(out)["revisions"]
    assert revision["commit"] == hashlib.sha1(b"step20-tokens2K").hexdigest()
    assert revision["requested_tokens"] == [1900.0, 2200.0] and revision["tokens"] == 2000


def _bad_cases():
    good = {
        "--model": "SERIES",
        "--tokens": "1e3",
        "--eval-text": "EVAL",
        "--gammas": "0.5",
        "--seeds": "1",
        "--scale": "init",
        "--out": "OUT",
    }

    def args(**changes):
        merged = {**good, **{k.replace("_", "-"): v for k, v in changes.items()}}
        return [x for k, v in merged.items() if v is not None for x in (k, v)]

    return [
        (args(__model="nonexistent-org/none"), "nonexistent-org/none"),
        (args(__model="notamodel"), "model='notamodel'"),
        (args(__model="./no/such/folder"), "./no/such/folder"),
        (args(__tokens=None, __revisions="step10x"), "revision='step10x' is not a checkpoint name"),
        (args(__tokens=None, __revisions="step15-tokens1500"), "nearest available: step10-tokens1K"),
        (args(__tokens="lots"), "--tokens 'lots'"),
        (args(__tokens="1e400"), "--tokens '1e400' must be a finite number"),
        (args(__tokens="2e15"), "--tokens 2e15 must be <= 1e+15"),
        (args(__gammas="0.1,-0.5"), "--gammas -0.5 must be >= 0"),
        (args(__gammas="0.1,abc"), "--gammas 'abc' is not a number"),
        (args(__gammas="1,inf"), "--gammas 'inf' must be a finite number"),
        (args(__gammas=",".join(map(str, range(101)))), "--gammas has 101 values; at most 100"),
        (args(__seeds="0"), "--seeds 0 must be >= 1"),
        (args(__seeds="1000000000"), "--seeds 1000000000 must be >= 1 and <= 10,000"),
        (args(__seeds="two"), "--seeds 'two' is not an integer"),
        (args(__eval_text="MISSING"), "missing.txt does not exist"),
        (args(__eval_text="EMPTY"), "empty.txt holds no text"),
        (args(__eval_text="BINARY"), "binary.txt is not UTF-8 text"),
        (args(__out="BLOCKED"), "not writable"),
        (args(__revisions="step10-tokens1K"), "revisions and tokens exclude each other"),
        (args(__model="nonexistent-org/none", __tokens=None), "give revisions or tokens"),
        (args(__scale="huge"), "invalid choice: 'huge'"),
        (args() + ["--seq-len", "100000"], "seq_len=100000 exceeds the 128 positions of step10-tokens1K"),
        (args() + ["--seq-len", "1"], "--seq-len 1 must be >= 2"),
        (args() + ["--batch-size", "5000"], "--batch-size 5000 must be >= 1 and <= 1,024"),
        (args() + ["--max-blocks", "0"], "--max-blocks 0 must be >= 1"),
        (args() + ["--threads", "0"], "--threads 0 must be >= 1 and <= 256"),
        pytest.param(
            args() + ["--device", "cuda"],
            "device=cuda",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present"),
        ),
    ]


@pytest.mark.parametrize("argv, needle", _bad_cases())
def test_bad_input_exits_2_with_one_line_and_writes_nothing(capsys, tmp_path, folder_series, eval_text, argv, needle):
    (tmp_path / "empty.txt").write_text(" \n\n")
    (tmp_path / "binary.txt").write_bytes(b"held-out \xdc\xff")
    (tmp_path / "file").write_text("x")
    paths = {
        "SERIES": folder_series[0],
        "EVAL": eval_text,
        "OUT": tmp_path / "out",
        "MISSING": tmp_path / "missing.txt",
        "EMPTY": tmp_path / "empty.txt",
        "BINARY": tmp_path / "binary.txt",
        "BLOCKED": tmp_path / "file" / "out",
    }
    code, out, err = ovt(capsys, "llm", "perturb", *[paths.get(a, a) for a in argv], "--quiet")
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("ovt") and needle in err, err
    assert not (tmp_path / "out").exists() and not (tmp_path / "file" / "out").exists()


def test_checkpoints_whose_tokenizers_disagree_exit_2(capsys, tmp_path, folder_series, eval_text):
    root = tmp_path / "series"
    shutil.copytree(folder_series[0], root)
    other = root / "step20-tokens2K"
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (other / name).unlink()
    make_tokenizer(vocab_size=270).save_pretrained(other)
    out = tmp_path / "out"
    code, _, err = ovt(capsys, *perturb_args(root, eval_text, out))
    assert code == 2 and err.count("\n") == 1 and "revision='step20-tokens2K' tokenizes" in err, err
    assert not out.exists()


def test_a_run_directory_of_another_config_is_refused_untouched(capsys, tmp_path, folder_series, eval_text):
    out = tmp_path / "run"
    code, _, err = ovt(
        capsys, *perturb_args(folder_series[0], eval_text, out, gammas="0", seeds=1, revisions="step10-tokens1K")
    )
    assert code == 0, err
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    code, _, err = ovt(
        capsys, *perturb_args(folder_series[0], eval_text, out, gammas="1", seeds=1, revisions="step10-tokens1K")
    )
    assert code == 2 and "another config" in err and err.count("\n") == 1
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert json.loads((out / store.MANIFEST).read_text())["config"]["gammas"] == [0.0]
    assert store.stored_chunks(out) == {0}


def test_divergence_at_both_ends_of_large_gamma_is_recorded_never_a_crash(capsys, tmp_path, folder_series, eval_text):
    """gamma 1e2 stays finite (mean NLL ~30); 3000 and 1e6 overflow the perplexity (NLL ~1e3, ~3e5:
    far beyond MAX_LOSS ~ 710): recorded as inf with ``diverged``, and the run goes on."""
    out = tmp_path / "run"
    code, _, err = ovt(
        capsys,
        *perturb_args(folder_series[0], eval_text, out, gammas="100,3000,1e6", seeds=2, revisions="step10-tokens1K"),
    )
    assert code == 0, err
    table = pd.read_parquet(out / store.METRICS)
    rows = table[table.metric == "perplexity"]
    assert table.diverged.dtype == bool and (rows.diverged == ~rows.value.map(math.isfinite)).all()
    assert len(rows) == 1 + 3 * 2 and not rows[(rows.modification == "none") | (rows.gamma == 100)].diverged.any()
    huge = rows[rows.gamma == 1e6]
    assert huge.diverged.all() and (huge.value == math.inf).all() and (huge.mean_nll > 1e4).all()
    assert store.read_manifest(out)["status"] == "complete"


def test_a_folder_series_defaults_to_every_checkpoint_and_the_init_scale(capsys, tmp_path, folder_series, eval_text):
    out = tmp_path / "run"
    code, _, err = ovt(
        capsys,
        "llm",
        "perturb",
        "--model",
        folder_series[0],
        "--eval-text",
        eval_text,
        "--gammas",
        "0.5",
        "--seeds",
        "1",
        "--threads",
        "1",
        "--out",
        out,
        *SMALL,
    )
    assert code == 0 and err == "", err
    manifest = store.read_manifest(out)
    assert [r["name"] for r in manifest["revisions"]] == list(folder_series[1])
    assert manifest["config"]["scale"] == "init" and manifest["run_config"]["threads"] == 1
    assert manifest["run_config"]["tokens"] is None and manifest["run_config"]["revisions"] is None
    # Paths are recorded relative to the run directory: a results tree can move or be committed.
    assert (out / manifest["model_source"]).resolve() == folder_series[0].resolve()
    assert (out / manifest["eval"]["path"]).resolve() == eval_text.resolve()
    assert manifest["config"]["model"] == manifest["model_source"]
    assert manifest["run_config"]["model"] == manifest["model_source"]
    assert manifest["run_config"]["eval_text"] == manifest["eval"]["path"]
    assert str(tmp_path) not in json.dumps(manifest) and str(eval_text.parent) not in json.dumps(manifest)


def test_tokens_far_from_every_checkpoint_warn_in_one_line(capsys, tmp_path, folder_series, eval_text):
    out = tmp_path / "run"
    argv = perturb_args(folder_series[0], eval_text, out, gammas="0", seeds=1)
    code, _, err = ovt(capsys, *(("1T,2T,4.5K" if a == "1e3,2K,5000" else a) for a in argv))
    assert code == 0, err
    assert err.count("\n") == 1 and err.startswith(
        "ovt: warning: tokens 1T -> step40-tokens5K, 2T -> step40-tokens5K:"
    ), err
    assert "4.5K" not in err  # within 2x of 5K: no warning
    assert [r["requested_tokens"] for r in store.read_manifest(out)["revisions"]] == [[1e12, 2e12, 4500.0]]


def test_a_failed_run_is_marked_and_a_corrected_command_replaces_it(capsys, tmp_path, folder_series, eval_text):
    root = tmp_path / "series"
    shutil.copytree(folder_series[0], root)
    (root / "step40-tokens5K" / "model.safetensors").write_bytes(b"not a safetensors file")
    out = tmp_path / "run"
    code, _, err = ovt(capsys, *perturb_args(root, eval_text, out, gammas="1", seeds=1))
    assert code == 1 and "step40-tokens5K" in err, err
    assert store.stored_chunks(out) == {0, 1}
    assert not (out / store.METRICS).exists()
    manifest = store.read_manifest(out)
    assert manifest["status"] == "failed" and "step40-tokens5K" in manifest["error"] and manifest["stopped"]

    # A corrected command (another config) replaces the failed run.
    corrected = perturb_args(root, eval_text, out, gammas="1", seeds=1, revisions="step10-tokens1K,step20-tokens2K")
    code, _, err = ovt(capsys, *corrected)
    assert code == 0 and "replacing the failed run" in err, err
    manifest = store.read_manifest(out)
    assert manifest["status"] == "complete" and "error" not in manifest and "resumed" not in manifest
    table = pd.read_parquet(out / store.METRICS)
    assert set(table.checkpoint) - {"inflection"} == {"step10-tokens1K", "step20-tokens2K"}
    # A complete run is never replaced.
    code, _, err = ovt(capsys, *perturb_args(root, eval_text, out, gammas="2", seeds=1, revisions="step10-tokens1K"))
    assert code == 2 and "holds a complete run of another config" in err, err


def test_numbers_and_flags_are_refused_before_torch_is_imported(tmp_path, folder_series, eval_text):
    """Bad numbers and names cost a fraction of a second: every LLM command rejects them (exit 2,
    nothing written) in a process that never imports torch or transformers."""
    common = ["--model", str(folder_series[0]), "--eval-text", str(eval_text), "--out", str(tmp_path / "out")]
    cases = [
        ["llm", "perturb", *common, "--gammas", "1", "--seeds", "1000000000"],
        ["llm", "perturb", *common, "--gammas", "1,nan", "--seeds", "1"],
        ["llm", "perturb", *common, "--gammas", "1", "--seeds", "1", "--tokens", "1e400"],
        [
            "llm",
            "perturb",
            "--model",
            "org/name",
            "--eval-text",
            str(eval_text),
            "--gammas",
            "1",
            "--seeds",
            "1",
            "--out",
            str(tmp_path / "out"),
        ],
        ["llm", "finetune", *common, "--data", str(eval_text), "--format", "text", "--lrs", "0", "--steps", "1"],
        [
            "llm",
            "finetune",
            *common,
            "--data",
            str(eval_text),
            "--format",
            "text",
            "--lrs",
            "1",
            "--steps",
            "1",
            "--heldout-fraction",
            "1",
        ],
        ["llm", "pretrain", "--preset", "tiny", "--budgets", "1e400", "--out", str(tmp_path / "out")],
        ["llm", "pretrain", "--preset", "tiny", "--budgets", "1e12", "--out", str(tmp_path / "out")],
        ["llm", "pretrain", "--preset", "tiny", "--budgets", "1K", "--seq-len", "1000", "--out", str(tmp_path / "out")],
        ["llm", "pretrain", "--preset", "huge", "--budgets", "1K", "--out", str(tmp_path / "out")],
    ]
    script = (
        "import sys, json\nfrom experiments import cli\n"
        f"codes = [cli.main(argv) for argv in {cases!r}]\n"
        "print(json.dumps([codes, sorted({'torch', 'transformers'} & set(sys.modules))]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    codes, heavy = json.loads(done.stdout.splitlines()[-1])
    assert codes == [2] * len(cases) and heavy == [], done.stderr
    assert len(done.stderr.splitlines()) == len(cases) and not (tmp_path / "out").exists()


def test_the_perturb_summary_lists_checkpoints_then_each_gammas_t_star():
    reference = Path(__file__).resolve().parents[2] / "paper_figures" / "reference" / "llm" / "perturb"
    text = llm_perturb_cli.summary(pd.read_parquet(reference / store.METRICS))
    *rows, last = text.splitlines()
    assert len(rows) == 2 + 6 and not any(row.startswith("inflection") for row in rows)
    assert last == (
        "inflection T* (tokens) - gamma=0.5: above the range, gamma=1: above the range, "
        "gamma=2: 2.69M, gamma=4: below the range"
    )
    old = pd.read_parquet(reference / store.METRICS).drop(columns="t_star_kind")  # a store from before the kinds
    assert llm_perturb_cli.summary(old).splitlines()[-1].endswith("gamma=2: 2.69M, gamma=4: none in range")


def test_a_series_trunk_checkpoints_are_a_stage_asked_for_by_name(capsys, tmp_path, folder_series, eval_text):
    """A WSD series' ``trunk-`` checkpoints sit beside its annealed ones: a run takes the annealed
    ones unless ``stage=trunk`` (or their names) asks for the trunk; a stage the series lacks is refused."""
    root, seeds = folder_series
    series = tmp_path / "series"
    shutil.copytree(root, series)
    for name in seeds:
        shutil.copytree(root / name, series / f"trunk-{name}")
    out = tmp_path / "annealed"
    every = list(perturb_args(series, eval_text, out, gammas="0.5", seeds=1))
    del every[every.index("--tokens") : every.index("--tokens") + 2]  # neither tokens nor revisions: every one
    code, _, err = ovt(capsys, *every)
    assert code == 0, err
    assert sorted(set(pd.read_parquet(out / store.METRICS).checkpoint) - {"inflection"}) == sorted(seeds)
    trunk = tmp_path / "trunk"
    code, _, err = ovt(capsys, *perturb_args(series, eval_text, trunk, "--stage", "trunk", gammas="0.5", seeds=1))
    assert code == 0, err
    table = pd.read_parquet(trunk / store.METRICS)
    assert sorted(set(table.checkpoint) - {"inflection"}) == sorted(f"trunk-{name}" for name in seeds)
    base = pd.read_parquet(out / store.METRICS).query("modification == 'none'").value.to_numpy()
    assert table.query("modification == 'none'").value.to_numpy() == pytest.approx(base, rel=1e-6)  # same weights
    named = tmp_path / "named"
    code, _, err = ovt(
        capsys, *perturb_args(series, eval_text, named, gammas="0.5", seeds=1, revisions="trunk-step10-tokens1K")
    )
    assert code == 0, err
    assert set(pd.read_parquet(named / store.METRICS).checkpoint) - {"inflection"} == {"trunk-step10-tokens1K"}
    missing = tmp_path / "missing"
    code, _, err = ovt(capsys, *perturb_args(series, eval_text, missing, "--stage", "stage1", gammas="0.5", seeds=1))
    assert code == 2 and err.strip().count("\n") == 0 and "stage='stage1'" in err and "its stages: -, trunk" in err
    assert not missing.exists()
