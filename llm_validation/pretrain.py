"""Controlled mini pre-training: OLMo-architecture models trained from scratch on an offline corpus.

A series is one model size, one corpus and one seed trained to several token budgets, in one of two
designs (``mode``):

- ``separate``: every budget its own run, linear warmup then cosine decay to exactly zero at that
  run's last step. This is the paper's controlled design: a checkpoint is a finished, annealed model.
- ``single``: one run to the largest budget along one schedule, saving a checkpoint on reaching each
  smaller budget. This is how public checkpoint series are made; intermediate checkpoints are not
  annealed (the confound of arXiv 2604.13627).
- ``wsd``: warmup-stable-decay. One trunk at constant lr after warmup (the smallest budget's), and
  for each budget B a branch from the trunk's state at B - round(decay_fraction x B) steps that decays
  linearly to exactly zero at B (``wsd_learning_rate``). Every checkpoint is annealed, as in
  ``separate``, for the trunk's steps plus the branches' instead of the sum of every budget (a
  doubling series of 6 budgets with the default 20%: ~1.2x the largest budget instead of ~2x). The
  trunk leaves a start state ``.branch-<revision>.pt`` per branch, removed when the branch is done.

All runs of a series share the initialisation, the tokenizer and the data order, so the budget (and
in ``separate`` mode its schedule) is the only difference between checkpoints.

The series folder (its layout: ``checkpoints``, which writes and reads it) holds ``series.json``,
``tokenizer/``, one checkpoint folder per budget named ``format_revision(step, tokens)``, and while
a run is unfinished its resume state ``.resume-<run>.pt``. Every file is written to a temporary name
and renamed into place, so a killed run leaves either the old or the new version; started again, it
continues from the last resume state and ends with the same weights as an uninterrupted run. The
series' config, ``PretrainConfig``, lives in ``pretrain_config`` (which imports no torch) and is
importable from here too.
"""

from __future__ import annotations

import functools
import math
import os
import sys
from collections.abc import Collection
from concurrent.futures import FIRST_COMPLETED, wait
from pathlib import Path

import numpy as np
import torch
import transformers
from tqdm import tqdm

from llm_validation import checkpoints
from llm_validation.models import build_model, count_parameters, olmo_config
from llm_validation.parallel import process_pool
from llm_validation.pretrain_config import PretrainConfig, Target, check_repetition, config_record
from llm_validation.pretrain_data import TrainingData, batch_indices, prepare_data
from llm_validation.series_runs import TRUNK, Run, _runs
from rundir.atomic import replaced

LOSS_CURVE_POINTS = 256


def pretrain(
    config: PretrainConfig,
    out_dir: str | os.PathLike,
    *,
    progress: bool = True,
    resume_every: int = 1000,
    max_steps_this_call: int | None = None,
    threads: int | None = None,
    workers: int = 1,
    only: Collection[str] | None = None,
) -> list[Path]:
    """Train the series ``config`` into ``out_dir``; returns the finished checkpoint folders.

    Finished checkpoints are skipped and an unfinished run resumes from its last state, saved every
    ``resume_every`` steps. ``max_steps_this_call`` stops after that many updates (saving the resume
    state), as a kill would: the next call continues. ``progress`` shows tokens/s on stderr.
    ``threads`` sets torch's intra-op threads for the call: models this small gain little from a
    second thread, and on a busy machine OpenMP spin-waiting makes two threads several times slower
    than one. Bitwise reproducibility holds for a fixed thread count (recorded per checkpoint).

    ``workers`` > 1 trains the runs that do not depend on each other in that many processes of
    ``threads`` (default 1) threads each (``_train_parallel``), with the same checkpoints as one
    process with as many threads. ``only`` trains just those budgets (revision names) of a
    ``separate`` series: one job of a cluster array (``units``).
    """
    if resume_every < 1 or (max_steps_this_call is not None and max_steps_this_call < 0):
        raise ValueError(f"resume_every={resume_every} must be >= 1 and max_steps_this_call={max_steps_this_call} >= 0")
    if workers < 1 or (workers > 1 and max_steps_this_call is not None):
        raise ValueError(f"workers={workers} must be >= 1, and 1 where max_steps_this_call is given")
    if only is not None and config.mode != "separate":
        raise ValueError(
            f"only={sorted(only)}: a {config.mode} series is one unit; only a separate one trains by budget"
        )
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _pretrain(
            config, Path(out_dir), progress, resume_every, max_steps_this_call, workers, threads or 1, only
        )
    finally:
        torch.set_num_threads(previous_threads)


def units(config: PretrainConfig) -> list[str]:
    """The parts of a series that train independently of each other: every budget of a ``separate``
    series (its revision name, for ``only``), else the one series (``[]``: no ``only`` to give)."""
    return [t.revision for t in config.targets()] if config.mode == "separate" else []


def prepare_series(config: PretrainConfig, out_dir: str | os.PathLike) -> TrainingData:
    """Claim ``out_dir`` for the series and store its tokenizer (trained once): what every run of the
    series reads first, done before its runs are spread over processes or cluster jobs."""
    out_dir = Path(out_dir)
    checkpoints.claim_series(out_dir, config, _versions())
    return _series_data(config, out_dir)


def _pretrain(
    config: PretrainConfig,
    out_dir: Path,
    progress: bool,
    resume_every: int,
    max_steps_this_call: int | None,
    workers: int,
    threads: int,  # each worker's, where workers > 1
    only: Collection[str] | None,
) -> list[Path]:
    checkpoints.claim_series(out_dir, config, _versions())
    targets = config.targets()
    saved = [*targets, *config.trunk_targets()]
    pending = [
        t for t in saved if not checkpoints.is_saved(out_dir, t.revision) and (only is None or t.revision in only)
    ]
    if pending:
        data = _series_data(config, out_dir)
        check_repetition(config, data.description["train_tokens"])
        allowance = math.inf if max_steps_this_call is None else max_steps_this_call
        runs = _runs(config, targets, pending, out_dir)
        if workers > 1 and len(runs) > 1:
            _train_parallel(config, out_dir, runs, min(workers, len(runs)), threads, resume_every, progress)
        else:
            for run in runs:
                allowance = _train(config, data, out_dir, run, allowance, resume_every, progress)
                if allowance <= 0:
                    break
    return [out_dir / t.revision for t in saved if checkpoints.is_saved(out_dir, t.revision)]


def _train_parallel(
    config: PretrainConfig,
    out_dir: Path,
    runs: list[Run],
    workers: int,
    threads: int,
    resume_every: int,
    progress: bool,
) -> None:
    """Every run of ``runs`` in ``workers`` processes, each run as soon as its start state exists.

    Runs of a ``separate`` series are independent. A WSD trunk goes in segments that end at its
    snapshot steps (``_train(until=...)``), so that each branch starts while the trunk goes on:
    the wall time approaches the trunk's plus the last branch. Every segment resumes from the state
    the last one saved, which gives the weights of an uninterrupted run bit for bit.
    """
    trunk = next((run for run in runs if run.name == TRUNK), None)
    stops = sorted({step for step, _ in trunk.snapshots} | {trunk.total_steps}) if trunk else []
    # Longest first: the last run to start is a short one, so neither process idles long at the end.
    waiting = sorted((run for run in runs if run is not trunk), key=lambda run: -run.total_steps)
    bar = tqdm(
        total=len(runs), unit="run", desc=f"{config.preset} {config.mode}", disable=not progress, file=sys.stderr
    )
    with process_pool(workers, threads, not progress) as pool, bar:
        running = {}
        if trunk:
            running[pool.submit(_train_unit, config, out_dir, trunk, resume_every, stops[0])] = (trunk, stops[0])
        while waiting or running:
            ready = [run for run in waiting if _can_start(run, out_dir)]
            for run in ready:
                waiting.remove(run)
                running[pool.submit(_train_unit, config, out_dir, run, resume_every, None)] = (run, None)
            if not running:
                raise RuntimeError(f"{out_dir}: runs {[r.name for r in waiting]} wait for start states no run makes")
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                run, until = running.pop(future)
                future.result()  # a worker's exception is raised here
                if run is trunk and until < trunk.total_steps:
                    after = stops[stops.index(until) + 1]
                    running[pool.submit(_train_unit, config, out_dir, trunk, resume_every, after)] = (trunk, after)
                else:
                    bar.update()


def _can_start(run: Run, out_dir: Path) -> bool:
    """A run starts from the initialisation, its own resume state, or a start state that exists."""
    return run.start is None or run.start.exists() or (out_dir / f".resume-{run.name}.pt").exists()


def _train_unit(config: PretrainConfig, out_dir: Path, run: Run, resume_every: int, until: int | None) -> None:
    """``_train`` in a worker process, on the series' data (read once per process)."""
    _train(config, _worker_data(config, str(out_dir)), out_dir, run, math.inf, resume_every, False, until)


@functools.lru_cache(maxsize=1)
def _worker_data(config: PretrainConfig, out_dir: str) -> TrainingData:
    return prepare_data(config, checkpoints.saved_tokenizer(Path(out_dir)))


def _series_data(config: PretrainConfig, out_dir: Path) -> TrainingData:
    """The tokenizer is trained once and stored; later calls load it so resumed runs see the same ids."""
    tokenizer = checkpoints.saved_tokenizer(out_dir)
    if tokenizer is not None:
        return prepare_data(config, tokenizer)
    data = prepare_data(config)
    checkpoints.save_tokenizer(out_dir, data.tokenizer)
    return data


def _train(
    config: PretrainConfig,
    data: TrainingData,
    out_dir: Path,
    run: Run,
    allowance: float,
    resume_every: int,
    progress: bool,
    until: int | None = None,
) -> float:
    """One run (``Run``), saving its checkpoints and snapshots on the way; returns the unused allowance.

    ``until`` stops the run at that step with its resume state saved (a segment of a WSD trunk,
    whose snapshot there starts a branch in another process); the next call continues it. The resume
    state needs no scheduler: the learning rate is a function of the step.
    """
    model = build_model(olmo_config(config.preset, vocab_size=config.model_vocab_size), config.seed).train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
    )
    resume_path = out_dir / f".resume-{run.name}.pt"
    step, losses = 0, []
    torch.manual_seed(config.seed)
    start = resume_path if resume_path.exists() else run.start
    if start is not None:
        state = torch.load(start)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        step, losses = state["step"], list(state["losses"])
    save_at = {target.step: target for target in run.saves}
    snapshots = dict(run.snapshots)
    n_sequences = len(data.sequences)
    tokens_per_step = config.tokens_per_step
    bar = tqdm(
        total=run.total_steps * tokens_per_step,
        initial=step * tokens_per_step,
        unit="tok",
        unit_scale=True,
        desc=f"{config.preset} {run.name}",
        disable=not progress,
        file=sys.stderr,
    )
    stop = run.total_steps if until is None else min(until, run.total_steps)
    with bar:
        if step in snapshots and not snapshots[step].exists():
            _save_resume(snapshots[step], model, optimizer, step, losses, config)
        while step < stop:
            if allowance <= 0:
                _save_resume(resume_path, model, optimizer, step, losses, config)
                return allowance
            batch = data.sequences[batch_indices(step, config.batch_size, n_sequences, config.seed)]
            for group in optimizer.param_groups:
                group["lr"] = run.lr_at(step)
            loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            if config.sam_rho > 0:
                sam_gradient(model, batch, config.sam_rho)
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            step += 1
            allowance -= 1
            bar.update(tokens_per_step)
            if step % 50 == 0:
                bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
            if step in snapshots and not snapshots[step].exists():
                _save_resume(snapshots[step], model, optimizer, step, losses, config)
            if step in save_at and not checkpoints.is_saved(out_dir, save_at[step].revision):
                record = _checkpoint_record(config, data, model, save_at[step], run, losses)
                checkpoints.save_checkpoint(out_dir, save_at[step].revision, model, data.tokenizer, record)
            if step % resume_every == 0 and step < run.total_steps:
                _save_resume(resume_path, model, optimizer, step, losses, config)
    if step < run.total_steps:  # the end of a segment: the next one resumes here
        if step % resume_every:
            _save_resume(resume_path, model, optimizer, step, losses, config)
        return allowance
    resume_path.unlink(missing_ok=True)
    if run.start is not None:
        run.start.unlink(missing_ok=True)  # a finished branch needs its start state no more
    return allowance


def sam_gradient(model, batch: torch.Tensor, rho: float) -> None:
    """Replace the gradient g = grad L(w) held in ``model`` by SAM's, grad L(w + rho g / ||g||), on the same
    ``batch`` (Foret et al. 2021): the update then descends the loss at the worst point of a ball of
    radius ``rho`` around w, which favours flat minima. ||g|| is the global norm over every parameter;
    the weights are restored bit for bit (copied back, not the perturbation subtracted) before the caller's clip and
    step, so clipping and AdamW act on the SAM gradient as they would on a plain one. Costs a second
    forward and backward pass per step; stateless, so a resumed run needs nothing more.

    Parameters
    ----------
    model : transformers causal LM
        The model, its ``.grad`` holding grad L(w) of ``batch``'s loss.
    batch : tensor, shape (batch, seq_len)
        The step's token ids (inputs and labels).
    rho : float
        The radius of the ascent step (> 0), in the parameters' units.
    """
    params = [p for p in model.parameters() if p.grad is not None]
    grads = [p.grad for p in params]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    if not torch.isfinite(norm) or norm == 0:
        return  # no direction to climb (or a non-finite gradient the caller's checks see): plain step
    with torch.no_grad():
        saved = [p.detach().clone() for p in params]
        torch._foreach_add_(params, torch._foreach_mul(grads, rho / norm))
    model.zero_grad(set_to_none=False)
    model(input_ids=batch, labels=batch).loss.backward()
    with torch.no_grad():
        for p, w in zip(params, saved):
            p.copy_(w)


def _save_resume(path: Path, model, optimizer, step: int, losses: list[float], config: PretrainConfig) -> None:
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": torch.get_rng_state(),
        "step": step,
        # The data position is a function of the step (see batch_indices); stored for inspection.
        "sequences_read": step * config.batch_size,
        "losses": losses,
    }
    with replaced(path) as tmp:
        torch.save(state, tmp)


def _checkpoint_record(
    config: PretrainConfig, data: TrainingData, model, target: Target, run: Run, losses: list[float]
) -> dict:
    return {
        "revision": target.revision,
        "step": target.step,
        "tokens": target.tokens,
        "budget": target.budget,
        "mode": config.mode,
        "schedule": {**run.schedule, "lr_at_step": run.lr_at(target.step)},  # lr_at_step: 0 where it ends
        "seed": config.seed,
        "preset": config.preset,
        "parameters": count_parameters(model),
        "tokens_per_parameter": target.tokens / count_parameters(model),
        "epochs": target.tokens / data.description["train_tokens"],
        "data": data.description,
        "train_loss": _loss_curve(losses),
        "config": config_record(config),
        "versions": _versions(),
    }


def _loss_curve(losses: list[float]) -> dict:
    """Mean training loss over windows of ``every`` steps, at most ``LOSS_CURVE_POINTS`` of them."""
    every = max(1, math.ceil(len(losses) / LOSS_CURVE_POINTS))
    means = [float(np.mean(losses[i : i + every])) for i in range(0, len(losses), every)]
    return {"every": every, "loss": means}


def _versions() -> dict:
    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": sys.version.split()[0],
        "torch_threads": torch.get_num_threads(),
    }
