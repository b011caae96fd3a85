"""LLM runs as submitit job arrays: each unit of a run (a budget of a ``separate`` series, a
checkpoint of a perturbation or fine-tuning run) one job, merged into one store.

The submitting process plans every run (bad input: exit 2, nothing submitted), starts it
(``prepare_units``: the manifest written, a series' tokenizer trained once) and submits one job per
pending unit (``execute_unit``). A job plans the run again from its config, as a rerun would, and
stores only its unit: a checkpoint folder, or a chunk and its notes (``experiments.llm.lifecycle``), by the
store's atomic writes; it never writes the manifest. Once every unit is stored, the same command
without ``--cluster`` finds nothing left to compute and writes the table (perplexities of a series,
derived rows, the notes joined to the manifest), as the theory sweeps' chunks merge
(``experiments.sweep.cluster``). With ``--cluster local`` or ``debug`` (in-process, for tests) the
submitter waits for its jobs and merges at once; with ``slurm`` it prints the job array and returns.
No scheduler of our own: submitit talks to Slurm.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from experiments.llm.config import paths

CLUSTERS = ("slurm", "local", "debug")


@dataclasses.dataclass(frozen=True)
class Cluster:
    """Where the jobs go: ``slurm`` (with its partition, minutes per job and GPUs per job), ``local``
    (subprocesses of this machine) or ``debug`` (in this process, one after another)."""

    name: str
    partition: str | None = None
    time: int | None = None  # minutes a job may run
    gpus: int | None = None

    def parameters(self, threads: int | None) -> dict:
        """submitit's parameters: a job asks for the cores its torch threads use."""
        given = {"timeout_min": self.time, "gpus_per_node": self.gpus, "slurm_partition": self.partition}
        return {"cpus_per_task": threads or 1, **{k: v for k, v in given.items() if v is not None}}


def submit(kind, cfg, plan, cluster: Cluster) -> list:
    """Start the planned run of ``kind`` (an ``experiments.llm.kinds.base.RunKind``) and submit one job
    per pending unit; returns the submitit jobs (``job.result()`` waits for one)."""
    import submitit

    units = kind.prepare_units(plan)
    if not units:
        return []
    executor = submitit.AutoExecutor(folder=plan.out / "submitit", cluster=cluster.name)
    executor.update_parameters(**cluster.parameters(plan.cfg.threads))
    n = len(units)
    portable = _absolute(cfg)
    return executor.map_array(_job, [kind] * n, [portable] * n, [str(plan.out.resolve())] * n, units)


def _job(kind, cfg, out: str, unit):
    """One job: plan the run as a rerun would (it resumes), then compute and store its unit."""
    kind.execute_unit(kind.plan(cfg, Path(out), quiet=True), unit)
    return unit


def _absolute(cfg):
    """``cfg`` with its local paths absolute: a job may start in another directory."""
    absolute = {}
    for name in paths(type(cfg)):
        value = getattr(cfg, name, None)
        if value is not None and Path(value).expanduser().exists():
            absolute[name] = str(Path(value).expanduser().resolve())
    return dataclasses.replace(cfg, **absolute)


def wait(jobs: list, out: Path) -> None:
    """Every job's end; a job's failure is a failure of the run (what the others stored is kept)."""
    from experiments.llm.lifecycle import RunFailure

    for job in jobs:
        try:
            job.result()
        except Exception as error:  # submitit wraps the job's own exception
            raise RunFailure(
                f"{out}: cluster job {job.job_id} failed: {str(error).strip().splitlines()[-1]}"
            ) from error


def announce(jobs: list, out: Path, command: str) -> None:
    """What the user needs after a Slurm submission: the jobs, and how to merge their results."""
    ids = ", ".join(str(job.job_id) for job in jobs) or "none (every unit is stored)"
    print(f"{out}: submitted {len(jobs)} job(s): {ids}", file=sys.stderr)
    print(f"when they have finished, run `{command}` without --cluster to write the table", file=sys.stderr)
