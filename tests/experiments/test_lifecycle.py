"""The run lifecycle and the store's schema: failed runs are marked and replaceable, loads are uniform."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from experiments.sweep import compute as theory_run
from rundir import store
from rundir.lifecycle import LOCK, UsageError, out_decision
from tests.experiments.conftest import ovt

REFERENCE = Path(__file__).resolve().parents[2] / "paper_figures" / "reference"
SMOKE = ["theory", "smoke", "n_t=7", "chunk_size=1", "--quiet"]


def _fail_on_second_chunk(monkeypatch):
    real = theory_run.run_chunk

    def flaky(chunk, *args, **kwargs):
        if chunk.index == 1:
            raise RuntimeError("simulated failure in chunk 1")
        return real(chunk, *args, **kwargs)

    monkeypatch.setattr(theory_run, "run_chunk", flaky)


def test_a_failed_run_is_marked_and_the_same_command_resumes_it(capsys, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _fail_on_second_chunk(monkeypatch)
    code, _, err = ovt(capsys, *SMOKE, "--out", out)
    assert code == 1 and "simulated failure in chunk 1" in err and err.count("\n") == 1
    manifest = store.read_manifest(out)
    assert manifest["status"] == "failed" and "RuntimeError: simulated failure" in manifest["error"]
    assert store.stored_chunks(out) == {0} and not (out / LOCK).exists()  # a failed run releases its lock
    monkeypatch.undo()
    assert ovt(capsys, *SMOKE, "--out", out)[0] == 0
    manifest = store.read_manifest(out)
    assert manifest["status"] == "complete" and "error" not in manifest and len(manifest["resumed"]) == 1
    assert ovt(capsys, *SMOKE, "--out", tmp_path / "clean")[0] == 0
    pd.testing.assert_frame_equal(
        pd.read_parquet(out / store.METRICS), pd.read_parquet(tmp_path / "clean" / store.METRICS)
    )


def test_a_corrected_command_replaces_a_failed_run_of_another_config(capsys, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _fail_on_second_chunk(monkeypatch)
    assert ovt(capsys, *SMOKE, "gamma=0.3,0.5", "--out", out)[0] == 1
    monkeypatch.undo()
    code, _, err = ovt(capsys, *SMOKE, "gamma=0.3,0.4", "--out", out)
    assert code == 0 and f"replacing the failed run of another config in {out}" in err
    manifest = store.read_manifest(out)
    assert manifest["status"] == "complete" and manifest["config"]["grid"] == {"gamma": [0.3, 0.4]}
    assert sorted(store.load(out).gamma.dropna().unique()) == [0.3, 0.4]


def test_a_killed_run_with_no_result_is_replaced_but_one_with_results_is_kept(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    store.write_json(out / store.MANIFEST, {"preset": "smoke", "config": {"a": 1}, "status": "running"})
    identity = {"preset": "smoke", "config": {"a": 2}}
    assert out_decision(out, identity) == "replace"
    assert out_decision(out, {"preset": "smoke", "config": {"a": 1}}) == "resume"
    store.write_table(
        store.chunk_path(out, 0),
        store.block(
            source=["theory"],
            setup="x",
            checkpoint="T",
            pretrain_time=1.0,
            modification="none",
            seed=0,
            metric="m",
            value=1.0,
        ),
    )
    with pytest.raises(UsageError, match="holds a running run of another config"):
        out_decision(out, identity)


def test_an_interrupted_run_is_marked_interrupted(tmp_path, monkeypatch):
    from experiments.sweep import presets
    from experiments.sweep.runner import run_theory

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(theory_run, "run_chunk", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_theory(presets.get("smoke"), "smoke", tmp_path / "run", quiet=True)
    assert store.read_manifest(tmp_path / "run")["status"] == "interrupted"


def test_load_takes_a_path_or_a_list_and_gives_one_schema(capsys, tmp_path):
    theory = tmp_path / "theory"
    assert ovt(capsys, *SMOKE, "--out", theory)[0] == 0
    one = store.load(str(theory))
    assert one.run.unique().tolist() == [str(theory)] and len(one) > 0
    both = store.load([theory, REFERENCE / "llm" / "perturb", REFERENCE / "llm" / "finetune"])
    for name, dtype in {**store.REQUIRED_COLUMNS, **{k: d for k, (d, _) in store.OPTIONAL_COLUMNS.items()}}.items():
        assert str(both[name].dtype) == dtype, name
    assert not both.lr_policy.isna().any() and set(both.lr_policy) == {"", "fixed", "tuned"}
    assert both.diverged.dtype == bool and not both.diverged[both.source == "theory"].any()
    assert set(both[both.run == str(theory)].lr_policy) == {"", "fixed"}


def test_figures_of_the_reference_stores_skip_the_series_and_name_every_file(capsys, tmp_path):
    code, out, err = ovt(capsys, "figures", "--results", REFERENCE / "llm", "--out", tmp_path)
    assert code == 0
    names = sorted(Path(line).name for line in out.split())
    assert names == ["llm_finetune.pdf", "llm_finetune.png", "llm_perturb.pdf", "llm_perturb.png"]
    assert err.count("\n") == 1 and "skipped" in err and "'llm_pretrain' runs have no figure" in err
    assert not any("None" in p.name for p in tmp_path.iterdir())


def test_two_runs_of_one_kind_are_named_after_their_directories(capsys, tmp_path):
    for name in ("a", "b"):
        assert ovt(capsys, *SMOKE, "--out", tmp_path / "runs" / name)[0] == 0
    code, out, _ = ovt(capsys, "figures", "--results", tmp_path / "runs", "--out", tmp_path / "figs")
    assert code == 0 and {Path(p).stem for p in out.split()} == {"smoke-a", "smoke-b"}


def test_compare_says_which_families_it_skipped_and_why(capsys, tmp_path):
    series = tmp_path / "series"
    series.mkdir()
    manifest = json.loads((REFERENCE / "llm" / "series" / store.MANIFEST).read_text())
    store.write_json(series / store.MANIFEST, manifest)
    store.write_table(series / store.METRICS, pd.read_parquet(REFERENCE / "llm" / "series" / store.METRICS))
    code, _, err = ovt(
        capsys,
        "compare",
        "--results",
        series,
        REFERENCE / "llm" / "perturb",
        "--bootstrap",
        "0",
        "--out",
        tmp_path / "compare",
        "--quiet",
    )
    assert code == 0, err
    assert "ovt compare: skipped llm_pretrain: no modification rows" in err


def _lock(out: Path, pid: int, host: str | None = None) -> None:
    import platform

    out.mkdir(parents=True, exist_ok=True)
    record = {"pid": pid, "host": host or platform.node(), "started": "2026-12-04T20:00:00+00:00"}
    (out / LOCK).write_text(json.dumps(record))


def test_a_run_directory_in_use_by_a_live_process_is_refused_untouched(capsys, tmp_path):
    """A second command on the same --out while the first works: exit 2 naming the first's process and
    host, nothing written; on another machine's lock (which cannot be asked) the same."""
    import subprocess
    import sys

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for host in (None, "elsewhere"):
            out = tmp_path / (host or "here")
            _lock(out, sleeper.pid, host)
            before = sorted(p.name for p in out.iterdir())
            code, _, err = ovt(capsys, *SMOKE, "--out", str(out))
            assert code == 2 and f"is in use by process {sleeper.pid} on {host or ''}" in err, err
            assert err.count("\n") == 1 and sorted(p.name for p in out.iterdir()) == before
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_lock_left_by_a_dead_process_is_taken_over_and_a_finished_run_leaves_none(capsys, tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    out = tmp_path / "run"
    _lock(out, int(dead.stdout))
    code, _, err = ovt(capsys, *SMOKE, "--out", str(out))
    assert code == 0 and f"taking over {out} from process {int(dead.stdout)}, which no longer runs" in err
    assert not (out / LOCK).exists() and store.read_manifest(out)["status"] == "complete"


def test_a_run_written_before_a_field_existed_resumes_while_another_value_is_refused(tmp_path):
    """A stored config that lacks a field (a version left it out at its default, or it is newer than
    the run) resumes when the current value is the declared default, and is refused otherwise."""
    stored = {"gammas": [1.0], "seeds": 2, "eval_sha256": "abc"}
    store.write_json(tmp_path / store.MANIFEST, {"command": "llm perturb", "config": stored, "status": "complete"})
    defaults = {"gammas": None, "seeds": None, "noise_device": "cpu", "backend": "torch"}
    same = {"command": "llm perturb", "config": stored | {"noise_device": "cpu", "backend": "torch"}}
    assert out_decision(tmp_path, same, defaults) == "resume"
    other = {"command": "llm perturb", "config": stored | {"noise_device": "param", "backend": "torch"}}
    with pytest.raises(UsageError, match="holds a complete run of another config"):
        out_decision(tmp_path, other, defaults)
    with pytest.raises(UsageError):
        out_decision(tmp_path, same)  # without the defaults, a key either side lacks is a difference
    changed = {"command": "llm perturb", "config": stored | {"seeds": 3}}
    with pytest.raises(UsageError):
        out_decision(tmp_path, changed, defaults)
