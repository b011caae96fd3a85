"""The registry of LLM run kinds, and how a list of runs is executed: one after another, or side by
side in worker processes (``ovt llm KIND`` sweeps, ``ovt llm study``).

Each kind is an ``experiments.llm.kinds.base.RunKind``: ``CONFIG`` (its ``experiments.llm.config``
class), ``HELP``, ``plan(cfg, out, quiet)`` (every check, nothing written), ``execute(plan,
workers)`` -> table, ``report(plan, table)``, and for cluster arrays ``prepare_units(plan)`` and
``execute_unit(plan, unit)`` (``experiments.llm.cluster``). ``register`` adds one, with its presets.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pandas as pd

from experiments.llm import config as llm_config
from experiments.llm import presets as llm_presets
from experiments.llm.kinds import curvature, finetune, multimodal, perturb, pretrain, quantize
from experiments.llm.kinds.base import RunKind
from experiments.llm.lifecycle import failures_while_running

RUNS: dict[str, RunKind] = {
    kind.name: kind
    for kind in (pretrain.KIND, perturb.KIND, finetune.KIND, curvature.KIND, quantize.KIND, multimodal.KIND)
}
BY_CONFIG: dict[type, RunKind] = {kind.CONFIG: kind for kind in RUNS.values()}


def register(kind: RunKind, presets: dict[str, llm_config.RunConfig] | None = None) -> None:
    """Add a run kind: the command ``ovt llm NAME`` (parsers built after this call), its presets
    (``--preset``), and its config's place in sweeps and studies. A name or config taken is refused."""
    if kind.name in RUNS or kind.CONFIG in BY_CONFIG:
        raise ValueError(f"run kind {kind.name!r} (config {kind.CONFIG.__name__}) is registered already")
    RUNS[kind.name] = kind
    BY_CONFIG[kind.CONFIG] = kind
    llm_presets.PRESETS[kind.name] = dict(presets or {})


def run_config(cfg: llm_config.RunConfig, out: Path, quiet: bool = False, workers: int | None = None) -> pd.DataFrame:
    """Plan (bad input: UsageError / ValueError, nothing written) and execute one run of any type
    into ``out`` (a failure while running: RunFailure), its units in ``workers`` processes (default:
    the machine's cores); returns its table."""
    kind = BY_CONFIG[type(cfg)]
    planned = kind.plan(cfg, out, quiet)
    with failures_while_running():  # the run directory exists now: whatever fails is a failure
        return kind.execute(planned, workers)


def run_cells(runs: list[tuple[object, object]], workers: int | None, quiet: bool) -> list[pd.DataFrame]:
    """Every planned run of ``runs`` ((kind, plan) pairs, of one type or several); returns their
    tables in the order given. With ``worker_count(workers, len(runs))`` processes > 1 they go side by
    side, one run a process at a time, in the order given (put the longest first), their own progress
    off and one bar here counting them; else one after another here, each with ``workers`` for its
    own units (a single run's budgets or checkpoints)."""
    from concurrent.futures import as_completed

    from tqdm import tqdm

    from llm_validation.parallel import process_pool, worker_count

    processes = worker_count(workers, len(runs))
    if processes == 1:
        return [kind.execute(plan, workers) for kind, plan in runs]
    threads = max(plan.cfg.threads or 1 for _, plan in runs)
    bar = tqdm(total=len(runs), unit="run", disable=quiet, file=sys.stderr)
    with process_pool(processes, threads, quiet) as pool, bar:
        futures = {pool.submit(_execute, kind, plan): i for i, (kind, plan) in enumerate(runs)}
        tables = [None] * len(runs)
        for future in as_completed(futures):  # an exception here: the pool stops its workers (WorkerPool)
            tables[futures[future]] = future.result()
            bar.update()
    return tables


def _execute(kind: RunKind, plan) -> pd.DataFrame:
    """One run in a worker process, quietly, its units in this one process."""
    return kind.execute(dataclasses.replace(plan, quiet=True), 1)
