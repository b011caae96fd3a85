"""``ovt llm multimodal``: the store it writes (the library's numbers), a hub suite, resume after
SIGKILL, positions, presets, and Python arguments refused like flags."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys

import pandas as pd
import pytest

from experiments import cli
from experiments.llm import presets as llm_presets
from experiments.llm.batch import run_config
from experiments.llm.config_multimodal import MultimodalRun
from experiments.llm.kinds import multimodal as llm_multimodal
from llm_validation import multimodal as mm
from llm_validation.evaluate import load_token_blocks, perplexity
from llm_validation.finetune import FinetuneConfig
from llm_validation.models import build_model, olmo_config
from rundir import store
from rundir.lifecycle import UsageError
from tests.experiments.conftest import ovt
from tests.experiments.test_llm_perturb_cli import eval_text as eval_text  # noqa: F401 (a fixture)
from tests.experiments.test_llm_perturb_cli import loads as loads  # noqa: F401 (a fixture)
from tests.experiments.test_llm_workers import _kill_when, _ovt_process, same_tables
from tests.llm_validation.conftest import HUB_REPO, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread", "empty_offline_cache")
NAMES = ["step10-tokens1K", "step20-tokens2K", "step40-tokens5K"]
COLUMNS = ["stage", "lr_policy", "diverged", "steps_done", "step", "t_star_kind"]


def multimodal_args(model, text, out, *extra, lrs="1e-3,1e-2", steps=8, stage1=6):
    return ("llm", "multimodal", "--model", model, "--eval-text", text, "--out", out, "--lrs", lrs,
            "--steps", steps, "--warmup-steps", 2, "--stage1-steps", stage1, "--stage1-lr", 3e-3,
            "--image-tokens", 2, "--vision-dim", 8, "--scenes", 64, "--heldout-scenes", 16, "--seed", 3,
            "--seq-len", 32, "--max-blocks", 4, "--batch-size", 4, "--threads", 1, "--quiet", *extra)  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory, folder_series, eval_text):  # noqa: F811
    """Two lrs on the three-checkpoint series, run once; treat as read-only."""
    out = tmp_path_factory.mktemp("multimodal") / "run"
    assert cli.main([str(a) for a in multimodal_args(folder_series[0], eval_text, out, "--workers", 1)]) == 0
    return out


def test_rows_are_the_checkpoints_own_then_each_stage_the_librarys(run, folder_series, eval_text, tokenizer):  # noqa: F811
    table = pd.read_parquet(run / store.METRICS)
    assert list(table.columns) == [*store.REQUIRED_COLUMNS, *COLUMNS]
    # Per checkpoint: 2 base rows, stage 1's 3 metrics + 6 step losses, each lr's 3 + 8; one T* per lr.
    assert len(table) == 3 * (2 + (3 + 6) + 2 * (3 + 8)) + 2
    rows = table[table.checkpoint != "inflection"]
    assert list(dict.fromkeys(rows.checkpoint)) == NAMES and set(rows.seed) == {3} and not rows.diverged.any()
    base = rows[rows.modification == "none"]
    assert set(base.metric) == {"perplexity", "caption_loss"} and base[["lr", "steps"]].isna().all().all()
    assert set(base.stage) == {""} and set(rows.stage) == {"", "projector", "joint"}
    first = rows[rows.stage == "projector"]
    assert set(first.lr) == {3e-3} and set(first.steps) == {6.0} and set(first.steps_done) == {6.0}
    second = rows[rows.stage == "joint"]
    assert set(second.lr) == {1e-3, 1e-2} and set(second.steps) == {8.0} and set(second.steps_done) == {8.0}
    assert set(rows[rows.modification == "multimodal"].lr_policy) == {"fixed"} and set(base.lr_policy) == {""}
    assert rows.step.notna().eq(rows.metric == "step_loss").all()
    value = rows.set_index(["checkpoint", "stage", "lr", "metric"]).value
    for name in NAMES:
        # Stage 1 leaves the model itself alone: the same perplexity, to the last bit.
        assert value[(name, "projector", 3e-3, "perplexity")] == value[(name, "", math.nan, "perplexity")]
        before, aligned = (value[(name, s, lr, "caption_loss")] for s, lr in (("", math.nan), ("projector", 3e-3)))
        assert value[(name, "joint", 1e-2, "caption_loss")] < aligned < before  # it falls in each stage
    # The first checkpoint's rows are the library's numbers.
    from llm_validation.checkpoints import load_checkpoint

    model, tokenizer = load_checkpoint(folder_series[0], NAMES[0])
    blocks = load_token_blocks(eval_text, tokenizer, 32, 4)
    task = mm.caption_task(tokenizer, 64, 16, 2, 8, 0)
    assert value[(NAMES[0], "", math.nan, "perplexity")] == perplexity(model, blocks, 16).perplexity
    assert value[(NAMES[0], "", math.nan, "caption_loss")] == mm.caption_loss(model, task, 0, 16)
    stage1 = FinetuneConfig(lr=3e-3, steps=6, batch_size=4, warmup_steps=2, seed=3)
    stage2 = FinetuneConfig(lr=1e-3, steps=8, batch_size=4, warmup_steps=2, seed=3)
    aligned, [point] = mm.two_stage_grid(model, task, blocks, stage1, stage2, [1e-2], 0)
    assert value[(NAMES[0], "projector", 3e-3, "caption_loss")] == aligned.caption_loss
    got = rows[(rows.checkpoint == NAMES[0]) & (rows.stage == "joint") & (rows.lr == 1e-2)].set_index("metric")
    assert (got.value["perplexity"], got.value["caption_loss"]) == (point.perplexity, point.caption_loss)
    assert tuple(got[got.index == "step_loss"].sort_values("step").value) == point.losses

    infl = table[table.checkpoint == "inflection"]
    assert sorted(infl.lr) == [1e-3, 1e-2] and set(infl.stage) == {"joint"} and set(infl.modification) == {"multimodal"}
    assert set(infl.metric) == {"inflection"} and infl.t_star_kind.ne("").all() and set(infl.seed) == {3}

    manifest = store.read_manifest(run)
    assert manifest["status"] == "complete" and manifest["command"] == "llm multimodal"
    record = manifest["multimodal"]
    assert record["n_train"] == 64 and record["n_heldout"] == 16 and record["image_tokens"] == 2
    assert record["examples"][0] == mm.caption(mm.draw_scenes(1, 0, "train")[0])
    assert record["caption_tokens"] == task.caption_tokens and record["tokenizer"] == f"the tokenizer of {NAMES[0]}"
    assert manifest["stage1"]["lr"] == 3e-3 and manifest["stage2"]["steps"] == 8 and manifest["stage2"]["lr"] is None
    assert len(manifest["config"]["captions_sha256"]) == 64 and manifest["revisions"][0]["diverged_runs"] == []


def test_two_workers_write_the_table_of_one(capsys, tmp_path, run, folder_series, eval_text):  # noqa: F811
    code, _, err = ovt(capsys, *multimodal_args(folder_series[0], eval_text, tmp_path / "two", "--workers", 2))
    assert code == 0, err
    same_tables(run, tmp_path / "two")


def test_a_hub_suite_from_the_offline_cache_gives_the_folders_numbers(
    capsys, tmp_path, folder_series, eval_text, hub_cache
):  # noqa: F811, E501
    revisions = ("--revisions", "step10-tokens1K,step40-tokens5K", "--repeats", 2)
    tables = {}
    for name, model in (("hub", hub_cache), ("folder", folder_series[0])):
        code, _, err = ovt(capsys, *multimodal_args(model, eval_text, tmp_path / name, *revisions, lrs="1e-2"))
        assert code == 0, err
        tables[name] = pd.read_parquet(tmp_path / name / store.METRICS).drop(columns="setup")
    pd.testing.assert_frame_equal(tables["hub"], tables["folder"], check_exact=True)
    manifest = store.read_manifest(tmp_path / "hub")
    assert manifest["setup"] == HUB_REPO and manifest["model_kind"] == "hub"
    assert manifest["revisions"][1]["commit"] == hashlib.sha1(b"step40-tokens5K").hexdigest()
    # Two batch orders, the same at both checkpoints: stage 1 differs between them, T* is of their mean.
    table = tables["hub"]
    first = (
        table[(table.stage == "projector") & (table.metric == "caption_loss")].set_index(["checkpoint", "seed"]).value
    )
    assert sorted(first.index) == [(n, s) for n in ("step10-tokens1K", "step40-tokens5K") for s in (3, 4)]
    assert first[("step10-tokens1K", 3)] != first[("step10-tokens1K", 4)]
    assert table[table.checkpoint == "inflection"].seed.tolist() == [-1]


def test_a_killed_multimodal_run_resumes_to_the_uninterrupted_table(capsys, tmp_path, folder_series, eval_text, loads):  # noqa: F811
    args = lambda out: multimodal_args(folder_series[0], eval_text, out, "--workers", 1, steps=16, stage1=16)  # noqa: E731
    killed = tmp_path / "killed"
    proc = _ovt_process(*args(killed))
    _kill_when(proc, lambda: len(store.stored_chunks(killed)) >= 1)
    stored = store.stored_chunks(killed)
    assert not (killed / store.METRICS).exists() and len(stored) < 3
    assert store.read_manifest(killed)["status"] == "running"  # SIGKILL: no chance to say more
    code, _, err = ovt(capsys, *args(killed))
    assert code == 0, err
    assert len(loads) == 3 - len(stored)  # only the checkpoints not stored ran again
    code, _, err = ovt(capsys, *args(tmp_path / "whole"))
    assert code == 0, err
    same_tables(killed, tmp_path / "whole")
    assert store.read_manifest(killed)["resumed"]


def test_image_tokens_and_captions_must_fit_the_positions(capsys, tmp_path, tokenizer, eval_text):  # noqa: F811
    series = tmp_path / "short"
    model = build_model(olmo_config("tiny", vocab_size=len(tokenizer), max_position_embeddings=64))
    save_checkpoint(series / "step10-tokens1K", model, tokenizer, 10, 1000)
    length = mm.caption_task(tokenizer, 64, 16, 1, 8, 0).caption_tokens
    capsys.readouterr()  # what saving the checkpoint printed
    code, _, err = ovt(capsys, *multimodal_args(series, eval_text, tmp_path / "out", "--image-tokens", 64 - length + 1))
    assert code == 2 and err.count("\n") == 1 and not (tmp_path / "out").exists()
    assert (
        f"need 65 positions; step10-tokens1K has 64 (max_position_embeddings); allowed: image_tokens <= {64 - length}"
        in err
    )
    code, _, err = ovt(capsys, *multimodal_args(series, eval_text, tmp_path / "out", "--image-tokens", 64 - length))
    assert code == 0, err


@pytest.mark.parametrize(
    "changes, needle",
    [
        (dict(lrs=(0.0,)), "lrs=0.0 must be > 0"),
        (dict(lrs=1e-3), "lrs=0.001 is not allowed; give (0.001,)"),
        (dict(steps=0), "steps=0 must be >= 1"),
        (dict(stage1_steps=-1), "stage1_steps=-1 must be >= 0"),
        (dict(image_tokens=0), "image_tokens=0 must be >= 1 and <= 64"),
        (dict(image_tokens=2.0), "image_tokens='2.0' is not an integer"),
        (dict(vision_dim=True), "vision_dim='True' is not an integer"),
        (dict(stage1_lr=math.inf), "stage1_lr='inf' must be a finite number"),
        (dict(warmup_steps=500), "warmup_steps=500 exceeds steps=400; allowed: 0..steps"),
        (dict(scenes=100_000, heldout_scenes=100_000, vision_dim=4096), "allowed: <= 100,000,000"),
    ],
)
def test_python_arguments_are_refused_as_flags_are_and_nothing_is_written(
    tmp_path, folder_series, eval_text, changes, needle
):  # noqa: F811, E501
    cfg = MultimodalRun(model=str(folder_series[0]), eval_text=str(eval_text), seq_len=32, max_blocks=2, **changes)
    with pytest.raises(UsageError) as refused:
        run_config(cfg, tmp_path / "out", quiet=True, workers=1)
    assert needle in str(refused.value) and "\n" not in str(refused.value)
    assert not (tmp_path / "out").exists()


def test_the_presets_read_the_validation_series_in_the_studys_regime(capsys):
    cfg = llm_presets.get("multimodal", "validation")
    assert (cfg.lrs, cfg.steps, cfg.warmup_steps) == ((1e-4, 3e-4, 1e-3, 3e-3), 400, 40)  # the defaults
    assert max(cfg.lrs) <= 1e-2 and cfg.model == "results/llm/series"
    quick, finetune = (llm_presets.get(kind, "validation", quick=True) for kind in ("multimodal", "finetune"))
    shared = ("model", "eval_text", "seq_len", "max_blocks", "batch_size")
    assert [getattr(quick, f) for f in shared] == [getattr(finetune, f) for f in shared]
    assert llm_presets.default_out("multimodal", "validation").as_posix() == "results/llm/multimodal"
    assert cli.main(["llm", "multimodal", "--list"]) == 0
    assert "validation" in capsys.readouterr().out


def test_the_summary_lists_each_stage_then_each_lrs_t_star():
    rows = [
        dict(setup="x", checkpoint=c, pretrain_time=t, modification=m, stage=s, lr=lr, seed=0, metric=k,
             value=base + d, lr_policy="fixed" if s else "")
        for c, t, base in (("a", 1e3, 10.0), ("b", 2e3, 8.0), ("c", 4e3, 9.0))
        for m, s, lr, d in (("none", "", math.nan, 0.0), ("multimodal", "projector", 3e-3, 0.0),
                            ("multimodal", "joint", 1e-3, 1.0), ("multimodal", "joint", 1e-2, 3.0))
        for k in ("perplexity", "caption_loss")
    ]  # fmt: skip
    table = pd.DataFrame(rows)
    table = pd.concat([table, llm_multimodal.KIND.derive(table)], ignore_index=True)
    lines = llm_multimodal.summary(table).splitlines()
    assert lines[0].split()[:5] == ["tokens", "ppl", "before", "ppl", "stage"]
    assert lines[2].split() == ["a", "1K", "10", "10", "11", "13", "10", "10", "11", "13"]
    assert lines[-1].startswith("inflection T* (tokens) - lr=0.001: ") and ", lr=0.01: " in lines[-1]
    t_star = table[table.checkpoint == "inflection"].set_index("lr").value
    assert 1e3 < t_star[1e-3] < 4e3 and 1e3 < t_star[1e-2] < 4e3  # the minimum at 2K: an interior T*


def test_numbers_are_refused_before_torch_is_imported(tmp_path, folder_series, eval_text):  # noqa: F811
    common = ["llm", "multimodal", "--model", str(folder_series[0]), "--eval-text", str(eval_text)]
    cases = [
        [*common, "--image-tokens", "0", "--out", str(tmp_path / "out")],
        [*common, "stage1_steps=-1", "--out", str(tmp_path / "out")],
        [*common, "warmup_steps=500", "--out", str(tmp_path / "out")],
        [*common, "scenes=100000", "heldout_scenes=100000", "vision_dim=4096", "--out", str(tmp_path / "out")],
    ]
    script = (
        "import sys, json\nfrom experiments import cli\n"
        f"codes = [cli.main(argv) for argv in {cases!r}]\n"
        "print(json.dumps([codes, sorted({'torch', 'transformers'} & set(sys.modules))]))"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    codes, heavy = json.loads(done.stdout.splitlines()[-1])
    assert codes == [2] * len(cases) and heavy == [], done.stderr
    assert len(done.stderr.splitlines()) == len(cases) and not (tmp_path / "out").exists()
