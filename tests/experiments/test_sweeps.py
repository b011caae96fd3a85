import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from experiments import config, presets, store, theory_run
from experiments.run import UsageError, run_theory

from .conftest import smoke_sized


@pytest.mark.parametrize("name", list(presets.PRESETS))
def test_every_preset_runs_at_smoke_size(tmp_path, name):
    cfg = smoke_sized(name)
    table = run_theory(cfg, name, tmp_path, quiet=True)
    assert set(store.REQUIRED_COLUMNS) <= set(table.columns)
    assert {"none", "gaussian", "finetune"} <= set(table.modification)
    curves = table[table.checkpoint != "inflection"]
    assert np.isfinite(curves.value).all()
    n_t = len(cfg.budgets) if cfg.method == "series" else cfg.n_t
    sizes = curves[curves.lr_policy != "tuned"].groupby(["modification", "metric"]).size()
    assert (sizes % n_t == 0).all(), sizes  # whole curves only
    # One fine-tuned curve per cell that differs in anything but gamma (gamma does not touch fine-tuning).
    import dataclasses

    distinct = {dataclasses.replace(c, gamma=0.0) for c in config.cells(cfg)}
    assert sizes["finetune", "pretrain_loss"] == len(distinct) * n_t


def test_same_seed_gives_identical_tables(tmp_path, smoke_config):
    a = run_theory(smoke_config, "smoke", tmp_path / "a", quiet=True)
    b = run_theory(smoke_config, "smoke", tmp_path / "b", quiet=True)
    pd.testing.assert_frame_equal(a, b)


def test_padding_and_chunking_do_not_change_results(tmp_path, smoke_config):
    import dataclasses

    cfg = dataclasses.replace(smoke_config, grid=(("gamma", (0.1, 0.2, 0.3)),), chunk_size=2)
    chunked = run_theory(cfg, "smoke", tmp_path / "a", quiet=True)
    whole = run_theory(dataclasses.replace(cfg, chunk_size=8), "smoke", tmp_path / "b", quiet=True)
    assert len(theory_run.plan(cfg)) == 2
    pd.testing.assert_frame_equal(chunked, whole, check_exact=False, rtol=1e-6)


def test_rerun_into_a_finished_run_recomputes_nothing(tmp_path, smoke_config):
    run_theory(smoke_config, "smoke", tmp_path, quiet=True)
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / store.CHUNKS).iterdir()}
    run_theory(smoke_config, "smoke", tmp_path, quiet=True)
    assert before == {p: p.stat().st_mtime_ns for p in (tmp_path / store.CHUNKS).iterdir()}


def test_other_config_in_same_out_is_refused(tmp_path, smoke_config):
    import dataclasses

    run_theory(smoke_config, "smoke", tmp_path, quiet=True)
    with pytest.raises(UsageError, match="another config"):
        run_theory(dataclasses.replace(smoke_config, n_t=9), "smoke", tmp_path, quiet=True)


def test_tuned_rows_pick_the_best_in_task_lr(tmp_path, smoke_config):
    import dataclasses

    cfg = dataclasses.replace(smoke_config, tuned_lr=True, grid=(("lr", (0.005, 0.02, 0.08)),))
    table = run_theory(cfg, "smoke", tmp_path, quiet=True)
    curves = table[
        (table.modification == "finetune") & (table.metric == "finetune_loss") & (table.checkpoint != "inflection")
    ]
    fixed = curves[curves.lr_policy == "fixed"].pivot_table(index="pretrain_time", columns="lr", values="value")
    tuned = curves[curves.lr_policy == "tuned"].set_index("pretrain_time").value
    np.testing.assert_allclose(tuned.loc[fixed.index].to_numpy(), fixed.min(axis=1).to_numpy())


def _sweep_command(out, slow):
    code = (
        "import dataclasses, time\n"
        "from experiments import theory_run\n"
        "from experiments.run import run_theory\n"
        "from tests.experiments.conftest import smoke_sized\n"
        "cfg = dataclasses.replace(smoke_sized('finetune'), chunk_size=1, grid=(('lr', (0.01, 0.02, 0.04, 0.08)),))\n"
        "original = theory_run.run_chunk\n"
        f"def slow(*a, **k):\n    time.sleep({slow})\n    return original(*a, **k)\n"
        "theory_run.run_chunk = slow\n"
        f"run_theory(cfg, 'finetune', {str(out)!r}, quiet=True)\n"
    )
    return [sys.executable, "-c", code]


def test_sigkill_midway_then_resume_equals_uninterrupted(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_sweep_command(killed, 1.5), env=env, cwd=root)
    deadline = time.time() + 120
    while time.time() < deadline and len(store.stored_chunks(killed)) < 2:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stored = len(store.stored_chunks(killed))
    assert 2 <= stored < 4 and not (killed / store.METRICS).exists()
    subprocess.run(_sweep_command(killed, 0), env=env, cwd=root, check=True)
    clean = tmp_path / "clean"
    subprocess.run(_sweep_command(clean, 0), env=env, cwd=root, check=True)
    pd.testing.assert_frame_equal(pd.read_parquet(killed / store.METRICS), pd.read_parquet(clean / store.METRICS))


def test_cell_axis_shards_over_two_devices(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
    env = dict(os.environ, PYTHONPATH=root, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    code = (
        "import jax\n"
        "assert jax.device_count() == 2\n"
        "from experiments.run import run_theory\n"
        "from tests.experiments.conftest import smoke_sized\n"
        f"run_theory(smoke_sized('gaussian'), 'gaussian', {str(tmp_path / 'two')!r}, quiet=True)\n"
    )
    subprocess.run([sys.executable, "-c", code], env=env, cwd=root, check=True)
    one = run_theory(smoke_sized("gaussian"), "gaussian", tmp_path / "one", quiet=True)
    two = pd.read_parquet(tmp_path / "two" / store.METRICS)
    assert store.read_manifest(tmp_path / "two")["devices"].__len__() == 2
    pd.testing.assert_frame_equal(one, two, check_exact=False, rtol=1e-5)


def test_cluster_jobs_write_chunks_that_merge(tmp_path):
    import dataclasses

    from experiments import cluster

    cfg = dataclasses.replace(smoke_sized("gaussian"), chunk_size=1)
    jobs = cluster.submit(cfg, "gaussian", tmp_path, cluster="debug")
    assert sorted(job.result() for job in jobs) == list(range(len(jobs)))
    merged = pd.read_parquet(tmp_path / store.METRICS)
    direct = run_theory(cfg, "gaussian", tmp_path / "direct", quiet=True)
    pd.testing.assert_frame_equal(merged, direct)
