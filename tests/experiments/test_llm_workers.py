"""Units of LLM runs in worker processes and as submitit job arrays: the same table as one process.

Every comparison is exact (``check_exact``): a unit computed in a worker with one torch thread is
the unit computed here with one thread. Workers are spawned processes (~2 s each to import torch),
so the runs are the smallest that still have several units.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from llm_validation.parallel import WORKERS_ENV, default_workers, worker_count
from rundir import store
from tests.exits import ENDINGS, a_chunk_more, interrupt_when, small_disk, start
from tests.experiments.conftest import ovt
from tests.experiments.test_llm_finetune_cli import files as files  # noqa: F401 (a fixture)
from tests.experiments.test_llm_finetune_cli import finetune_args
from tests.experiments.test_llm_perturb_cli import eval_text as eval_text  # noqa: F401 (a fixture)
from tests.experiments.test_llm_perturb_cli import perturb_args
from tests.experiments.test_llm_pretrain_cli import pretrain_args

pytestmark = pytest.mark.usefixtures("one_torch_thread", "empty_offline_cache")
ONE = ("--threads", "1")


def table(out) -> pd.DataFrame:
    return pd.read_parquet(out / store.METRICS)


def same_tables(a, b) -> None:
    pd.testing.assert_frame_equal(table(a), table(b), check_exact=True)


def test_worker_count_defaults_to_the_environment_then_the_cores(monkeypatch):
    monkeypatch.setenv(WORKERS_ENV, "3")
    assert default_workers() == 3 and worker_count(None, 2) == 2 and worker_count(None, 10) == 3
    assert worker_count(4, 10) == 4 and worker_count(4, 0) == 1
    monkeypatch.delenv(WORKERS_ENV)
    assert default_workers() == len(os.sched_getaffinity(0))
    monkeypatch.setenv(WORKERS_ENV, "none")
    with pytest.raises(ValueError, match="OVT_WORKERS='none' must be a whole number >= 1"):
        default_workers()


def test_two_workers_write_the_perturb_table_of_one(capsys, tmp_path, folder_series, eval_text):  # noqa: F811
    root = folder_series[0]
    for name, workers in (("one", "1"), ("two", "2")):
        code, _, err = ovt(capsys, *perturb_args(root, eval_text, tmp_path / name, *ONE, "--workers", workers))
        assert code == 0, err
    same_tables(tmp_path / "one", tmp_path / "two")
    one, two = (store.read_manifest(tmp_path / name) for name in ("one", "two"))
    assert one["sigma"] == two["sigma"] and one["revisions"] == two["revisions"]


def test_two_workers_write_the_finetune_table_of_one(capsys, tmp_path, folder_series, files):  # noqa: F811
    for name, workers in (("one", "1"), ("two", "2")):
        args = finetune_args(folder_series[0], *files, tmp_path / name, *ONE, "--workers", workers)
        code, _, err = ovt(capsys, *args)
        assert code == 0, err
    same_tables(tmp_path / "one", tmp_path / "two")
    tuned = [[r["tuned_lr"] for r in store.read_manifest(tmp_path / n)["revisions"]] for n in ("one", "two")]
    assert tuned[0] == tuned[1] and all(lr is not None for lr in tuned[0])


def test_a_seed_sweep_runs_its_cells_side_by_side(capsys, tmp_path):
    for name, workers in (("one", "1"), ("two", "2")):
        code, _, err = ovt(capsys, *pretrain_args(tmp_path / name, "1K,2K", "seed=0,1", "--workers", workers))
        assert code == 0, err
    for cell in ("seed=0", "seed=1"):
        same_tables(tmp_path / "one" / cell, tmp_path / "two" / cell)
    assert not table(tmp_path / "two" / "seed=0").value.equals(table(tmp_path / "two" / "seed=1").value)


def _ovt_process(*argv, stderr=subprocess.DEVNULL) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", WORKERS_ENV: "2"}
    command = [sys.executable, "-m", "experiments.cli", *map(str, argv)]
    return start(command, env=env, start_new_session=True, stderr=stderr, text=True)


def _kill_when(proc: subprocess.Popen, done, timeout: float = 120.0) -> None:
    """Kill the command and its workers (its process group) as soon as ``done()``, as a user's
    Ctrl-C or a scheduler would; the test needs the kill to land mid-run."""
    start = time.monotonic()
    while not done():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() - start < timeout
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_a_killed_two_worker_perturb_run_resumes_to_the_uninterrupted_table(
    capsys,
    tmp_path,
    folder_series,
    eval_text,  # noqa: F811
):
    args = lambda out: perturb_args(folder_series[0], eval_text, out, *ONE, gammas="0.5,1,2", seeds=3)  # noqa: E731
    killed = tmp_path / "killed"
    proc = _ovt_process(*args(killed))
    _kill_when(proc, lambda: len(store.stored_chunks(killed)) >= 1)
    assert not (killed / store.METRICS).exists() and len(store.stored_chunks(killed)) < 3
    assert store.read_manifest(killed)["status"] == "running"  # SIGKILL: no chance to say more
    code, _, err = ovt(capsys, *args(killed), "--workers", "2")
    assert code == 0, err
    code, _, err = ovt(capsys, *args(tmp_path / "whole"), "--workers", "1")
    assert code == 0, err
    same_tables(killed, tmp_path / "whole")


def test_a_killed_two_worker_series_resumes_to_the_uninterrupted_series(capsys, tmp_path):
    killed, whole = tmp_path / "killed" / "series", tmp_path / "whole" / "series"  # the name is the setup
    proc = _ovt_process(*pretrain_args(killed, "1K,2K,8K"))
    _kill_when(proc, lambda: any(killed.glob("*/checkpoint.json")))
    assert len(list(killed.glob("*/checkpoint.json"))) < 3  # killed mid-run (which budget ends first varies)
    for out in (killed, whole):  # started again in one process: it continues what the workers left
        code, _, err = ovt(capsys, *pretrain_args(out, "1K,2K,8K", "--workers", "1"))
        assert code == 0, err
    same_tables(killed, whole)


def _ovt_command(*argv) -> subprocess.CompletedProcess:
    """``ovt ARGV`` as its own process, as a user runs it: a job array's executor then owns its own
    standard streams (inside pytest's output capture, submitit's executors disturb it)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", WORKERS_ENV: "1"}
    command = [sys.executable, "-m", "experiments.cli", *map(str, argv)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_a_job_array_writes_the_table_of_one_process(capsys, tmp_path, folder_series, eval_text):  # noqa: F811
    """submitit's ``local`` executor runs each job in a subprocess, as Slurm would on nodes."""
    code, _, err = ovt(capsys, *perturb_args(folder_series[0], eval_text, tmp_path / "one", *ONE, "--workers", "1"))
    assert code == 0, err
    jobs = tmp_path / "jobs"
    done = _ovt_command(*perturb_args(folder_series[0], eval_text, jobs, *ONE, "--cluster", "local"))
    assert done.returncode == 0, done.stderr
    same_tables(tmp_path / "one", jobs)
    assert len(list((jobs / "submitit").glob("*_result.pkl"))) == 3
    manifest = store.read_manifest(jobs)
    assert manifest["status"] == "complete" and manifest["sigma"] == store.read_manifest(tmp_path / "one")["sigma"]


def test_a_separate_series_trains_one_budget_per_job(capsys, tmp_path):
    one, jobs = tmp_path / "one" / "series", tmp_path / "jobs" / "series"  # the folder's name is the setup
    code, _, err = ovt(capsys, *pretrain_args(one, "1K,2K", "--workers", "1"))
    assert code == 0, err
    done = _ovt_command(*pretrain_args(jobs, "1K,2K", "--cluster", "debug"))
    assert done.returncode == 0, done.stderr
    same_tables(one, jobs)


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--workers", "0"), "--workers 0 must be >= 1 and <= 256"),
        (("--partition", "gpu"), "--partition is an option of --cluster"),
        (("--cluster", "local", "--partition", "gpu"), "--partition is a Slurm option"),
        (("--cluster", "debug", "--workers", "2"), "--workers and --cluster exclude each other"),
        (("--cluster", "pbs"), "--cluster"),
    ],
)
def test_bad_execution_options_exit_2_before_anything_is_written(capsys, tmp_path, extra, message):
    code, _, err = ovt(capsys, *pretrain_args(tmp_path / "out", "1K", *extra))
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra", [("--workers", "1"), ("--workers", "2"), ("--workers", "1", "--threads", "1")])
def test_the_numbers_do_not_depend_on_workers_or_a_machine_default(capsys, tmp_path, extra):
    """With torch's own default at 2 threads (a 2-core machine), one process without --threads trains
    the same checkpoints as two workers and as --threads 1: every process has one thread unless told."""
    import torch

    from tests.experiments.test_llm_pretrain_cli import SERIES

    # The test series without its --threads, at a batch large enough for torch to split work.
    unthreaded = [a for a in SERIES if a not in ("--threads", "1", "--batch-size", "4", "--seq-len", "32")]

    def args(out, *more):
        return (
            "llm",
            "pretrain",
            "--budgets",
            "32K,64K",
            "--batch-size",
            "64",
            "--seq-len",
            "64",
            *unthreaded,
            *more,
            "--out",
            out,
        )

    reference = tmp_path / "reference" / "series"
    code, _, err = ovt(capsys, *args(reference, *ONE, "--workers", "1"))
    assert code == 0, err
    out = tmp_path / "run" / "series"
    torch.set_num_threads(2)
    try:
        code, _, err = ovt(capsys, *args(out, *extra))
    finally:
        torch.set_num_threads(1)
    assert code == 0, err
    same_tables(reference, out)
    for revision in (p.name for p in reference.iterdir() if p.name.startswith("step")):
        a = (reference / revision / "model.safetensors").read_bytes()
        assert a == (out / revision / "model.safetensors").read_bytes(), revision


def test_a_two_worker_run_ended_by_a_full_disk_sigterm_and_sigint_resumes_to_the_uninterrupted_table(
    capsys,
    tmp_path,
    folder_series,
    eval_text,  # noqa: F811
):
    """A two-worker run ended three ways in turn: a full disk (exit 1, one line naming the file,
    "failed"), SIGTERM to the command alone (a scheduler's kill: 143) and SIGINT (Ctrl-C: 130), each
    "interrupted" with no worker left running in its process group; the same command then resumes to
    the uninterrupted table."""
    args = lambda out: perturb_args(folder_series[0], eval_text, out, *ONE, "--quiet", gammas="0.5,1,2", seeds=3)  # noqa: E731
    with small_disk(tmp_path / "disk", kib=8) as disk:
        out = disk.path / "run"
        full = subprocess.run(
            [sys.executable, "-m", "experiments.cli", *map(str, args(out))],
            env={**os.environ, "HF_HUB_OFFLINE": "1", WORKERS_ENV: "2"},
            capture_output=True,
            text=True,
        )
        lines = full.stderr.strip().splitlines()
        assert full.returncode == 1 and len(lines) == 1 and "No space left on device" in lines[0], full.stderr
        assert str(out) in lines[0] and store.read_manifest(out)["status"] == "failed"
        disk.grow(8192)
        for sig in (signal.SIGTERM, signal.SIGINT):
            proc = _ovt_process(*args(out), stderr=subprocess.PIPE)
            assert interrupt_when(proc, a_chunk_more(out), sig) == [ENDINGS[sig][1]]
            assert store.read_manifest(out)["status"] == "interrupted"
            _no_process_left(proc)
        code, _, err = ovt(capsys, *args(out), "--workers", "2")
        assert code == 0, err
        code, _, err = ovt(capsys, *args(tmp_path / "whole"), "--workers", "1")
        assert code == 0, err
        same_tables(out, tmp_path / "whole")


def _no_process_left(proc: subprocess.Popen) -> None:
    """Workers terminated by their parent take a moment to be reaped; then the group is empty."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError("a worker outlived its parent")
