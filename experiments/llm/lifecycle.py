"""The run of an ``ovt llm`` command over a series, after its plan: start, one checkpoint at a time
into ``DIR/chunks/``, finish with the derived rows; and what a run shares with ``pretrain`` (the
failure type, torch threads, transformers' progress bars).

The run directory's lifecycle is ``rundir.lifecycle``'s (``out_decision`` in the plan, ``begin_run``
and ``marks_failure`` around the run, driven by ``experiments.llm.kinds.base.CheckpointKind``):
anything that goes wrong while running is a failure (exit 1) that marks the manifest ``failed`` with
the reason; finished checkpoints are kept under ``DIR/chunks/`` and the same command resumes after
them, while another config may replace a failed run (never a complete one).
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from concurrent.futures import as_completed
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from rundir import store
from rundir.lifecycle import complete_run, git_commit, now, path_from_run, versions
from rundir.tokens import human_tokens

if TYPE_CHECKING:
    from experiments.llm.series import SeriesPlan


class RunFailure(RuntimeError):
    """A failure after the run directory was created (exit 1; the stored checkpoints are kept)."""


@contextlib.contextmanager
def failures_while_running():
    """Past the plan, the run directory exists: a ValueError raised from here on is a failure while
    running (``RunFailure``, exit 1), not bad input (exit 2)."""
    try:
        yield
    except ValueError as error:
        raise RunFailure(str(error)) from error


@contextlib.contextmanager
def quiet_transformers(quiet: bool):
    """transformers' own progress bars off while ``quiet`` (restored after)."""
    import transformers

    bars_were_on = transformers.utils.logging.is_progress_bar_enabled()
    if quiet:
        transformers.utils.logging.disable_progress_bar()
    try:
        yield
    finally:
        if quiet and bars_were_on:
            transformers.utils.logging.enable_progress_bar()


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """torch's intra-op threads set to ``threads`` for the block (None: 1, what every worker process
    has, so a run's numbers do not depend on ``--workers``)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads or 1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def revision_commit(plan: SeriesPlan, revision: str, model=None) -> str | None:
    """The hub commit a revision resolved to (the hub cache's ``refs/REVISION``); None for folders."""
    if plan.is_folder:
        return None
    from huggingface_hub import constants

    ref = Path(constants.HF_HUB_CACHE) / f"models--{plan.source.replace('/', '--')}" / "refs" / revision
    if ref.is_file():
        return ref.read_text().strip() or None
    return getattr(getattr(model, "config", None), "_commit_hash", None)


def revision_entries(plan, **extra) -> list[dict]:
    """The manifest's record of every resolved revision (step, tokens, what chose it, hub commit)."""
    return [
        {
            "name": r.name,
            "step": r.step,
            "tokens": r.tokens,
            "stage": r.stage,
            "requested_tokens": plan.requested.get(r.name),
            "commit": revision_commit(plan, r.name),
            **extra,
        }
        for r in plan.revisions
    ]


def manifest_head(plan: SeriesPlan, revision_extra: dict | None = None, eval_extra: dict | None = None) -> dict:
    """The manifest fields every checkpoint-series command shares: what ran, on which model and
    revisions, scored on which held-out token set, with which versions, since when."""

    n_blocks, seq_len = plan.blocks.shape
    return {
        "command": plan.command,
        "source": "llm",
        "setup": plan.setup,
        "run_config": plan.run_config,
        "config": plan.config(),
        "model": plan.recorded_source,  # a folder relative to the run directory: no machine path
        "model_source": plan.recorded_source,
        "model_kind": "folder" if plan.is_folder else "hub",
        "revisions": revision_entries(plan, **(revision_extra or {})),
        "eval": {
            "path": path_from_run(plan.eval_path, plan.out),
            "sha256": plan.eval_sha256,
            "n_blocks": int(n_blocks),
            "seq_len": int(seq_len),
            "n_tokens": int(n_blocks * (seq_len - 1)),
            **(eval_extra or {}),
            "tokenization": f"identical token ids under the tokenizers of all {len(plan.revisions)} checkpoints; "
            "documents EOS-separated and packed, remainder dropped",
        },
        "versions": versions(),
        "git_commit": git_commit(),
        "started": now(),
        "status": "running",
    }


def run_checkpoints(
    plan: SeriesPlan,
    manifest: dict | None,
    name: str,
    unit: str,
    per_checkpoint: int,
    measure,
    workers: int | None = 1,
    only: list[int] | None = None,
) -> None:
    """Every planned checkpoint not yet stored under ``plan.out`` (or just those of ``only``):
    ``measure(plan, index, revision, progress) -> (rows, model, notes)`` loads and measures one,
    advancing ``progress`` by ``per_checkpoint`` units; its rows become the checkpoint's chunk and
    ``notes`` join its manifest entry, with the hub commit it resolved to (``store_checkpoint``).

    In this process one model is in memory at a time; with ``workers`` > 1 (None: the machine's
    cores) that many processes of ``plan.threads`` (default 1) threads each measure checkpoints
    side by side and this one stores them as they come. ``manifest`` None: a cluster job's share,
    which writes its chunks and leaves the manifest to the run (``finish_run`` gathers the notes). A
    checkpoint that fails to load or measure (ValueError) is a failure while running, naming what is
    stored."""
    from tqdm import tqdm

    from llm_validation.parallel import process_pool, worker_count

    stored = store.stored_chunks(plan.out)
    todo = [(i, r) for i, r in enumerate(plan.revisions) if i not in stored and (only is None or i in only)]
    processes = worker_count(workers, len(todo))
    bar = dict(desc=f"{name} {plan.setup}", unit=unit, disable=plan.quiet, file=sys.stderr)
    with tqdm(total=len(todo) * per_checkpoint, **bar) as progress:
        if processes == 1:
            for index, revision in todo:
                progress.set_postfix_str(revision.name)
                with _failure_names(plan, revision):
                    rows, notes = measured(measure, plan, index, revision, progress)
                store_checkpoint(plan, manifest, index, rows, notes)
            return
        with process_pool(processes, plan.cfg.threads or 1, plan.quiet) as pool:
            futures = {pool.submit(measured, measure, plan, i, r): (i, r) for i, r in todo}
            for future in as_completed(futures):  # an exception here: the pool stops its workers (WorkerPool)
                index, revision = futures[future]
                with _failure_names(plan, revision):
                    rows, notes = future.result()
                store_checkpoint(plan, manifest, index, rows, notes)
                progress.update(per_checkpoint)


def measured(measure, plan: SeriesPlan, index: int, revision, progress=None) -> tuple[pd.DataFrame, dict]:
    """``measure`` one checkpoint (in this process or a worker): its rows and its notes, with the hub
    commit it resolved to."""
    rows, model, notes = measure(plan, index, revision, progress or _NoProgress())
    return rows, {**notes, "commit": revision_commit(plan, revision.name, model)}


class _NoProgress:
    """The progress bar of a checkpoint measured in a worker process (the caller counts it)."""

    def update(self, n: int = 1) -> None:
        pass


@contextlib.contextmanager
def _failure_names(plan: SeriesPlan, revision):
    try:
        yield
    except ValueError as error:  # bad checkpoint files found mid-run: a failure, not bad input
        raise RunFailure(
            f"{plan.cfg.model}@{revision.name}: {error}; {len(store.stored_chunks(plan.out))} "
            f"checkpoint(s) stored in {plan.out}; rerun to resume"
        ) from error


def notes_path(out: Path, index: int) -> Path:
    """``chunks/NNNNN.json``: what a checkpoint's measurement noted, beside its rows."""
    return store.chunk_path(out, index).with_suffix(".json")


def store_checkpoint(plan: SeriesPlan, manifest: dict | None, index: int, rows: pd.DataFrame, notes: dict) -> None:
    """A measured checkpoint, stored: its notes, then its rows (whose chunk marks it done), then, in
    the process that runs the whole command, its manifest entry."""
    store.write_json(notes_path(plan.out, index), notes)
    store.write_table(store.chunk_path(plan.out, index), rows)
    if manifest is not None:
        _note(manifest, index, notes)
        store.write_json(plan.out / store.MANIFEST, manifest)


def _note(manifest: dict, index: int, notes: dict) -> None:
    """Join a checkpoint's notes to its manifest entry; ``run`` notes are about the whole run (top level)."""
    notes = dict(notes)
    manifest.update(notes.pop("run", {}))
    entry = manifest["revisions"][index]
    entry["commit"] = entry.get("commit") or notes.pop("commit", None)
    notes.pop("commit", None)
    entry.update(notes)


def finish_run(out: Path, n_checkpoints: int, manifest: dict, derive) -> pd.DataFrame:
    """Write ``metrics.parquet`` = every checkpoint's stored chunk plus ``derive(chunks)``, and mark the
    manifest complete, every checkpoint's notes joined (also those a worker or a cluster job stored).
    Derived rows come from the stored chunks alone, so a resumed run ends with the same table as an
    uninterrupted one."""

    for index in range(n_checkpoints):
        path = notes_path(out, index)
        if path.is_file():
            _note(manifest, index, json.loads(path.read_text()))
    table = pd.concat([pd.read_parquet(store.chunk_path(out, i)) for i in range(n_checkpoints)], ignore_index=True)
    return complete_run(out, manifest, pd.concat([table, derive(table)], ignore_index=True))


NO_T_STAR = {  # what a curve without an interior T* shows, by its ``t_star_kind``
    "below": "below the range",
    "above": "above the range",
    "flat": "flat",
    "none": "no curve",
}


def t_star_line(labels, values, kinds=None) -> str:
    """``inflection T* (tokens) - gamma=2: 1.78M, gamma=4: below the range``: one curve's T* each,
    and the kind of those without one (``none in range`` where the kind is not stored)."""
    values = list(values)
    kinds = list(kinds) if kinds is not None else [""] * len(values)
    shown = (
        f"{label}: {human_tokens(value) if math.isfinite(value) else NO_T_STAR.get(kind, 'none in range')}"
        for label, value, kind in zip(labels, values, kinds)
    )
    return f"inflection T* (tokens) - {', '.join(shown)}"


def checkpoint_summary(rows: pd.DataFrame, columns: list, inflections: pd.DataFrame | None = None, labels=()) -> str:
    """A run's printed summary: per checkpoint (ordered by pre-training tokens) its token count and
    ``columns`` (Series indexed by checkpoint), then the T* line of the ``inflections`` rows, each
    named by ``labels``."""
    position = rows.groupby("checkpoint")["pretrain_time"].first().sort_values()
    frame = pd.concat([position.map(human_tokens).rename("tokens"), *columns], axis=1).loc[position.index]
    text = frame.to_string(float_format=lambda v: f"{v:.4g}")
    if inflections is None:
        return text
    return text + "\n" + t_star_line(labels, inflections.value, inflections.get("t_star_kind"))
