"""Independent units of work in worker processes, one torch thread each.

A tiny model leaves cores idle: a 20k-parameter OLMo trains at the same speed with one intra-op
thread as with two, so two cores do twice the work only as two processes. ``process_pool`` starts
them with ``spawn`` (a forked child of a process whose OpenMP pool has run can hang) and sets each
worker's torch threads once. Workers return results or write their own files (atomically); whoever
merges them is the caller, so a unit's numbers do not depend on which process computed it.

Bitwise reproducibility holds for a fixed number of threads per process: a unit computed by a
worker with one thread equals the same unit computed in-process with one thread.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

WORKERS_ENV = "OVT_WORKERS"  # the default worker count where set (a shared machine, a test suite)


def default_workers() -> int:
    """``$OVT_WORKERS`` where set, else the cores this process may use."""
    given = os.environ.get(WORKERS_ENV)
    if given:
        try:
            count = int(given)
        except ValueError:
            count = 0
        if count < 1:
            raise ValueError(f"{WORKERS_ENV}={given!r} must be a whole number >= 1")
        return count
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def worker_count(workers: int | None, units: int) -> int:
    """The processes to use for ``units`` independent units: ``workers`` (default ``default_workers``),
    at most one per unit, at least one."""
    return max(1, min(workers or default_workers(), units))


def _start_worker(threads: int, quiet: bool) -> None:
    import torch

    torch.set_num_threads(threads)
    if quiet:  # transformers' own bars (loading weights) are the parent's to show or not
        import transformers

        transformers.utils.logging.disable_progress_bar()


class WorkerPool(ProcessPoolExecutor):
    """A process pool whose workers are terminated, not awaited, when its block ends in an exception
    (a failed unit, Ctrl-C, SIGTERM): the caller discards what they would compute, and a worker left
    running would outlive its parent. Workers write their files atomically, so a killed one leaves
    nothing half-written."""

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            for process in list((self._processes or {}).values()):
                process.terminate()
            self.shutdown(wait=False, cancel_futures=True)
        return super().__exit__(exc_type, exc, tb)


def process_pool(workers: int, threads: int = 1, quiet: bool = False) -> WorkerPool:
    """``workers`` spawned processes with ``threads`` torch threads each; ``quiet``: no progress bars
    of their own."""
    return WorkerPool(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(threads, quiet),
    )
