"""Cluster execution through submitit: each chunk of a sweep is one element of a job array.

Every job writes only its own ``chunks/NNNNN.parquet``; once all are stored, ``run_theory`` (any later
call, e.g. ``ovt theory PRESET --out DIR`` again) merges them into ``metrics.parquet``. No scheduler of
our own: submitit talks to Slurm (``cluster="slurm"``), runs locally (``"local"``) or in-process
(``"debug"``, used by the tests).
"""

from __future__ import annotations

from pathlib import Path

from experiments.sweep.config import TheoryConfig
from experiments.sweep.runner import chunk_count, run_theory


def _run_one(cfg: TheoryConfig, preset: str, out: str, index: int) -> int:
    run_theory(cfg, preset, Path(out), quiet=True, only_chunks=[index])
    return index


def submit(cfg: TheoryConfig, preset: str, out: Path, cluster: str = "slurm", **slurm_parameters):
    """Submit one job per chunk; returns the submitit jobs (``job.result()`` waits for one)."""
    import submitit

    executor = submitit.AutoExecutor(folder=Path(out) / "submitit", cluster=cluster)
    if slurm_parameters:
        executor.update_parameters(**slurm_parameters)
    indices = list(range(chunk_count(cfg)))
    n = len(indices)
    return executor.map_array(_run_one, [cfg] * n, [preset] * n, [str(out)] * n, indices)
