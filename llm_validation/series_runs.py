"""The runs that realise a checkpoint series: one warmup-cosine run per budget (separate), one run
saving every budget (single), or a constant-lr trunk with one decay branch per budget (wsd); and the
updates each mode costs.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path

from llm_validation.pretrain_config import PretrainConfig, Target
from llm_validation.schedules import learning_rate, warmup_steps, wsd_learning_rate

TRUNK = "wsd-trunk"  # the run name of a WSD series' constant-lr trunk


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run of a series: ``total_steps`` updates at ``lr_at(step)``, saving ``saves`` (checkpoints)
    and ``snapshots`` (step -> path: a WSD branch's start state) on the way, from the series'
    initialisation or, when given, from the snapshot ``start``."""

    name: str
    total_steps: int
    saves: tuple[Target, ...]
    lr_at: Callable[[int], float]
    schedule: dict  # what checkpoint.json records of the schedule
    snapshots: tuple[tuple[int, Path], ...] = ()
    start: Path | None = None


def _cosine_run(config: PretrainConfig, name: str, saves: tuple[Target, ...], total: int) -> Run:
    """A run of ``total`` updates on one warmup + cosine schedule, saving ``saves`` on the way."""
    schedule = dict(peak=config.lr, warmup_steps=warmup_steps(config, total), total_steps=total)
    lr_at = functools.partial(learning_rate, **schedule)
    return Run(name, total, saves, lr_at, {"kind": "linear warmup, cosine decay to 0 at total_steps", **schedule})


def _runs(config: PretrainConfig, targets: list[Target], pending: list[Target], out_dir: Path) -> list[Run]:
    """The runs that train the pending checkpoints: one per budget (``separate``), one run (``single``),
    or a constant-lr trunk and one decay branch per budget (``wsd``). A WSD trunk runs to the last
    pending branch's start, or with ``trunk_checkpoints`` to the last pending trunk checkpoint's
    budget, saving those on the way (``pending`` holds trunk targets too: ``trunk_targets``)."""
    peak = config.lr
    if config.mode == "separate":
        return [_cosine_run(config, f"step{t.step}", (t,), t.step) for t in pending]
    if config.mode == "single":
        return [_cosine_run(config, "single", tuple(pending), targets[-1].step)]
    warm, starts = _branch_starts(config, targets)
    on_trunk = {t.revision for t in config.trunk_targets()}
    trunk_saves = tuple(t for t in pending if t.revision in on_trunk)
    pending = [t for t in pending if t.revision not in on_trunk]
    snapshot = {t.revision: out_dir / f".branch-{t.revision}.pt" for t in targets}
    missing = [
        t
        for t in pending
        if not snapshot[t.revision].exists() and not (out_dir / f".resume-wsd-{t.revision}.pt").exists()
    ]
    runs = []
    if missing or trunk_saves:
        # The trunk: constant after warmup up to the last branch's start or trunk checkpoint. Its lr at a
        # step never depends on where it stops, so a longer trunk passes the same states.
        total = max([starts[t.revision] for t in missing] + [t.step for t in trunk_saves])
        # It never decays (its decay would start after its last step): a trunk checkpoint records the peak lr.
        lr_at = functools.partial(
            wsd_learning_rate, peak=peak, warmup_steps=warm, decay_start=total + 1, total_steps=total + 1
        )
        snaps = tuple((starts[t.revision], snapshot[t.revision]) for t in missing)
        runs.append(Run(TRUNK, total, trunk_saves, lr_at, {"kind": "WSD trunk (constant lr, not annealed)"}, snaps))
    for t in pending:
        schedule = dict(peak=peak, warmup_steps=warm, decay_start=starts[t.revision], total_steps=t.step)
        kind = "linear warmup, constant (trunk), linear decay to 0 over the last decay_fraction of the budget (WSD)"
        record = {"kind": kind, "decay_fraction": config.decay_fraction, **schedule}
        lr_at = functools.partial(wsd_learning_rate, **schedule)
        runs.append(Run(f"wsd-{t.revision}", t.step, (t,), lr_at, record, start=snapshot[t.revision]))
    return runs


def _branch_starts(config: PretrainConfig, targets: list[Target]) -> tuple[int, dict[str, int]]:
    """A WSD series' warmup (the smallest budget's: one trunk serves every branch) and the step each
    budget's branch leaves the trunk: B - max(1, round(decay_fraction x B)), not before the warmup's end."""
    warm = warmup_steps(config, targets[0].step)
    return warm, {t.revision: max(warm, t.step - max(1, round(config.decay_fraction * t.step))) for t in targets}


def trained_steps(config: PretrainConfig) -> int:
    """The updates a series makes from scratch: the sum of its budgets (``separate``), the largest
    (``single``), or the trunk (to the last branch's start, or with ``trunk_checkpoints`` to the
    largest budget) plus every branch (``wsd``)."""
    targets = config.targets()
    if config.mode == "separate":
        return sum(t.step for t in targets)
    if config.mode == "single":
        return targets[-1].step
    _, starts = _branch_starts(config, targets)
    trunk = max([*starts.values(), *(t.step for t in config.trunk_targets())])
    return trunk + sum(t.step - starts[t.revision] for t in targets)
