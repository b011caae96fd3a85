"""What every LLM run kind shares. ``RunKind`` is the shape the CLI, sweeps, the study and cluster
arrays drive; ``CheckpointKind`` is a run over the checkpoints of a series, with its whole lifecycle
written once here: plan (checks, nothing written), start (resume, replace or new), one checkpoint at a
time into ``DIR/chunks/`` in this process, in worker processes or as cluster jobs, then the table with
its derived rows. A kind holds only what differs: its config class, its own checks and resolved
inputs, how one checkpoint is measured, and its report.

Adding a run kind (docs/ARCHITECTURE.md, "Adding a run kind"):

1. a config: a frozen dataclass deriving from ``experiments.llm.config.SeriesRun``, each field a
   ``knob`` (default, help, reader): its flag, its override and its part of the identity follow;
2. a module with a ``CheckpointKind`` subclass instance: ``name``, ``CONFIG``, ``HELP``, ``measure``
   (one checkpoint's rows, model and notes) and ``report``; ``check``, ``resolve``, ``manifest_fields``,
   ``derive`` and ``units_per_checkpoint`` where the defaults do not fit;
3. ``experiments.llm.batch.register(KIND, presets)``: the ``ovt llm NAME`` command, its presets, and
   its place in sweeps, studies and cluster arrays.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import ClassVar

import pandas as pd

from experiments.llm.lifecycle import (
    finish_run,
    manifest_head,
    quiet_transformers,
    run_checkpoints,
    torch_threads,
)
from experiments.llm.series import SeriesPlan, check_device, light_checks, plan_checkpoints
from rundir import store
from rundir.lifecycle import begin_run, marks_failure, out_decision


class RunKind:
    """An ``ovt llm NAME`` run: ``plan`` checks a config (bad input: UsageError / ValueError, nothing
    written); ``execute`` runs the plan (resuming) and returns its table; ``prepare_units`` starts it
    and lists the units still to compute, each of which ``execute_unit`` computes and stores alone (a
    cluster job); ``report`` is what the command prints."""

    name: ClassVar[str]
    CONFIG: ClassVar[type]
    HELP: ClassVar[str]

    def plan(self, cfg, out: Path, quiet: bool = False):
        raise NotImplementedError

    def execute(self, plan, workers: int | None = 1) -> pd.DataFrame:
        raise NotImplementedError

    def prepare_units(self, plan) -> list:
        raise NotImplementedError

    def execute_unit(self, plan, unit) -> None:
        raise NotImplementedError

    def report(self, plan, table: pd.DataFrame) -> str:
        raise NotImplementedError

    def __reduce__(self):
        # A kind is stateless: it travels to worker processes and cluster jobs by its class's name.
        return type(self), ()


class CheckpointKind(RunKind):
    """A run over the checkpoints of a series: one unit, one chunk and one progress count of
    ``units_per_checkpoint`` per checkpoint; everything but ``measure`` and ``report`` has a default."""

    Plan: ClassVar[type] = SeriesPlan
    unit: ClassVar[str] = "step"  # what the progress bar counts

    def check(self, cfg) -> None:
        """The kind's own checks before the series is read (default: the device exists here)."""
        check_device(cfg.device)

    def resolve(self, cfg, shared: dict) -> dict:
        """The kind's own plan fields (``Plan``'s beyond ``SeriesPlan``), from the config and the
        series' checked fields ``shared``; a kind with inputs of its own reads and checks them here."""
        return {}

    def units_per_checkpoint(self, plan) -> int:
        return 1

    def measure(self, plan, index: int, revision, progress) -> tuple[pd.DataFrame, object, dict]:
        """One checkpoint: its rows, the model it loaded (for its hub commit) and its notes for the
        manifest (``run``: about the whole run), advancing ``progress`` by ``units_per_checkpoint``."""
        raise NotImplementedError

    def derive(self, table: pd.DataFrame) -> pd.DataFrame:
        """Rows derived from every checkpoint's stored rows (T*): none by default."""
        return table.iloc[0:0]

    def manifest_fields(self, plan) -> dict:
        """What the manifest records beyond the config: the estimators, the noise scale, ..."""
        return {}

    def new_manifest(self, plan) -> dict:
        return manifest_head(plan) | self.manifest_fields(plan)

    def plan(self, cfg, out: Path, quiet: bool = False) -> SeriesPlan:
        """Check every input (nothing written): the fields that need no torch first, then the series,
        then the kind's own inputs; refused when ``out`` holds a run of another config that may not be
        replaced."""
        light_checks(cfg, out)
        self.check(cfg)
        shared = plan_checkpoints(cfg, f"llm {self.name}", out, quiet)
        planned = self.Plan(**shared, **self.resolve(cfg, shared))
        out_decision(planned.out, planned.identity(), planned.defaults())
        return planned

    def start(self, plan) -> dict:
        """Print the plan's warnings, then ``begin_run`` with its identity (resume, replace or new;
        the manifest written, status running)."""
        for warning in plan.warnings:
            print(warning, file=sys.stderr)
        return begin_run(plan.out, plan.identity(), lambda: self.new_manifest(plan), defaults=plan.defaults())

    def workers(self, plan, workers: int | None) -> int | None:
        """How many processes measure checkpoints side by side (default: as asked)."""
        return workers

    def execute(self, plan, workers: int | None = 1) -> pd.DataFrame:
        """Measure every planned checkpoint not yet stored (in ``workers`` processes); write the table."""
        manifest = self.start(plan)
        with marks_failure(plan.out), torch_threads(plan.cfg.threads), quiet_transformers(plan.quiet):
            self.before(plan)
            per = self.units_per_checkpoint(plan)
            run_checkpoints(plan, manifest, self.name, self.unit, per, self.measure, self.workers(plan, workers))
            return finish_run(plan.out, len(plan.revisions), manifest, self.derive)

    def before(self, plan) -> None:
        """Set up in this process before any checkpoint is measured (default: nothing)."""

    def prepare_units(self, plan) -> list[int]:
        """Start the run and return the indices of its checkpoints not yet stored: a cluster array's jobs."""
        self.start(plan)
        stored = store.stored_chunks(plan.out)
        return [i for i in range(len(plan.revisions)) if i not in stored]

    def execute_unit(self, plan, index: int) -> None:
        """One checkpoint, measured and stored beside the others (no manifest write): a cluster job."""
        with torch_threads(plan.cfg.threads), quiet_transformers(True):
            run_checkpoints(plan, None, self.name, "checkpoint", 1, self.measure, 1, only=[index])
