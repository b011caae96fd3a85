"""``ovt advise``: the probes as runs under --out, the table, advice.json, the store and its figure, the
budget, resume after a kill, offline hub suites, and the reference mode on the committed study."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import advice as adv
from analysis.advice_series import transfer_fits
from experiments import advise
from experiments.llm.kinds.perturb import Perturb
from rundir import store
from tests.experiments.conftest import ovt
from tests.llm_validation.conftest import tiny_corpus
from tests.llm_validation.test_suites import OLMO2, PYTHIA, REVISIONS, SMOLLM2, suite_cache, suite_hub  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_torch_thread", "empty_offline_cache")

STUDY = Path(__file__).resolve().parents[2] / "paper_figures" / "reference" / "study"
REFERENCE = f"{STUDY / 'perturb'},{STUDY / 'finetune' / 'shakespeare'}"
SMALL = ("--seq-len", 32, "--batch-size", 4, "--max-blocks", 4, "--threads", 1, "--quiet")


@pytest.fixture(scope="module")
def reference():
    """The committed study's series and their first fine-tuning (lr, steps): whichever study is committed."""
    series, _ = advise.study_series([STUDY / "perturb", STUDY / "finetune" / "shakespeare"], (1.0,), 2)
    return series, min(key for s in series for key in s.post)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """(eval text, fine-tuning text): pseudo-English lines of two seeds."""
    folder = tmp_path_factory.mktemp("advise_data")
    (folder / "eval.txt").write_text("\n".join(tiny_corpus(60, seed=9)))
    (folder / "train.txt").write_text("\n".join(tiny_corpus(120, seed=3)))
    return folder / "eval.txt", folder / "train.txt"


def advise_args(model, files, out, *extra, probe=True):
    eval_text, data = files
    how = ("--data", data, "--format", "text", "--probe-steps", 2) if probe else ("--reference", REFERENCE)
    return ("advise", "--model", model, "--eval-text", eval_text, "--out", out, *how, *SMALL, *extra)


@pytest.fixture(scope="module")
def advised(tmp_path_factory, folder_series, files):
    """One advice on the three-checkpoint folder series with a fine-tuning probe; read-only."""
    from experiments import cli

    out = tmp_path_factory.mktemp("advise") / "run"
    argv = advise_args(folder_series[0], files, out, "--lr", 1e-3, "--steps", 20)
    assert cli.main([str(a) for a in argv]) == 0
    return out


def payload(out: Path) -> dict:
    found = json.loads((out / "advice.json").read_text())
    found.pop("created")
    return found


def test_the_advice_writes_its_json_store_figure_and_the_probe_runs(advised, folder_series):
    names = sorted(folder_series[1])
    found = payload(advised)
    assert [r["checkpoint"] for r in found["checkpoints"]] == names
    assert found["advice"]["checkpoint"] in found["advice"]["short_list"]
    assert sum(r["advised"] for r in found["checkpoints"]) == 1
    calibration = found["calibration"]
    assert calibration["mode"] == "probe" and len(calibration["probe_points"]) == 3 * 2  # 3 checkpoints, lr and 2 lr
    assert {p["lr"] for p in calibration["probe_points"]} == {1e-3, 2e-3}
    cost = found["probes"]
    assert cost["finetune_every_checkpoint_tokens"] == 3 * 20 * 4 * 32
    assert cost["fraction"] == pytest.approx(cost["probe_tokens"] / cost["finetune_every_checkpoint_tokens"])
    for sub in ("perturb", "finetune"):
        assert store.read_manifest(advised / "probes" / sub)["status"] == "complete"
    tuned = store.read_manifest(advised / "probes" / "finetune")["config"]
    assert tuned["lrs"] == [1e-3, 2e-3] and tuned["steps"] == 2 and tuned["revisions"] == names
    manifest = store.read_manifest(advised)
    assert manifest["status"] == "complete" and manifest["advice"] == found["advice"]
    rows = store.load(advised)
    chosen = rows[(rows.metric == "advised") & (rows.value == 1.0)]
    assert chosen.checkpoint.tolist() == [found["advice"]["checkpoint"]]
    assert (advised / "advice.png").is_file() and (advised / "advice.pdf").is_file()


def test_the_predictions_are_analysis_advice_of_the_stored_probes(advised):
    found = payload(advised)
    probes = adv.probes_of(store.load(advised / "probes" / "perturb"), (1.0,), 2)
    forgetting, task, _ = adv.probe_fits(probes, store.load(advised / "probes" / "finetune"))
    result = adv.advise(probes, forgetting, math.log(1e-3 * 20), task, seed=0)
    assert [r["predicted_loss"] for r in found["checkpoints"]] == pytest.approx(result.loss.tolist(), abs=0)
    assert found["advice"]["checkpoint"] == probes.names[result.choice]
    np.testing.assert_allclose(probes.base, [r["base_loss"] for r in found["checkpoints"]])


def test_the_table_and_the_advice_line_are_printed(capsys, tmp_path, advised, folder_series, files):
    argv = [a for a in advise_args(folder_series[0], files, advised, "--lr", 1e-3, "--steps", 20) if a != "--quiet"]
    code, out, err = ovt(capsys, *argv)  # a complete advice: the same command refits and prints
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["checkpoint", "tokens", "base"]
    assert [line.split()[0] for line in lines[1:4]] == sorted(folder_series[1])
    assert lines[4].startswith(f"advice: fine-tune {payload(advised)['advice']['checkpoint']} (predicted ")
    assert lines[5].startswith("probes: ") and lines[-1] == f"-> {advised / 'advice.json'}"


def test_a_killed_advice_resumes_to_the_same_answer(capsys, tmp_path, monkeypatch, advised, folder_series, files):
    out = tmp_path / "killed"
    argv = advise_args(folder_series[0], files, out, "--lr", 1e-3, "--steps", 20)
    measured, original = [], Perturb.measure

    def measure(self, plan, index, revision, progress):
        if index == 1 and "killed" not in measured:
            measured.append("killed")
            raise KeyboardInterrupt  # what SIGTERM raises in ``ovt`` (cli.Terminated)
        measured.append(revision.name)
        return original(self, plan, index, revision, progress)

    monkeypatch.setattr(Perturb, "measure", measure)
    code, _, err = ovt(capsys, *argv)
    assert code == 130 and err.strip().endswith("rerun the same command to resume")
    assert store.read_manifest(out)["status"] == "interrupted" and not (out / "advice.json").exists()
    assert store.stored_chunks(out / "probes" / "perturb") == {0}
    measured[:] = ["killed"]
    code, _, err = ovt(capsys, *argv)
    assert code == 0, err
    assert measured[1:] == sorted(folder_series[1])[1:]  # the stored checkpoint is not measured again
    assert payload(out) == payload(advised) | {"model": payload(out)["model"]}
    assert store.read_manifest(out)["resumed"]


def test_the_probe_budget_sizes_the_probes_within_it(tmp_path, folder_series, files):
    eval_text, data = files
    cfg = advise.AdviseRun(
        model=str(folder_series[0]), eval_text=str(eval_text), data=str(data), format="text", lr=1e-3,
        steps=400, seq_len=32, batch_size=4, probe_budget=0.1, probe_checkpoints=2,
    )  # fmt: skip
    planned = advise.plan(cfg, tmp_path / "out", quiet=True)
    assert planned.cost["fraction"] <= 0.1 and planned.cost["eval_blocks"] >= advise.MIN_BLOCKS
    assert 1 <= planned.finetune.cfg.steps <= 400 and len(planned.finetune.revisions) == 2
    assert planned.perturb.blocks.shape[0] == planned.cost["eval_blocks"]
    assert not (tmp_path / "out").exists()  # planning writes nothing


def test_figures_draw_the_advice_and_its_probes(capsys, tmp_path, advised):
    code, out, err = ovt(capsys, "figures", "--results", advised, "--out", tmp_path / "figures")
    assert code == 0, err
    drawn = {Path(p).stem for p in out.split()}
    assert {"advise", "llm_perturb", "llm_finetune"} <= drawn


@pytest.mark.parametrize("repo, probe", [(PYTHIA, True), (SMOLLM2, False), (OLMO2, False)])
def test_hub_suites_are_advised_offline(capsys, tmp_path, suite_cache, files, reference, repo, probe):
    """Tiny random models of each suite's real class under its real repo id and revision names."""
    series, (lr, steps) = reference
    revisions = [r for r in REVISIONS[repo] if "ingredient" not in r and r != "step0"]  # OLMo-2: the stage-1 curve
    lr_steps = ("--lr", 1e-3, "--steps", 20) if probe else ("--lr", lr, "--steps", int(steps))
    argv = advise_args(repo, files, tmp_path / "out", "--revisions", ",".join(revisions), *lr_steps, probe=probe)
    code, _, err = ovt(capsys, *argv)
    assert code == 0, err
    found = payload(tmp_path / "out")
    assert [r["checkpoint"] for r in found["checkpoints"]] == revisions and found["model"] == repo
    assert found["calibration"]["mode"] == ("probe" if probe else "reference")
    if not probe:  # every series of the committed study fine-tuned at (lr, steps)
        assert found["calibration"]["reference_series"] == [s.name for s in series if (lr, steps) in s.post]


def test_a_checkpoint_at_0_tokens_or_a_single_one_is_refused(capsys, tmp_path, suite_cache, files):
    for revisions in ("step0,step512", "step512"):
        out = tmp_path / revisions
        argv = advise_args(PYTHIA, files, out, "--revisions", revisions, "--lr", 0.01, "--steps", 100)
        code, _, err = ovt(capsys, *argv)
        assert code == 2 and err.count("\n") == 1
        assert f"two or more checkpoints past 0 tokens; chosen: {revisions.replace(',', ', ')}" in err
        assert not out.exists()


def test_a_reference_without_the_planned_fine_tuning_is_refused(capsys, tmp_path, folder_series, files, reference):
    _, (lr, steps) = reference
    out = tmp_path / "out"
    argv = advise_args(folder_series[0], files, out, "--lr", lr / 2, "--steps", int(steps), probe=False)
    code, _, err = ovt(capsys, *argv)
    assert code == 2 and err.count("\n") == 1
    assert f"holds no series fine-tuned at lr={lr / 2:g} and steps={int(steps)}; it holds: lr={lr:g} steps=" in err
    assert not out.exists()


def test_a_reference_advice_uses_the_other_series_fit(capsys, tmp_path, folder_series, files, reference):
    series, (lr, steps) = reference
    argv = advise_args(folder_series[0], files, tmp_path / "out", "--lr", lr, "--steps", int(steps), probe=False)
    code, _, err = ovt(capsys, *argv)
    assert code == 0, err
    found = payload(tmp_path / "out")
    forgetting, _ = transfer_fits([s for s in series if (lr, steps) in s.post], (lr, steps))
    assert found["calibration"]["forgetting"]["coefficients"] == dict(zip(forgetting.names, forgetting.coef.tolist()))
    assert found["calibration"]["probe_points"] is None and not (tmp_path / "out" / "probes" / "finetune").exists()
    assert pd.read_parquet(tmp_path / "out" / store.METRICS).metric.eq("probe_excess").sum() == 0
