"""The LLM run types and how a list of runs is executed: one after another, or side by side in worker
processes (``ovt llm KIND`` sweeps, ``ovt llm study``).

Each run type is a module with ``CONFIG`` (its ``experiments.llm.config`` class), ``HELP``, ``plan(cfg, out,
quiet)`` (every check, nothing written), ``execute(plan, workers)`` -> table, ``report(plan,
table)``, and for cluster arrays ``prepare_units(plan)`` and ``execute_unit(plan, unit)``
(``experiments.llm.cluster``).
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from pathlib import Path

import pandas as pd

from experiments.llm import config as llm_config
from experiments.llm.kinds import curvature as llm_curvature_cli
from experiments.llm.kinds import finetune as llm_finetune_cli
from experiments.llm.kinds import perturb as llm_perturb_cli
from experiments.llm.kinds import pretrain as llm_pretrain_cli
from experiments.llm.lifecycle import failures_while_running

RUNS = {
    "pretrain": llm_pretrain_cli,
    "perturb": llm_perturb_cli,
    "finetune": llm_finetune_cli,
    "curvature": llm_curvature_cli,
}
BY_CONFIG = {module.CONFIG: module for module in RUNS.values()}


def run_config(cfg: llm_config.RunConfig, out: Path, quiet: bool = False, workers: int | None = None) -> pd.DataFrame:
    """Plan (bad input: UsageError / ValueError, nothing written) and execute one run of any type
    into ``out`` (a failure while running: RunFailure), its units in ``workers`` processes (default:
    the machine's cores); returns its table."""
    module = BY_CONFIG[type(cfg)]
    planned = module.plan(cfg, out, quiet)
    with failures_while_running():  # the run directory exists now: whatever fails is a failure
        return module.execute(planned, workers)


def run_cells(runs: list[tuple[object, object]], workers: int | None, quiet: bool) -> list[pd.DataFrame]:
    """Every planned run of ``runs`` ((module, plan) pairs, of one type or several); returns their
    tables in the order given. With ``worker_count(workers, len(runs))`` processes > 1 they go side by
    side, one run a process at a time, in the order given (put the longest first), their own progress
    off and one bar here counting them; else one after another here, each with ``workers`` for its
    own units (a single run's budgets or checkpoints)."""
    from concurrent.futures import as_completed

    from tqdm import tqdm

    from llm_validation.parallel import process_pool, worker_count

    processes = worker_count(workers, len(runs))
    if processes == 1:
        return [module.execute(plan, workers) for module, plan in runs]
    threads = max(plan.threads or 1 for _, plan in runs)
    bar = tqdm(total=len(runs), unit="run", disable=quiet, file=sys.stderr)
    with process_pool(processes, threads, quiet) as pool, bar:
        futures = {pool.submit(_execute, module.__name__, plan): i for i, (module, plan) in enumerate(runs)}
        tables = [None] * len(runs)
        for future in as_completed(futures):  # an exception here: the pool stops its workers (WorkerPool)
            tables[futures[future]] = future.result()
            bar.update()
    return tables


def _execute(module_name: str, plan) -> pd.DataFrame:
    """One run in a worker process: by its module's name, quietly, its units in this one process."""
    module = importlib.import_module(module_name)
    return module.execute(dataclasses.replace(plan, quiet=True), 1)
