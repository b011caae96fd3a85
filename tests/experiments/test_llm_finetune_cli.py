"""``ovt llm finetune``: base / fixed / tuned / inflection rows, divergence, determinism, resume, exit codes."""

from __future__ import annotations

import hashlib
import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from experiments import cli
from experiments.llm.kinds.finetune import EVAL_BATCH_SIZE, _sha256
from llm_validation import checkpoints, finetune, revisions
from llm_validation.evaluate import load_token_blocks, perplexity
from llm_validation.finetune import FinetuneConfig, lr_grid
from llm_validation.finetune_data import CORPUS_CHARS, corpus_text, load_examples
from rundir import derived, fingerprint, store
from tests.experiments.conftest import ovt
from tests.llm_validation.conftest import tiny_corpus
from tests.llm_validation.test_suites import AMBER, OLMO2, PYTHIA, REVISIONS, SMOLLM2, suite_cache, suite_hub  # noqa: F401
from theory.measure import inflection

NAMES = ["step10-tokens1K", "step20-tokens2K", "step40-tokens5K"]
LRS = (3e-3, 1e-4)
SMALL = ("--steps", 3, "--reg", 0.1, "--seq-len", 32, "--batch-size", 4, "--seed", 5, "--threads", 1, "--quiet")
REQUIRED = list(store.REQUIRED_COLUMNS)


def finetune_args(model, data, eval_text, out, *extra, lrs=LRS, fmt="text", which=("--tokens", "1e3,2K,5000")):
    return (
        "llm",
        "finetune",
        "--model",
        model,
        *which,
        "--data",
        data,
        "--format",
        fmt,
        "--lrs",
        ",".join(map(str, lrs)),
        "--eval-text",
        eval_text,
        "--out",
        out,
        *SMALL,
        *extra,
    )


pytestmark = pytest.mark.usefixtures("one_torch_thread", "empty_offline_cache")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """(fine-tuning text, eval text): pseudo-English lines of two different seeds."""
    folder = tmp_path_factory.mktemp("data")
    (folder / "train.txt").write_text("\n".join(tiny_corpus(120, seed=3)))
    (folder / "heldout.txt").write_text("\n".join(tiny_corpus(40, seed=9)))
    return folder / "train.txt", folder / "heldout.txt"


@pytest.fixture(scope="module")
def run(tmp_path_factory, folder_series, files):
    """The two-lr grid on the three-checkpoint series, run once; treat as read-only."""
    out = tmp_path_factory.mktemp("finetune") / "run"
    assert cli.main([str(a) for a in finetune_args(folder_series[0], *files, out)]) == 0
    return out


def test_rows_schema_and_base_rows_are_the_checkpoints_own(run, folder_series, files):
    table = pd.read_parquet(run / store.METRICS)
    assert list(table.columns) == REQUIRED + ["lr_policy", "diverged", "steps_done", "step", "t_star_kind"]
    kinds = table.t_star_kind.where(table.checkpoint == "inflection", "-")
    assert set(kinds[table.checkpoint != "inflection"]) == {"-"} and set(
        table.t_star_kind[table.checkpoint != "inflection"]
    ) <= {""}
    assert set(kinds[table.checkpoint == "inflection"]) <= {"interior", "flat", "below", "above", "none"}
    # Per checkpoint: 2 base metrics + 2 lrs x (3 metrics + 3 step losses) + the tuned lr's 3; then one
    # T* per lr and tuned.
    assert len(table) == 3 * (2 + 2 * (3 + 3) + 3) + 3
    assert set(table.source) == {"llm"} and set(table.setup) == {folder_series[0].name} and set(table.seed) == {5}
    rows = table[table.checkpoint != "inflection"]
    assert list(dict.fromkeys(rows.checkpoint)) == NAMES
    assert list(rows.groupby("checkpoint", sort=False).pretrain_time.first()) == [1000.0, 2000.0, 5000.0]
    base = rows[rows.modification == "none"]
    assert set(base.metric) == {"perplexity", "finetune_loss"} and base[["lr", "steps", "reg"]].isna().all().all()
    ft = rows[rows.modification == "finetune"]
    assert set(ft.steps) == {3.0} and set(ft.reg) == {0.1} and not ft.diverged.any() and set(ft.steps_done) == {3.0}
    assert set(ft[ft.lr_policy == "fixed"].lr) == set(LRS)
    assert set(ft.metric) == {"perplexity", "finetune_loss", "train_loss", "step_loss"} and np.isfinite(ft.value).all()
    assert ft.step.notna().eq(ft.metric == "step_loss").all()

    model, tokenizer = checkpoints.load_checkpoint(folder_series[0], NAMES[0])
    blocks = load_token_blocks(files[1], tokenizer, 32)
    first = base[base.checkpoint == NAMES[0]].set_index("metric").value
    assert first["perplexity"] == perplexity(model, blocks, EVAL_BATCH_SIZE).perplexity
    # The fixed-lr rows are lr_grid's numbers on the last 10% of the data, held out.
    examples = load_examples(files[0], "text", tokenizer, 32)
    train, heldout = examples.split(round(0.1 * len(examples)))
    config = FinetuneConfig(steps=3, batch_size=4, reg=0.1, seed=5)
    [point] = lr_grid(model, train, heldout, blocks, config, [LRS[0]])
    direct = ft[(ft.checkpoint == NAMES[0]) & (ft.lr == LRS[0]) & (ft.lr_policy == "fixed")]
    values = direct[direct.metric != "step_loss"].set_index("metric").value
    assert (values["perplexity"], values["finetune_loss"], values["train_loss"]) == (
        point.perplexity,
        point.finetune_loss,
        point.train_loss,
    )
    # The training loss of every step, in order: the in-task curve of the run.
    steps = direct[direct.metric == "step_loss"].sort_values("step")
    assert steps.step.tolist() == [0.0, 1.0, 2.0] and tuple(steps.value) == point.losses


def test_tuned_rows_take_the_lr_of_lowest_heldout_finetune_loss(run):
    table = pd.read_parquet(run / store.METRICS)
    rows = table[table.checkpoint != "inflection"]
    rows = rows[rows.metric != "step_loss"]  # the tuned copy carries the measurements, not the step curve
    fixed, tuned = rows[rows.lr_policy == "fixed"], rows[rows.lr_policy == "tuned"]
    manifest = store.read_manifest(run)
    for name in NAMES:
        losses = fixed[(fixed.checkpoint == name) & (fixed.metric == "finetune_loss")].set_index("lr").value
        best = losses.idxmin()
        assert set(tuned[tuned.checkpoint == name].lr) == {best}
        mine = tuned[tuned.checkpoint == name].set_index("metric").value
        theirs = fixed[(fixed.checkpoint == name) & (fixed.lr == best)].set_index("metric").value
        pd.testing.assert_series_equal(mine, theirs)
        assert next(r for r in manifest["revisions"] if r["name"] == name)["tuned_lr"] == best


def test_inflection_rows_use_the_theory_helper_on_each_perplexity_curve(run):
    table = pd.read_parquet(run / store.METRICS)
    infl = table[table.checkpoint == "inflection"]
    assert len(infl) == 3 and set(infl.metric) == {"inflection"} and infl.pretrain_time.isna().all()
    assert sorted(infl.lr_policy) == ["fixed", "fixed", "tuned"]
    assert set(infl[infl.lr_policy == "fixed"].lr) == set(LRS) and infl[infl.lr_policy == "tuned"].lr.isna().all()
    rows = table[
        (table.checkpoint != "inflection") & (table.metric == "perplexity") & (table.modification == "finetune")
    ]
    for policy, lr, value in zip(infl.lr_policy, infl.lr, infl.value):
        curve = rows[(rows.lr_policy == policy) & ((rows.lr == lr) if policy == "fixed" else True)]
        expected = float(inflection(curve.pretrain_time.to_numpy(), curve.value.to_numpy()))
        assert value == expected or (math.isnan(value) and math.isnan(expected))


def test_a_u_shaped_curve_gets_a_finite_inflection_inside_the_token_range(run):
    table = pd.read_parquet(run / store.METRICS)
    rows = table[table.checkpoint != "inflection"].copy()
    u_shape = (rows.metric == "perplexity") & (rows.lr_policy == "fixed") & (rows.lr == LRS[0])
    rows.loc[u_shape, "value"] = [30.0, 10.0, 20.0]
    infl = derived.finetune_inflection_rows(rows).set_index("lr").value
    t_star = float(inflection(np.array([1000.0, 2000.0, 5000.0]), np.array([30.0, 10.0, 20.0])))
    assert infl[LRS[0]] == t_star and 1000 < t_star < 5000


def test_the_manifest_records_the_inputs_and_the_grid(run, folder_series, files):
    manifest = store.read_manifest(run)
    assert manifest["command"] == "llm finetune" and manifest["status"] == "complete"
    assert manifest["data"]["sha256"] == hashlib.sha256(files[0].read_bytes()).hexdigest()
    config = manifest["config"]
    assert config["format"] == "text" and manifest["data"]["n_heldout"] >= 1
    assert config["lrs"] == list(LRS) and config["steps"] == 3 and config["reg"] == 0.1
    assert config["data_sha256"] == manifest["data"]["sha256"] and "lrs" not in manifest
    assert (config["batch_size"], config["seq_len"], config["dtype"], config["device"]) == (
        4,
        32,
        "float32",
        "cpu",
    )
    assert [r["name"] for r in manifest["revisions"]] == NAMES
    assert [r["requested_tokens"] for r in manifest["revisions"]] == [[1000.0], [2000.0], [5000.0]]
    assert manifest["eval"]["sha256"] == hashlib.sha256(files[1].read_bytes()).hexdigest()
    assert "torch" in manifest["versions"]


def test_a_diverging_lr_is_recorded_with_nan_values(capsys, tmp_path, folder_series, files):
    """Both ends of the divergent range, deterministically: at lr 1e2 the second batch's loss is finite
    but ~1e3, far beyond MAX_LOSS ~ 710 (its perplexity would overflow); at 1e6 it is NaN. Either
    stops the run after its first update, never on a borderline float overflow."""
    out = tmp_path / "run"
    code, _, err = ovt(capsys, *finetune_args(folder_series[0], *files, out, lrs=(1e2, 1e6)))
    assert code == 0, err
    table = pd.read_parquet(out / store.METRICS)
    ft = table[(table.modification == "finetune") & (table.checkpoint != "inflection")]
    # The step curve keeps the losses up to the offending one (the first finite, the second not usable).
    steps, ft = ft[ft.metric == "step_loss"], ft[ft.metric != "step_loss"]
    assert steps.diverged.all() and set(steps.step) == {0.0, 1.0} and np.isfinite(steps[steps.step == 0].value).all()
    assert not (steps[steps.step == 1].value <= 709.8).any()
    assert ft.diverged.all() and ft.value.isna().all()
    assert (ft[ft.lr_policy == "fixed"].steps_done == 1).all()  # stopped at the first diverged loss
    assert ft[ft.lr_policy == "tuned"][["lr", "steps_done"]].isna().all().all()  # every lr diverged: none tuned
    assert table[table.checkpoint == "inflection"].value.isna().all()
    base = table[table.modification == "none"]
    assert np.isfinite(base.value).all() and not base.diverged.any()
    assert [r["diverged_lrs"] for r in store.read_manifest(out)["revisions"]] == [[1e2, 1e6]] * 3


def test_deterministic_and_resumes_after_the_stored_checkpoints(
    capsys, tmp_path, run, folder_series, files, monkeypatch
):
    first = pd.read_parquet(run / store.METRICS)
    again = tmp_path / "again"
    code, _, err = ovt(capsys, *finetune_args(folder_series[0], *files, again))
    assert code == 0, err
    pd.testing.assert_frame_equal(pd.read_parquet(again / store.METRICS), first)

    # As if killed after the first checkpoint: only the other two are fine-tuned again.
    for index in (1, 2):
        store.chunk_path(again, index).unlink()
    (again / store.METRICS).unlink()
    grids, original = [], finetune.lr_grid
    monkeypatch.setattr(finetune, "lr_grid", lambda *a, **k: grids.append(1) or original(*a, **k))
    code, _, err = ovt(capsys, *finetune_args(folder_series[0], *files, again))
    assert code == 0, err
    assert len(grids) == 2 * len(LRS)
    pd.testing.assert_frame_equal(pd.read_parquet(again / store.METRICS), first)
    assert len(store.read_manifest(again)["resumed"]) == 1


def test_repeats_are_paired_batch_orders_deterministic_and_resumed_bit_for_bit(
    capsys, tmp_path, run, folder_series, files, monkeypatch
):
    """--repeats 2 with warmup: seeds 5 and 6 at every (checkpoint, lr); seed 5's rows are the
    one-order run's; each order's tuned lr is its own; a kill after one checkpoint resumes to the table."""
    out = tmp_path / "repeats"
    argv = finetune_args(folder_series[0], *files, out, "--repeats", 2, "--warmup-steps", 2)
    code, _, err = ovt(capsys, *argv)
    assert code == 0, err
    table = pd.read_parquet(out / store.METRICS)
    ft = table[(table.modification == "finetune") & (table.checkpoint != "inflection")]
    assert set(ft.seed) == {5, 6}
    for policy in ("fixed", "tuned"):
        counts = ft[(ft.lr_policy == policy) & (ft.metric == "perplexity")].groupby(["checkpoint", "seed"]).size()
        assert set(counts) == {len(LRS) if policy == "fixed" else 1} and len(counts) == 3 * 2
    # Another order of batches gives other numbers; warmup changes seed 5's numbers from the plain run's.
    plain = pd.read_parquet(run / store.METRICS)
    key = ["checkpoint", "lr", "metric", "step"]
    mine = ft[(ft.lr_policy == "fixed") & (ft.seed == 5)].set_index(key).value.sort_index()
    other = ft[(ft.lr_policy == "fixed") & (ft.seed == 6)].set_index(key).value.sort_index()
    assert not np.allclose(mine.to_numpy(), other.to_numpy())
    theirs = plain[(plain.lr_policy == "fixed") & (plain.checkpoint != "inflection")].set_index(key).value.sort_index()
    assert not np.allclose(mine.to_numpy(), theirs.to_numpy())
    assert (table[table.checkpoint == "inflection"].seed == -1).all()  # T* of the mean over orders

    for index in (1, 2):
        store.chunk_path(out, index).unlink()
    (out / store.METRICS).unlink()
    grids, original = [], finetune.lr_grid
    monkeypatch.setattr(finetune, "lr_grid", lambda *a, **k: grids.append(1) or original(*a, **k))
    code, _, err = ovt(capsys, *argv)
    assert code == 0, err
    assert len(grids) == 2 * 2 * len(LRS)
    pd.testing.assert_frame_equal(pd.read_parquet(out / store.METRICS), table)


def test_multiple_choice_data_adds_accuracy_rows(capsys, tmp_path, folder_series, files):
    rows = [
        {"query": f"the number {i} is", "choices": ["small", "a very large value"], "label": i % 2} for i in range(12)
    ]
    mc = tmp_path / "mc.jsonl"
    mc.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    code, _, err = ovt(
        capsys,
        *finetune_args(folder_series[0], mc, files[1], out, "--mc-data", mc, fmt="mc", which=("--revisions", NAMES[0])),
    )
    assert code == 0, err
    table = pd.read_parquet(out / store.METRICS)
    accuracy = table[table.metric.isin(["accuracy", "accuracy_norm"])]
    assert len(accuracy) == 2 * (1 + len(LRS) + 1)  # base, each lr, tuned
    assert accuracy.value.between(0, 1).all()
    assert store.read_manifest(out)["mc"]["n_items"] == 12


@pytest.mark.parametrize("repo", [PYTHIA, OLMO2, SMOLLM2, AMBER])
def test_every_suite_family_fine_tunes_and_is_scored_after(capsys, tmp_path, suite_cache, files, repo):
    """One checkpoint of each family's offline hub cache through ``--mc-data``: the base rows are the
    built-in scorer's numbers on the checkpoint, the fine-tuned ones differ from them."""
    from llm_validation.finetune_data import read_multiple_choice
    from llm_validation.multiple_choice import score_multiple_choice

    rows = [
        {"query": f"the number {i} is", "choices": ["small", "a very large value"], "label": i % 2} for i in range(8)
    ]
    mc = tmp_path / "mc.jsonl"
    mc.write_text("".join(json.dumps(r) + "\n" for r in rows))
    revision, out = REVISIONS[repo][-1], tmp_path / "run"
    argv = finetune_args(
        repo, mc, files[1], out, "--mc-data", mc, fmt="mc", which=("--revisions", revision), lrs=(3e-3,)
    )
    code, _, err = ovt(capsys, *argv)
    assert code == 0, err
    table = pd.read_parquet(out / store.METRICS)
    rows = table[table.checkpoint == revision].set_index(["modification", "lr_policy", "metric"]).value
    model, tokenizer = checkpoints.load_checkpoint(repo, revision)
    scores = score_multiple_choice(model, tokenizer, read_multiple_choice(mc), batch_size=EVAL_BATCH_SIZE)
    assert (rows["none", "", "accuracy"], rows["none", "", "accuracy_norm"]) == (scores.accuracy, scores.accuracy_norm)
    assert rows["finetune", "fixed", "perplexity"] != rows["none", "", "perplexity"]
    assert 0 <= rows["finetune", "fixed", "accuracy"] <= 1
    assert table[table.checkpoint == revision].pretrain_time.unique().tolist() == [
        float(revisions.parse_revision(revision, repo).tokens)
    ]


def _bad_cases():
    def args(**replace):
        argv = list(finetune_args("SERIES", "DATA", "EVAL", "OUT"))
        for flag, value in replace.items():
            position = argv.index(flag.replace("_", "-"))
            if value is None:
                del argv[position : position + 2]
            else:
                argv[position + 1] = value
        return argv

    return [
        (args(__data="MALFORMED", __format="text"), "malformed.jsonl: row 3: missing field 'text'"),
        (args(__data="MISSING"), "data="),
        (args(__format="chat"), "invalid choice: 'chat'"),
        (args(__lrs="1e-3,0"), "--lrs 0 must be > 0"),
        (args(__lrs="1e-3,-1"), "--lrs -1 must be > 0"),
        (args(__lrs="fast"), "--lrs 'fast' is not a number"),
        (args(__lrs="1e-3,inf"), "--lrs 'inf' must be a finite number"),
        (args(__lrs=",".join(f"{i + 1}e-4" for i in range(101))), "--lrs has 101 values; at most 100"),
        (args(__steps="0"), "--steps 0 must be >= 1"),
        (args(__steps="10000000"), "--steps 10000000 must be >= 1 and <= 1,000,000"),
        (args(__reg="-0.5"), "--reg -0.5 must be >= 0"),
        (args(__reg="nan"), "--reg 'nan' must be a finite number"),
        (args(__seed="-1"), "--seed -1 must be >= 0"),
        (args(__seq_len="100000"), "seq_len=100000 exceeds the 128 positions of step10-tokens1K"),
        (args(__batch_size="0"), "--batch-size 0 must be >= 1"),
        (args(__threads="1000"), "--threads 1000 must be >= 1 and <= 256"),
        (args() + ["--warmup-steps", "-1"], "--warmup-steps -1 must be >= 0"),
        (args() + ["--warmup-steps", "5"], "warmup_steps=5 exceeds steps=3"),
        (args() + ["--repeats", "0"], "--repeats 0 must be >= 1"),
        (args(__seed=str(2**63 - 1)) + ["--repeats", "2"], "passes 9223372036854775807"),
        (args(__eval_text="MISSING"), "missing.txt does not exist"),
        (args(__eval_text="BINARY"), "binary.txt is not UTF-8 text"),
        (args(__data="BINARY"), "binary.txt: not UTF-8 text"),
        (args() + ["--heldout-data", "MISSING"], "heldout_data="),
        (args() + ["--mc-data", "MISSING"], "mc_data="),
        (args() + ["--heldout-fraction", "1"], "--heldout-fraction 1 must be > 0 and < 1"),
        (args() + ["--replay", "1", "--replay-data", "DATA"], "--replay 1 must be >= 0 and < 1"),
        (args() + ["--replay", "0.1"], "replay=0.1 and replay_data=None: give both or neither"),
        (args() + ["--replay", "0.1", "--replay-data", "MISSING"], "replay_data="),
        (args() + ["--revisions", NAMES[0]], "revisions and tokens exclude each other"),
        (args(__model="nonexistent-org/none", __tokens=None), "give revisions or tokens"),
        (args(__out="BLOCKED"), "not writable"),
        pytest.param(
            args() + ["--device", "cuda"],
            "device=cuda",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present"),
        ),
    ]


@pytest.mark.parametrize("argv, needle", _bad_cases())
def test_bad_input_exits_2_with_one_line_and_writes_nothing(capsys, tmp_path, folder_series, files, argv, needle):
    (tmp_path / "file").write_text("x")
    (tmp_path / "malformed.jsonl").write_text('{"text": "fine words"}\n\n{"txt": "typo"}\n')
    (tmp_path / "binary.txt").write_bytes(b"fine words \xdc\xff")
    paths = {
        "SERIES": folder_series[0],
        "DATA": files[0],
        "EVAL": files[1],
        "OUT": tmp_path / "out",
        "MISSING": tmp_path / "missing.txt",
        "MALFORMED": tmp_path / "malformed.jsonl",
        "BINARY": tmp_path / "binary.txt",
        "BLOCKED": tmp_path / "file" / "out",
    }
    code, out, err = ovt(capsys, *[paths.get(a, a) for a in argv])
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("ovt") and needle in err, err
    assert not (tmp_path / "out").exists() and not (tmp_path / "file" / "out").exists()


def test_a_run_directory_of_another_config_is_refused_untouched(capsys, tmp_path, folder_series, files):
    out = tmp_path / "run"
    code, _, err = ovt(
        capsys, *finetune_args(folder_series[0], *files, out, lrs=(1e-3,), which=("--revisions", NAMES[0]))
    )
    assert code == 0, err
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    code, _, err = ovt(
        capsys, *finetune_args(folder_series[0], *files, out, lrs=(3e-3,), which=("--revisions", NAMES[0]))
    )
    assert code == 2 and "another config" in err and err.count("\n") == 1
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert store.stored_chunks(out) == {0}


def test_defaults_every_checkpoint_of_a_folder_series_and_no_pull(capsys, tmp_path, folder_series, files):
    out = tmp_path / "run"
    argv = [
        "llm",
        "finetune",
        "--model",
        folder_series[0],
        "--data",
        files[0],
        "--format",
        "text",
        "--lrs",
        "1e-3",
        "--steps",
        1,
        "--eval-text",
        files[1],
        "--seq-len",
        32,
        "--batch-size",
        4,
        "--threads",
        1,
        "--quiet",
        "--out",
        out,
    ]
    code, _, err = ovt(capsys, *argv)
    assert code == 0 and err == "", err
    manifest = store.read_manifest(out)
    assert [r["name"] for r in manifest["revisions"]] == NAMES and manifest["config"]["reg"] == 0.0
    table = pd.read_parquet(out / store.METRICS)
    assert set(table[table.modification == "finetune"].reg) == {0.0}


def test_a_failed_run_is_marked_and_a_corrected_command_replaces_it(capsys, tmp_path, folder_series, files):
    root = tmp_path / "series"
    shutil.copytree(folder_series[0], root)
    (root / NAMES[-1] / "model.safetensors").write_bytes(b"not a safetensors file")
    out = tmp_path / "run"
    code, _, err = ovt(
        capsys, *finetune_args(root, *files, out, lrs=(1e-3,), which=("--revisions", f"{NAMES[0]},{NAMES[-1]}"))
    )
    assert code == 1 and NAMES[-1] in err, err
    manifest = store.read_manifest(out)
    assert manifest["status"] == "failed" and NAMES[-1] in manifest["error"]
    assert store.stored_chunks(out) == {0} and not (out / store.METRICS).exists()
    code, _, err = ovt(capsys, *finetune_args(root, *files, out, lrs=(1e-3,), which=("--revisions", NAMES[0])))
    assert code == 0 and "replacing the failed run" in err, err
    assert store.read_manifest(out)["status"] == "complete"
    assert set(pd.read_parquet(out / store.METRICS).checkpoint) == {NAMES[0], "inflection"}


def test_a_built_in_corpus_is_the_text_file_of_its_training_split(tokenizer, tmp_path):
    """``corpus:python`` reads as a text file holding the same text would, and hashes as that file
    does (so a run made from the file resumes from the name)."""
    text = corpus_text("corpus:python")
    assert 0.9 * CORPUS_CHARS <= len(text) <= CORPUS_CHARS and "def " in text
    path = tmp_path / "python_train.txt"
    path.write_text(text)
    named, stored = load_examples("corpus:python", "text", tokenizer, 32), load_examples(path, "text", tokenizer, 32)
    assert torch.equal(named.input_ids, stored.input_ids) and len(named) > 1000
    assert _sha256("corpus:python") == hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match="corpus='nope' is unknown"):
        load_examples("corpus:nope", "text", tokenizer, 32)


def test_replay_mixes_pretraining_text_into_every_run_and_is_recorded(capsys, tmp_path, folder_series, files, run):
    """replay r: every fine-tuning row carries r, the manifest the replayed text's hash and size; the
    runs differ from the run without replay (same batch orders), the base rows do not."""
    out, replayed = tmp_path / "replay", tmp_path / "pretraining.txt"
    replayed.write_text("\n".join(tiny_corpus(80, seed=21)))
    argv = finetune_args(folder_series[0], *files, out, "--replay", "0.3", "--replay-data", replayed)
    code, _, err = ovt(capsys, *argv)
    assert code == 0, err
    table, plain = pd.read_parquet(out / store.METRICS), pd.read_parquet(run / store.METRICS)
    tuned = table[table.modification == "finetune"]
    assert set(tuned.replay) == {0.3} and "replay" not in plain

    manifest = store.read_manifest(out)
    assert manifest["replay"]["sha256"] == fingerprint.sha256(replayed) and manifest["replay"]["n_examples"] > 10
    assert manifest["finetune"]["replay"] == 0.3
    # A run without replay keeps the identity of one written before replay existed: it resumes.
    assert "replay_sha256" not in store.read_manifest(run)["config"] and "replay_sha256" in manifest["config"]

    def values(t, modification):
        rows = t[(t.modification == modification) & (t.metric == "perplexity") & (t.lr_policy != "tuned")]
        return rows.sort_values(["checkpoint", "lr"]).value.to_numpy()

    np.testing.assert_array_equal(values(table, "none"), values(plain, "none"))
    assert (values(table, "finetune") != values(plain, "finetune")).all()
