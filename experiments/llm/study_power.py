"""The power analysis of a study, from its pilot: how many series (n) and batch orders (m) it needs.

A pilot is a study preset with ``pilot_for`` set (``pilot`` for ``study``): a few series of the
target's design, fine-tuned on the candidate grid in two batch orders. Its analysis stage writes
``DIR/power.json`` instead of claims:

- ``components``: per size, lr and side (fall, rise) of claim (d), the variance between series and
  between batch orders (``analysis.power.components``, both estimators, each with its dof);
- ``flattening``: per size and lr, the training loss over the last 20% of the steps against the 20%
  before (mean over runs, and its drop per 100 steps), so the run length is shown to suffice;
- ``forgetting``: per size and lr, the mean post-fine-tuning log perplexity at the first and last
  checkpoint beside the uniform guess log V (a grid that forgets everything cannot show a U);
- ``costs``: core-seconds per pre-training token and per fine-tuning step of each size, timed in
  this process on one thread (``measure_costs``), and the data preparation of a series
  (``PREP_SECONDS``);
- ``plan``: for the target study, per size the smallest n, and one m, whose expected 95% half-width
  of (d)'s fall and rise at the smallest lr is at most ``TARGET`` nats (``analysis.power.plan`` on the
  dof-pooled components), with the target's cost in core-hours at that plan and at the preset's own.

The target study copies ``power.json`` (committed under ``paper_figures/reference/pilot/``) into its
``study.json`` beside the n and m it uses, so the record says what the pilot asked for and what ran.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import power
from rundir import store

TARGET = 0.03  # nats: the 95% half-width of claim (d)'s fall and rise at the smallest lr
# Training a BPE tokenizer on the 110M-character training split and tokenising it, once per series: the
# pilot's series folders show 3-4 minutes between series.json and the first checkpoint's data.
PREP_SECONDS = 240.0
MEASUREMENT_SECONDS = 45.0  # perturb and curvature per checkpoint (40 draws x 64K tokens, 32 probes)
TIMED_STEPS = 20
POWER_FILE = "power.json"
REFERENCE = Path(__file__).resolve().parent.parent / "paper_figures" / "reference" / "pilot" / POWER_FILE


def measure_costs(sizes: list[str], seq_len: int, batch: int, finetune_batch: int) -> dict:
    """Seconds per pre-training token and per fine-tuning step of each size on one torch thread: the
    mean of ``TIMED_STEPS`` AdamW steps after 3 warm-up steps (random tokens; the cost does not
    depend on them), the fine-tuning steps through ``finetune.finetune`` as the study runs them."""
    import time

    import torch

    from llm_validation.finetune import FinetuneConfig, finetune
    from llm_validation.finetune_data import Examples
    from llm_validation.models import build_model, olmo_config

    found = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for size in sizes:
            model = build_model(olmo_config(size)).train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
            ids = torch.randint(
                0, model.config.vocab_size, (batch, seq_len), generator=torch.Generator().manual_seed(0)
            )
            for step in range(3 + TIMED_STEPS):
                if step == 3:
                    start = time.perf_counter()
                model(input_ids=ids, labels=ids).loss.backward()
                optimizer.step()
                optimizer.zero_grad()
            per_token = (time.perf_counter() - start) / (TIMED_STEPS * batch * seq_len)
            rows = ids.repeat(4, 1)
            examples = Examples(rows, rows.clone(), torch.ones_like(rows))
            start = time.perf_counter()
            finetune(model, examples, FinetuneConfig(lr=1e-4, steps=TIMED_STEPS, batch_size=finetune_batch))
            found[size] = {
                "pretrain_seconds_per_token": per_token,
                "finetune_seconds_per_step": (time.perf_counter() - start) / TIMED_STEPS,
                "prep_seconds": PREP_SECONDS,
                "measurement_seconds_per_checkpoint": MEASUREMENT_SECONDS,
            }
    finally:
        torch.set_num_threads(threads)
    return found


def cube(table: pd.DataFrame, lr: float, series_column: str = "series_seed") -> tuple[np.ndarray, np.ndarray]:
    """(T, L[series, order, time]): the post-fine-tuning log perplexity at ``lr`` (fixed policy)."""
    rows = table[
        (table.modification == "finetune")
        & (table.lr_policy == "fixed")
        & (table.metric == "perplexity")
        & (table.lr == lr)
        & (table.checkpoint != "inflection")
    ]
    pivot = rows.assign(log=np.log(rows.value)).pivot_table(
        index=[series_column, "seed"], columns="pretrain_time", values="log"
    )
    T = pivot.columns.to_numpy(float)
    series = pivot.index.get_level_values(0).unique()
    return T, np.stack([pivot.loc[s].to_numpy(float) for s in series])


def flattening(table: pd.DataFrame, lr: float) -> dict:
    """The mean training loss over the last 20% of the steps and the 20% before, over every run at
    ``lr``; ``drop_per_100_steps``: how much it still falls."""
    steps = table[(table.metric == "step_loss") & (table.lr == lr) & (table.lr_policy == "fixed")]
    n = int(steps.step.max()) + 1
    window = max(1, n // 5)
    late = steps[steps.step >= n - window].value.mean()
    before = steps[(steps.step >= n - 2 * window) & (steps.step < n - window)].value.mean()
    return {
        "steps": n,
        "last_fifth": float(late),
        "fifth_before": float(before),
        "drop_per_100_steps": float((before - late) / window * 100),
    }


def measure_pilot(out: Path, pilot, uniform: dict[str, float]) -> dict:
    """Components, flattening, forgetting and costs of a finished pilot under ``out`` (module docstring)."""
    from experiments.llm.study_claims import load

    data = pilot.finetune_data[0]
    components, flat, forgetting = {}, {}, {}
    for size, _ in pilot.sizes:
        table = load(out, pilot.finetune_stage(data), pilot, size)
        for lr in pilot.lrs:
            T, L = cube(table, lr)
            key = f"{size}/lr={lr:g}"
            components[key] = power.components(T, L)
            flat[key] = flattening(table, lr)
            forgetting[key] = {
                "first": float(L[..., 0].mean()),
                "last": float(L[..., -1].mean()),
                "uniform": uniform[size],
            }
    sizes = [size for size, _ in pilot.sizes]
    costs = measure_costs(sizes, pilot.seq_len, pilot.batch_size, pilot.finetune_batch)
    return {"components": components, "flattening": flat, "forgetting": forgetting, "costs": costs}


def study_costs(study, costs: dict) -> dict[str, power.Cost]:
    """Core-seconds of one series (pre-training, its data, perturb and curvature) and of one batch
    order of its fine-tuning runs, per size, for ``study``'s budgets and grid."""
    from llm_validation.pretrain_config import PretrainConfig
    from llm_validation.series_runs import trained_steps

    found = {}
    for size, budgets in study.sizes:
        c = costs[size]
        runs = len(study.lrs) * len(study.finetune_data) + len(study.regs)  # fine-tuning runs per checkpoint
        series = PretrainConfig(
            preset=size, budgets=budgets, mode=study.mode, seq_len=study.seq_len, batch_size=study.batch_size
        )
        trained = trained_steps(series) * series.tokens_per_step
        found[size] = power.Cost(
            series=trained * c["pretrain_seconds_per_token"]
            + c["prep_seconds"]
            + len(budgets) * c["measurement_seconds_per_checkpoint"],
            order=len(budgets) * runs * study.steps * c["finetune_seconds_per_step"],
        )
    return found


def plan_study(measured: dict, study) -> dict:
    """The (n, m) the pilot asks of ``study``: the dof-pooled variances at the smallest lr, costs, the
    plan, and the half-widths and cost at the study's own n and m."""
    lr = min(study.lrs)
    variances = {
        f"{size}/{side}": power.pooled(measured["components"][f"{size}/lr={lr:g}"][side])
        for size, _ in study.sizes
        for side in ("fall", "rise")
    }
    costs = study_costs(study, measured["costs"])
    chosen = power.plan(variances, costs, TARGET, n_min=6, m_min=2)
    n, m = {size: len(study.seeds_of(size)) for size, _ in study.sizes}, study.finetune_repeats
    own = {key: power.half_width(s2, o2, n[key.split("/", 1)[0]], m) for key, (s2, o2) in variances.items()}
    hours = sum(n[size] * (c.series + m * c.order) for size, c in costs.items()) / 3600
    return {
        "lr": lr,
        "target": TARGET,
        "variances": {k: {"sigma_s2": v[0], "sigma_o2": v[1]} for k, v in variances.items()},
        "costs_core_seconds": {k: {"series": c.series, "order": c.order} for k, c in costs.items()},
        "plan": chosen | {"core_hours": chosen["cost"] / 3600},
        "preset": {"n": n, "m": m, "half_widths": own, "core_hours": hours, "wall_hours_on_2_cores": hours / 2},
    }


def write(out: Path, pilot, target) -> dict:
    """``DIR/power.json`` of a finished pilot for the study ``target``."""
    from experiments.llm.study_claims import uniform_loss

    measured = measure_pilot(out, pilot, {size: uniform_loss(size) for size, _ in pilot.sizes})
    record = {
        "pilot": dataclasses.asdict(pilot),
        "target": pilot.pilot_for,
        "measured": measured,
        "for": plan_study(measured, target),
    }
    store.write_json(out / POWER_FILE, record)
    return record


def used(study) -> dict:
    """What a study runs of what its pilot chose: n, m, the lr grid, warmup and steps."""
    return {
        "n": {size: len(study.seeds_of(size)) for size, _ in study.sizes},
        "m": study.finetune_repeats,
        "lrs": list(study.lrs),
        "warmup_steps": study.warmup_steps,
        "steps": study.steps,
    }


def reference_record() -> dict | None:
    """The committed pilot's ``power.json``, or None where it is absent."""
    return json.loads(REFERENCE.read_text()) if REFERENCE.is_file() else None


def summary(record: dict) -> str:
    """What a pilot prints: the plan and the preset's half-widths, then per size and lr the pooled
    components and how much the runs still learn at the end."""
    target = record["for"]
    plan, preset = target["plan"], target["preset"]
    shown = ", ".join(f"{size} {n}" for size, n in plan["n"].items())
    own = ", ".join(f"{size} {n}" for size, n in preset["n"].items())
    lines = [
        f"power at lr {target['lr']:g}, target {target['target']} nats: n = {shown} series x m = {plan['m']} "
        f"orders, met: {plan['met']} ({plan['core_hours']:.1f} core-hours); the preset's n = {own}, "
        f"m = {preset['m']}: {preset['core_hours']:.1f} core-hours",
    ]
    for key, half in preset["half_widths"].items():
        lines.append(f"  preset half-width {key}: {half:.4f}")
    for key, sides in record["measured"]["components"].items():
        flat = record["measured"]["flattening"][key]
        parts = [
            f"{side} sigma_s {math.sqrt(power.pooled(sides[side])[0]):.4f} "
            f"sigma_o {math.sqrt(power.pooled(sides[side])[1]):.4f}"
            for side in ("fall", "rise")
        ]
        drop = flat["drop_per_100_steps"]
        lines.append(f"  {key}: {'; '.join(parts)}; loss drop per 100 steps at the end {drop:.4f}")
    return "\n".join(lines)
