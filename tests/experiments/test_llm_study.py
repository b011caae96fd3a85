"""``ovt llm study``: the whole protocol from one command at tiny size, its prediction step blind to the
sizes it predicts, and its files."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from experiments.llm import study as llm_study
from experiments.llm import study_claims
from experiments.llm import study_report as llm_study_report
from experiments.llm.study import Study
from rundir import store
from tests.experiments.conftest import ovt, run_study

pytestmark = pytest.mark.usefixtures("one_torch_thread", "empty_offline_cache")

# 4 x 32 = 128 tokens a step: 8 ... 64 steps of the tiny model on the synthetic language.
TINY = Study(
    sizes=(("tiny", (1024, 2048, 4096, 8192)),),
    seeds=(0, 1),
    corpus="synthetic",
    max_train_chars=60_000,
    seq_len=32,
    batch_size=4,
    lr=3e-3,
    eval_chars=12_000,
    eval_blocks=24,
    gammas=(0.5, 1.0, 2.0, 4.0),
    draws=2,
    finetune_data=("corpus:shakespeare",),
    lrs=(1e-3, 3e-3, 1e-2),
    steps=4,
    warmup_steps=1,
    finetune_repeats=2,
    finetune_batch=4,
    regs=(1.0,),
    reg_lr=3e-3,
    curvature_gammas=(0.5,),
    probes=4,
    iterations=3,
    curvature_blocks=4,
    quant_bits=(8, 3),
    trunk_seeds=(("tiny", (0, 1)),),
    trunk_budgets=3,  # the trunk saved at the 3 smallest budgets (it runs to the last branch's start anyway)
    trunk_gammas=(1.0,),
    trunk_lrs=(3e-3,),
    multimodal_lrs=(1e-3, 1e-2),
    multimodal_seeds=(("tiny", (0, 1)),),
)
TRUNK_STAGES = ("trunk/perturb", "trunk/finetune/shakespeare", "trunk/quantize")
# One series at three budgets with the core stages only (perturbation, fine-tuning, curvature) on the
# smallest grids: for the tests of how a study stops and goes on, which compare those stages' tables.
ONE_SERIES = dataclasses.replace(
    TINY,
    seeds=(0,),
    sizes=(("tiny", (1024, 2048, 4096)),),
    gammas=(1.0,),
    lrs=(3e-3,),
    finetune_repeats=1,
    regs=(),
    quant_bits=(),
    trunk_seeds=(),
    trunk_gammas=(),
    trunk_lrs=(),
    multimodal_lrs=(),
    multimodal_seeds=(),
)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The tiny study run once through the command line; treat as read-only."""
    out = tmp_path_factory.mktemp("study") / "tiny"
    run_study("tiny-test", TINY, out)
    return out


def test_the_study_writes_every_run_then_predictions_claims_and_figure(study):
    record = json.loads((study / llm_study.STUDY_FILE).read_text())
    assert record["status"] == "complete" and set(record["stages"]) == {"pre-training", "measurements", "analysis"}
    stages = ("series", "perturb", "finetune/shakespeare", "finetune-reg/reg=1", "curvature", "quantize", "multimodal")
    for stage in stages + TRUNK_STAGES:
        for seed in (0, 1):
            assert store.read_manifest(study / stage / f"tiny_seed={seed}")["status"] == "complete", stage
    claims = json.loads((study / "claims.json").read_text())["claims"]
    gammas = [f"h:gamma={g:g}" for g in TINY.gammas]
    kinds = ("gaussian", "finetune", "quantization")
    anneal = [f"{c}{':' + k if k else ''}" for c in "ij" for k in ("", *kinds)]
    assert [c["claim"] for c in claims] == ["a", "a'", *"bcdefgh", *gammas, *anneal, "m", "m'", "q", "q'"]
    finetune = pd.read_parquet(study / "finetune/shakespeare/tiny_seed=0" / store.METRICS)
    measured = finetune[(finetune.modification == "finetune") & (finetune.checkpoint != "inflection")]
    assert set(measured.seed) == {0, 1}  # two batch orders
    assert all(c["verdict"] in ("PASS", "FAIL", "INCONCLUSIVE") and c["rule"] for c in claims)
    assert all(c["n_series"] in (0, 2) for c in claims)  # two series: intervals over series
    text = (study / "claims.md").read_text()
    assert "| claim | statement |" in text and "predicted T*" in text
    assert (study / "figures" / "study.png").stat().st_size > 10_000
    assert (study / "figures" / "study_anneal.png").stat().st_size > 10_000
    # No file of the study names the machine: every path is relative to the file's run directory.
    named = [p for p in study.rglob("*.json") if str(study.parent) in p.read_text()]
    assert not named, named


def test_a_study_without_curvature_runs_leaves_h_without_data_and_every_other_claim_as_it_was(study, tmp_path):
    """The ``extension`` preset measures no curvature: its analysis reads no curvature folder, (h) says
    so, the other claims are those of the same tables with it, and the figure's curvature panel is empty."""
    copy = tmp_path / "tiny"
    shutil.copytree(study, copy, ignore=lambda folder, names: ["curvature"] if Path(folder) == study else [])
    llm_study_report.write(dataclasses.replace(TINY, curvature_gammas=()), "tiny-test", copy)
    claims = {c["claim"]: c for c in json.loads((copy / "claims.json").read_text())["claims"]}
    with_it = {c["claim"]: c for c in json.loads((study / "claims.json").read_text())["claims"]}
    assert claims["h"]["verdict"] == "INCONCLUSIVE" and "no" in claims["h"]["rule"]
    kept = [k for k in with_it if not k.startswith("h")]
    assert [(claims[k]["verdict"], claims[k].get("value")) for k in kept] == [
        (with_it[k]["verdict"], with_it[k].get("value")) for k in kept
    ]
    assert (copy / "figures" / "study.png").stat().st_size > 10_000


def test_the_series_repeat_no_token_more_than_max_epochs(study):
    for seed in (0, 1):
        series = study / "series" / f"tiny_seed={seed}"
        epochs = [json.loads(p.read_text())["epochs"] for p in series.glob("*/checkpoint.json")]
        assert len(epochs) == 4 + 3 and max(epochs) <= TINY.max_epochs  # annealed and trunk checkpoints


def test_the_trunk_is_measured_at_the_tokens_of_the_annealed_checkpoints_and_paired_with_them(study):
    """Every modification runs on the un-annealed trunk's checkpoints (lr at its peak), at the same
    token counts as the annealed ones; claim j pairs the two at each of them."""
    trunk = pd.read_parquet(study / "trunk/perturb/tiny_seed=0" / store.METRICS)
    annealed = pd.read_parquet(study / "perturb/tiny_seed=0" / store.METRICS)
    names = list(dict.fromkeys(trunk.checkpoint[trunk.checkpoint != "inflection"]))
    first = list(dict.fromkeys(annealed.checkpoint[annealed.checkpoint != "inflection"]))[:3]
    assert names == [f"trunk-{n}" for n in first]  # the 3 smallest budgets
    assert set(trunk.pretrain_time.dropna()) < set(annealed.pretrain_time.dropna())
    assert set(trunk.gamma.dropna()) == {1.0}
    records = [json.loads((study / "series/tiny_seed=0" / n / "checkpoint.json").read_text()) for n in names]
    assert {r["schedule"]["lr_at_step"] for r in records} == {TINY.lr}
    quantized = pd.read_parquet(study / "trunk/quantize/tiny_seed=1" / store.METRICS)
    assert set(quantized.bits.dropna()) == {8.0, 3.0}
    claims = {c["claim"]: c for c in json.loads((study / "claims.json").read_text())["claims"]}
    for kind in ("gaussian", "finetune", "quantization"):
        j = claims[f"j:{kind}"]
        assert j["n_series"] == 2 and len(j["checkpoints"]) == 3 and math.isfinite(j["value"]), kind


def test_predictions_are_made_on_the_fit_sizes_and_never_read_the_others(study):
    predictions = json.loads((study / "predictions.json").read_text())["sizes"]["tiny"]
    assert predictions["gaussian"]["fit"] == [2.0, 4.0] and predictions["gaussian"]["held_out"] == [0.5, 1.0]
    assert predictions["finetune"]["fit"] == [1e-3, 3e-3] and predictions["finetune"]["held_out"] == [1e-2]
    perturb = study_claims.load(study, "perturb", TINY, "tiny")
    rows = llm_study_report.fit_rows(perturb, "gaussian", [2.0, 4.0])
    assert set(rows.gamma.dropna()) == {2.0, 4.0} and set(rows.modification) == {"none", "gaussian"}
    assert predictions["gaussian"]["rows_read"] == len(rows)
    with pytest.raises(ValueError, match=r"gamma \[0.5, 1.0\] outside the fit sizes"):
        llm_study_report.predict(perturb, "tiny", "gaussian", [2.0, 4.0], [0.5, 1.0], 1.0)
    # The prediction is a function of the rows it is given: the held-out curves changed, it is the same.
    tampered = perturb.copy()
    tampered.loc[tampered.gamma.isin([0.5, 1.0]), "value"] *= 10
    again = llm_study_report.predict(
        llm_study_report.fit_rows(tampered, "gaussian", [2.0, 4.0]), "tiny", "gaussian", [2.0, 4.0], [0.5, 1.0], 1.0
    )
    assert again["predictions"] == predictions["gaussian"]["predictions"]


def test_a_rerun_resumes_and_ends_with_the_same_claims(study):
    before = (study / "claims.json").read_text()
    tables = {p: pd.read_parquet(p) for p in study.glob("perturb/*/metrics.parquet")}
    run_study("tiny-test", TINY, study)
    assert (study / "claims.json").read_text() == before
    for path, table in tables.items():
        pd.testing.assert_frame_equal(pd.read_parquet(path), table)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["llm", "study", "nope"], "study 'nope' is unknown; allowed: study, pilot, study-quick, pilot-anneal"),
        (["llm", "study"], "a study name is required"),
        (["llm", "study", "study", "--workers", "0"], "--workers 0 must be >= 1"),
    ],
)
def test_bad_study_input_exits_2(capsys, tmp_path, argv, message):
    code, _, err = ovt(capsys, *argv, "--out", tmp_path / "s")
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "s").exists()


def test_every_study_preset_meets_the_regime_it_claims():
    """The reference: >= 256x in tokens, >= 8,000 tokens per parameter at the larger size, sizes >= 4x
    apart, >= 6 series, <= 4 passes, >= 64K held-out tokens, >= 8 draws; fine-tuning at lrs at and
    below the pre-training peak with warmup, >= 2 batch orders; the quick one is smaller."""
    from llm_validation.models import build_model, count_parameters, olmo_config

    reference = llm_study.STUDIES["study"]
    params = {size: count_parameters(build_model(olmo_config(size))) for size, _ in reference.sizes}
    (large, large_budgets), (small, small_budgets) = reference.sizes
    assert params[large] >= 4 * params[small]
    assert large_budgets[-1] / params[large] >= 8000 and small_budgets[-1] / params[small] >= 8000
    assert all(b[-1] / b[0] >= 256 for _, b in reference.sizes)
    assert all(len(reference.seeds_of(size)) >= 6 for size, _ in reference.sizes)
    assert reference.max_epochs <= 4
    assert reference.eval_blocks * (reference.seq_len - 1) >= 64_000 and reference.draws >= 8
    assert max(reference.lrs) <= reference.lr and reference.reg_lr <= reference.lr and len(reference.lrs) >= 3
    assert reference.warmup_steps > 0 and reference.finetune_repeats >= 2
    quick = llm_study.STUDIES["study-quick"]
    assert dataclasses.replace(quick, sizes=reference.sizes) != reference


def test_the_extension_retrains_the_references_first_budgets_and_measures_every_modification_on_both():
    """The extension's series are the reference's (seeds, corpus, schedule) cut to its 5 smallest
    budgets, each with its trunk at every budget; the trunk and the annealed checkpoints get the same
    modifications (Gaussian at gamma 1, fine-tuning at 1e-3, 3 bit widths), and multimodal adaptation
    runs on every series."""
    reference, extension = llm_study.STUDIES["study"], llm_study.STUDIES["extension"]
    out = Path("study")
    first = {path: cfg for cfg, path in llm_study.pretrain_runs(reference, out)}
    series = llm_study.pretrain_runs(extension, out)
    assert len(series) == len(first) == 18
    for cfg, path in series:
        assert cfg == dataclasses.replace(first[path], budgets=first[path].budgets[:5], trunk_checkpoints=5)
    assert extension.trunk_gammas == extension.gammas == (1.0,) and extension.trunk_lrs == extension.lrs == (1e-3,)
    assert extension.quant_bits == (8, 4, 3) and len(extension.multimodal_lrs) == 2
    stages = [str(path.parent) for _, path in llm_study.measurement_runs(extension, out)]
    for stage in ("perturb", "finetune/shakespeare", "quantize"):
        assert stages.count(f"study/{stage}") == stages.count(f"study/trunk/{stage}") == 18
    assert stages.count("study/multimodal") == 18 and len(stages) == 7 * 18


def test_until_stops_after_a_stage_and_the_same_command_goes_on(capsys, tmp_path):
    """--until pre-training: the series alone, status stopped; without it, the rest follows."""
    llm_study.STUDIES["tiny-until"] = ONE_SERIES
    try:
        out = tmp_path / "until"
        code, printed, err = ovt(capsys, "llm", "study", "tiny-until", "--out", out, "--until", "pre-training")
        assert code == 0, err
        record = json.loads((out / llm_study.STUDY_FILE).read_text())
        assert record["status"] == "stopped" and set(record["stages"]) == {"pre-training"}
        assert (out / "series" / "tiny_seed=0").is_dir() and not (out / "perturb").exists()
        assert f"stopped after pre-training -> {out}" in printed
        code, _, err = ovt(capsys, "llm", "study", "tiny-until", "--out", out, "--until", "measurements", "--quiet")
        assert code == 0, err
        assert store.read_manifest(out / "perturb" / "tiny_seed=0")["status"] == "complete"
        assert not (out / "claims.json").exists()
    finally:
        llm_study.STUDIES.pop("tiny-until", None)


def _observed(kind="interior", t_star=4e6, interval=(2e6, 8e6)):
    entry = {"kind": kind, "t_star": t_star, "T_range": [1e6, 64e6]}
    return entry | ({"interval": list(interval)} if interval else {})


@pytest.mark.parametrize(
    "predicted, observed, verdict",
    [
        ((5e6, 3e6, 9e6), _observed(), "hit"),  # overlapping, observed 4x inside a 64x range
        ((5e6, 3e6, 9e6), _observed(interval=(0.5e6, 100e6)), "uninformative"),  # observed as wide as the range
        ((20e6, 10e6, 40e6), _observed(), "miss"),  # disjoint
        ((100e6, 40e6, 250e6), _observed("above", float("nan"), None), "beyond range"),  # 77% of the log-interval
        ((50e6, 10e6, 80e6), _observed("above", float("nan"), None), "uninformative"),  # 18% beyond
        ((20e6, 10e6, 40e6), _observed("above", float("nan"), None), "miss"),  # wholly inside: disjoint
        ((0.5e6, None, 2e6), _observed("below", float("nan"), None), "beyond range"),  # open below
        ((20e6, 10e6, 40e6), _observed("flat", float("nan"), None), "uninformative"),
    ],
)
def test_predictions_are_scored_on_both_intervals(predicted, observed, verdict):
    value, lo, hi = predicted
    scored = llm_study_report.score({"t_star": {"value": value, "interval": [lo, hi]}}, observed)
    assert scored["verdict"] == verdict
    if observed["kind"] == "interior":
        assert scored["log_error"] == pytest.approx(math.log(value / observed["t_star"]))


def test_prediction_counts_and_the_median_absolute_log_error():
    entries = [
        {"verdict": "hit", "log_error": 0.1},
        {"verdict": "miss", "log_error": -1.0},
        {"verdict": "beyond range", "log_error": None},
        {"verdict": "hit", "log_error": 0.3},
    ]
    counts = llm_study_report.score_counts({"20k": {"gaussian": entries[:2], "finetune": entries[2:]}})
    assert counts["20k"] == counts["all"]
    assert counts["all"] | {} == {
        "hit": 2,
        "miss": 1,
        "beyond range": 1,
        "uninformative": 0,
        "median_abs_log_error": pytest.approx(0.3),
        "n_errors": 3,
    }


def test_model_error_widens_the_prediction_interval_in_quadrature():
    t_star = {"value": 4e6, "interval": [2e6, 8e6]}
    wide = llm_study_report.widened(t_star, 0.5)
    half = math.sqrt(math.log(2) ** 2 + (1.959963984540054 * 0.5) ** 2)
    assert wide["interval"] == [pytest.approx(4e6 * math.exp(-half)), pytest.approx(4e6 * math.exp(half))]
    assert wide["sampling_interval"] == [2e6, 8e6] and llm_study_report.widened(t_star, None) == t_star


def test_a_pilot_measures_the_variance_components_and_plans_its_target(study, tmp_path):
    """The tiny study read as the pilot of itself: per lr the components of (d)'s fall and rise from
    the series x order cube, the flattening of the step losses, costs from the manifests, and the plan
    at the smallest lr; the target's study.json would carry it beside what it runs."""
    import numpy as np

    from analysis import power
    from experiments.llm import study_power as llm_study_power

    pilot = dataclasses.replace(TINY, pilot_for="tiny-test")
    record = llm_study_power.write(study, pilot, TINY)
    assert json.loads((study / llm_study_power.POWER_FILE).read_text()) == json.loads(json.dumps(record))
    table = study_claims.load(study, "finetune/shakespeare", TINY, "tiny")
    for lr in TINY.lrs:
        T, L = llm_study_power.cube(table, lr)
        assert L.shape == (2, 2, 4) and np.isfinite(L).all()
        assert record["measured"]["components"][f"tiny/lr={lr:g}"] == power.components(T, L)
        assert record["measured"]["flattening"][f"tiny/lr={lr:g}"]["steps"] == TINY.steps
    target = record["for"]
    assert target["lr"] == min(TINY.lrs) and set(target["variances"]) == {"tiny/fall", "tiny/rise"}
    assert target["plan"]["n"]["tiny"] >= 6 and target["plan"]["m"] >= 2
    assert target["costs_core_seconds"]["tiny"]["series"] > 0 and target["costs_core_seconds"]["tiny"]["order"] > 0
    assert target["preset"]["n"] == {"tiny": 2} and target["preset"]["m"] == 2
    used = {"n": {"tiny": 2}, "m": 2, "lrs": list(TINY.lrs), "warmup_steps": 1, "steps": 4}
    assert llm_study_power.used(TINY) == used
    assert "power at lr 0.001" in llm_study_power.summary(record)


@pytest.mark.parametrize(
    "error, status", [(OSError(28, "No space left on device"), "failed"), (KeyboardInterrupt(), "interrupted")]
)
def test_every_way_a_study_ends_leaves_its_status_true(capsys, tmp_path, monkeypatch, error, status):
    """A failure or an interrupt inside a study marks study.json (with the error), exits 1 or 130
    with one line, and the next call starts as running again."""

    def broken(*_):
        raise error

    monkeypatch.setattr(llm_study, "write_eval_text", broken)
    out = tmp_path / "broken"
    code, _, err = ovt(capsys, "llm", "study", "study-quick", "--out", out, "--quiet")
    assert code == (1 if status == "failed" else 130) and err.count("\n") == 1, err
    record = json.loads((out / llm_study.STUDY_FILE).read_text())
    assert record["status"] == status and "stopped" in record
    assert ("No space left on device" in record["error"]) if status == "failed" else "error" not in record


def test_the_study_summary_says_no_data_and_where_its_files_went(tmp_path):
    claims = [
        {
            "size": "20k",
            "claim": "a",
            "verdict": "PASS",
            "value": 1.0,
            "interval": None,
            "p_value": 1e-9,
            "at": "gamma=1",
            "rule": "...",
            "dataset": "",
        },
        {
            "size": "20k",
            "claim": "e",
            "verdict": "INCONCLUSIVE",
            "value": float("nan"),
            "interval": None,
            "at": "",
            "rule": "no data: fewer than two lrs with an interior pooled T*",
            "dataset": "corpus:shakespeare",
        },
    ]
    text = llm_study_report.summary({"study": "s", "claims": claims}, tmp_path)
    lines = text.splitlines()
    assert lines[1] == "  20k  (a) PASS         1 p = 1e-09 (gamma=1)"
    assert lines[2].endswith("no data: fewer than two lrs with an interior pooled T* corpus:shakespeare")
    assert "open" not in text.replace(str(tmp_path), "") and lines[-1].startswith(f"-> {tmp_path}: claims.md")


def test_a_study_ended_by_a_full_disk_sigterm_and_sigint_resumes_to_the_uninterrupted_tables(tmp_path):
    """A study ended three ways in turn: a full disk while pre-training (exit 1, one line naming the
    file, study.json and the series' manifest "failed"), SIGTERM in the perturbation stage (a
    scheduler's kill: 143) and SIGINT while fine-tuning (Ctrl-C: 130), each "interrupted" with the
    stage's time counted and the lock released; the same command then ends with the tables of a study
    never interrupted."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from tests.exits import ENDINGS, interrupt_when, small_disk, start

    root = Path(__file__).resolve().parents[2]
    code = (
        "import sys\n"
        "from experiments import cli\nfrom experiments.llm import study as llm_study\n"
        f"llm_study.STUDIES['tiny-term'] = llm_study.{ONE_SERIES!r}\n"
        "argv = ['llm', 'study', 'tiny-term', '--quiet', '--workers', '1', '--until', 'measurements']\n"
        "sys.exit(cli.main(argv + ['--out', sys.argv[1]]))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(root)}
    command = lambda out: [sys.executable, "-c", code, str(out)]  # noqa: E731
    with small_disk(tmp_path / "disk", kib=64) as disk:
        out = disk.path / "study"
        full = subprocess.run(command(out), env=env, cwd=root, capture_output=True, text=True)
        lines = full.stderr.strip().splitlines()
        assert full.returncode == 1 and len(lines) == 1 and "No space left on device" in lines[0], full.stderr
        assert str(out / "series" / "tiny_seed=0") in lines[0]
        record = json.loads((out / llm_study.STUDY_FILE).read_text())
        assert record["status"] == "failed" and "No space left on device" in record["error"]
        assert store.read_manifest(out / "series" / "tiny_seed=0")["status"] == "failed"
        assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # no temporary left behind
        disk.grow(16384)
        stages = {signal.SIGTERM: "perturb/*/chunks/*.parquet", signal.SIGINT: "finetune/*/*/chunks/*.parquet"}
        for sig, pattern in stages.items():
            proc = start(command(out), env=env, cwd=root, stderr=subprocess.PIPE, text=True)
            lines = interrupt_when(proc, lambda pattern=pattern: any(out.glob(pattern)), sig)
            assert lines == [ENDINGS[sig][1]], lines
            record = json.loads((out / llm_study.STUDY_FILE).read_text())
            assert record["status"] == "interrupted" and record["stages"]["measurements"] > 0
            assert not (out / ".ovt-lock").exists()
        whole = tmp_path / "whole"
        for run in (out, whole):
            done = subprocess.run(command(run), env=env, cwd=root, capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
        for stage in ("perturb", "finetune/shakespeare", "curvature"):
            tables = [pd.read_parquet(run / stage / "tiny_seed=0" / store.METRICS) for run in (out, whole)]
            pd.testing.assert_frame_equal(*tables, check_exact=True)
