import dataclasses
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from analysis.inflection import KINDS
from experiments import cli
from experiments.sweep import compute as theory_run
from experiments.sweep import config, presets, rows
from experiments.sweep.runner import run_theory
from rundir import derived, store
from rundir.lifecycle import UsageError
from tests.exits import ENDINGS, a_chunk_more, interrupt_when, small_disk, start

from .conftest import four_lrs, smoke_sized


@pytest.mark.parametrize("name", list(presets.PRESETS))
def test_every_preset_runs_at_smoke_size(tmp_path, name):
    cfg = smoke_sized(name)
    table = run_theory(cfg, name, tmp_path, quiet=True)
    assert set(store.REQUIRED_COLUMNS) <= set(table.columns)
    assert {"none", "gaussian", "finetune"} <= set(table.modification)
    curves = table[~table.checkpoint.isin(["inflection", rows.PREDICTION])]
    assert np.isfinite(curves.value).all()
    predicted = table[table.checkpoint == rows.PREDICTION]  # +inf where every mode helps at that gamma
    applies = [c for c in config.cells(cfg) if rows.gaussian_prediction(c) is not None]
    assert set(predicted.value) == {rows.gaussian_prediction(c) for c in applies} and (predicted.value > 0).all()
    n_t = len(cfg.budgets) if cfg.method == "series" else cfg.n_t
    sizes = curves[curves.lr_policy != "tuned"].groupby(["modification", "metric"]).size()
    assert (sizes % n_t == 0).all(), sizes  # whole curves only
    # One fine-tuned curve per cell that differs in anything but gamma, bits and the multimodal settings
    # (none touches fine-tuning).
    plain = {name: config.FIELDS[name].default for name in ("multimodal", *config.MULTIMODAL)}
    distinct = {dataclasses.replace(c, gamma=0.0, bits=0, **plain) for c in config.cells(cfg)}
    assert sizes["finetune", "pretrain_loss"] == len(distinct) * n_t
    # Every inflection row says what its minimum is; T* is finite exactly on the interior ones.
    inflections = table[table.checkpoint == "inflection"]
    assert set(inflections.t_star_kind) <= set(KINDS) and (curves.t_star_kind == "").all()
    assert (np.isfinite(inflections.value) == (inflections.t_star_kind == "interior")).all()


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
    # The closed form's refined T* sits where the curve is flattest: the float32 rounding that another
    # batch size brings moves it by ~1e-5, far inside its 0.1%.
    infl = whole.checkpoint == "inflection"
    pd.testing.assert_frame_equal(chunked[~infl], whole[~infl], check_exact=False, rtol=1e-6)
    pd.testing.assert_frame_equal(chunked[infl], whole[infl], check_exact=False, rtol=1e-4)


def test_chunks_stop_at_the_largest_group_and_the_estimate_counts_every_minibatch_stream(monkeypatch):
    """``general``: 4 static groups (optimizer x batch size) of 3 seeds. Padded to chunk_size 8, a chunk
    held 8 minibatch streams of 2.4 GB each at batch 512 (a 19 GB peak, measured); a chunk now stops at
    its group's 3 cells, the memory estimate counts the streams (12 bytes an entry of 6,400 steps x 512
    x 64), and the preset computes one cell at a time: refused at chunk_size 8 on a 16 GiB machine,
    accepted at 1."""
    small = dataclasses.replace(presets.get("general"), grid=(("batch_size", (16, 32)), ("seed", (0, 1, 2))))
    wide = dataclasses.replace(small, chunk_size=8)
    assert [(len(c.cells), c.n_real) for c in theory_run.plan(wide)] == [(3, 3)] * 2
    stream = 12 * 6_400 * 512 * (32 + 32)
    assert config.batch_stream_bytes(dataclasses.replace(small, grid=(), batch_size=512)) == stream
    assert config.batch_stream_bytes(presets.get("gaussian")) == 0  # gradient flow draws no batches
    assert 6 * stream / 16 <= config.estimate_bytes(wide, 6) < 6 * stream / 16 + 2**27  # min(8, 6 cells)
    monkeypatch.setattr(config, "_machine_memory", lambda: 16 * 2**30)
    one = presets.get("general")
    assert one.chunk_size == 1 and stream <= config.estimate_bytes(one, 12) < stream + 2**27
    with pytest.raises(ValueError, match=r"needs an estimated 18\.\d GiB; this machine has 16\.0 GiB"):
        dataclasses.replace(one, chunk_size=8)


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


def test_closed_form_tuned_t_star_is_its_lrs_refined_t_star(tmp_path, smoke_config):
    """In flow time the tuned lr is the grid's largest at every T, so the tuned curve is that lr's
    curve and its T* that lr's refined T*, not the grid estimate."""
    import dataclasses

    cfg = dataclasses.replace(smoke_config, n_t=25, tuned_lr=True, grid=(("lr", (0.02, 0.08)),))
    table = run_theory(cfg, "smoke", tmp_path, quiet=True)
    rows = table[(table.checkpoint == "inflection") & (table.modification == "finetune")].set_index("lr_policy")
    fixed = rows[np.isclose(rows.lr, 0.08)].loc["fixed"]
    assert rows.loc["tuned", "t_star_kind"] == fixed.t_star_kind == "interior"
    assert rows.loc["tuned", "value"] == fixed.value
    curve = table[(table.lr_policy == "tuned") & (table.metric == "pretrain_loss") & (table.checkpoint != "inflection")]
    grid = derived.curve_t_star(curve)
    assert abs(grid / fixed.value - 1) > 1e-3  # the refinement moved it


def _seed_curves(values: dict) -> pd.DataFrame:
    """Theory-shaped curve and inflection rows of one curve per seed: {seed: values over T = 1..1e3}."""
    T = np.logspace(0, 3, len(next(iter(values.values()))))
    frames = []
    for seed, y in values.items():
        t_star, kind = derived.curve_inflection(pd.DataFrame({"pretrain_time": T, "value": y}))
        frames.append(
            store.block(
                source="theory",
                setup="schedule",
                checkpoint=[*(f"T={t:g}" for t in T), "inflection"],
                pretrain_time=[*T, np.nan],
                modification="gaussian",
                gamma=0.2,
                seed=seed,
                metric=[*["pretrain_loss"] * len(T), "inflection"],
                value=[*y, t_star],
                lr_policy="",
                t_star_kind=[*[""] * len(T), kind],
            )
        )
    return pd.concat(frames, ignore_index=True)


def test_a_seeds_minimum_within_the_seeds_spread_is_flat():
    """One seed's curve dips and rises by 1e-3 at its end, where the seeds differ by 5e-3: seed noise."""
    fall = np.array([1.0, 0.5, 0.2, 0.1, 0.1, 0.1])
    frame = _seed_curves({0: fall, 1: fall + [0, 0, 0, 0, -0.01, -0.009], 2: fall + [0, 0, 0, 0, -0.005, -0.01]})
    infl = frame.checkpoint == "inflection"
    assert frame[infl].t_star_kind.tolist() == ["flat", "interior", "above"]
    judged = derived.judge_by_seed_spread(frame)
    assert judged[infl].t_star_kind.tolist() == ["flat", "flat", "above"] and judged[infl].value.isna().all()
    assert judged[~infl].equals(frame[~infl])
    # A rise well beyond the spread stays an inflection.
    rising = {s: fall + [0, 0, 0, 0, 0.001 * s, 0.5] for s in range(3)}
    judged = derived.judge_by_seed_spread(_seed_curves(rising))
    assert (judged[infl].t_star_kind == "interior").all() and judged[infl].value.notna().all()


def test_a_mean_over_draws_is_judged_against_its_standard_error():
    T = np.logspace(0, 3, 6)
    mean = np.array([3.0, 2.0, 1.0, 1.05, 1.1, 1.1])  # rises by 0.1 after its minimum
    for offset, kind in ((0.05, "interior"), (0.5, "flat")):  # draws -o, 0, +o: s.e. = o / sqrt(3) at every T
        draws = pd.DataFrame(
            {"pretrain_time": np.repeat(T, 3), "value": (mean[:, None] + [[-offset, 0.0, offset]]).ravel()}
        )
        assert derived.curve_inflection(draws)[1] == kind


def test_a_store_written_before_the_kinds_loads_with_empty_kinds(tmp_path):
    frame = _seed_curves({0: np.array([3.0, 2.0, 1.0, 2.0])}).drop(columns="t_star_kind")
    (tmp_path / "old").mkdir()
    frame.to_parquet(tmp_path / "old" / store.METRICS, index=False)
    loaded = store.read_table(tmp_path / "old")
    assert loaded.t_star_kind.dtype == "string" and (loaded.t_star_kind == "").all()


def _sweep_command(out, slow):
    code = (
        "import time\n"
        "from experiments.sweep import compute as theory_run\n"
        "from experiments.sweep.runner import run_theory\n"
        "from tests.experiments.conftest import four_lrs\n"
        "cfg = four_lrs()\n"
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
    clean = run_theory(four_lrs(), "finetune", tmp_path / "clean", quiet=True)  # in this process
    pd.testing.assert_frame_equal(pd.read_parquet(killed / store.METRICS), clean)


def test_cell_axis_shards_over_two_devices(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
    env = dict(os.environ, PYTHONPATH=root, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    code = (
        "import jax\n"
        "assert jax.device_count() == 2\n"
        "from experiments.sweep.runner import run_theory\n"
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

    from experiments.sweep import cluster

    cfg = dataclasses.replace(smoke_sized("gaussian"), chunk_size=1)
    jobs = cluster.submit(cfg, "gaussian", tmp_path, cluster="debug")
    assert sorted(job.result() for job in jobs) == list(range(len(jobs)))
    merged = pd.read_parquet(tmp_path / store.METRICS)
    direct = run_theory(cfg, "gaussian", tmp_path / "direct", quiet=True)
    pd.testing.assert_frame_equal(merged, direct)


SMOKE_FOUR_GAMMAS = ["theory", "smoke", "gamma=0.3,0.5,1,2", "chunk_size=1", "--quiet"]


def _cli_command(out, slow):
    """``ovt theory smoke`` over four gammas, one cell a chunk, each chunk slowed by ``slow`` seconds."""
    code = (
        "import sys, time\n"
        "from experiments import cli\nfrom experiments.sweep import compute as theory_run\n"
        "original = theory_run.run_chunk\n"
        f"def slow(*a, **k):\n    time.sleep({slow})\n    return original(*a, **k)\n"
        "theory_run.run_chunk = slow\n"
        f"argv = {SMOKE_FOUR_GAMMAS!r}\n"
        f"sys.exit(cli.main(argv + ['--out', {str(out)!r}]))\n"
    )
    return [sys.executable, "-c", code]


def test_a_full_disk_sigterm_and_sigint_each_leave_a_true_status_and_the_run_resumes(tmp_path):
    """A theory run ended three ways in turn: on a full disk (exit 1, one line naming the file,
    status "failed"), by SIGTERM (a scheduler's kill: 143, "interrupted") and by SIGINT (Ctrl-C: 130,
    "interrupted"); after each, the same command goes on, and it ends with the uninterrupted table."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    with small_disk(tmp_path / "disk", kib=8) as disk:
        out = disk.path / "run"
        full = subprocess.run(_cli_command(out, 0), env=env, cwd=root, capture_output=True, text=True)
        lines = full.stderr.strip().splitlines()
        assert full.returncode == 1 and len(lines) == 1, full.stderr
        assert "No space left on device" in lines[0] and str(out) in lines[0], lines
        manifest = store.read_manifest(out)
        assert manifest["status"] == "failed" and "No space left on device" in manifest["error"]
        disk.grow(4096)
        for sig in (signal.SIGTERM, signal.SIGINT):
            proc = start(_cli_command(out, 1.5), env=env, cwd=root, stderr=subprocess.PIPE, text=True)
            assert interrupt_when(proc, a_chunk_more(out), sig) == [ENDINGS[sig][1]]
            assert store.read_manifest(out)["status"] == "interrupted" and not (out / store.METRICS).exists()
        assert len(store.stored_chunks(out)) < 4
        subprocess.run(_cli_command(out, 0), env=env, cwd=root, check=True)
        clean = tmp_path / "clean"
        assert cli.main([*SMOKE_FOUR_GAMMAS, "--out", str(clean)]) == 0  # in this process
        pd.testing.assert_frame_equal(pd.read_parquet(out / store.METRICS), pd.read_parquet(clean / store.METRICS))
        assert store.read_manifest(out)["status"] == "complete"
