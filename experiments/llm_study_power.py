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
- ``costs``: core-seconds per pre-training token and per fine-tuning step, from the pilot's own
  manifests, per size;
- ``plan``: for the target study, the cheapest (n, m) whose expected 95% half-width of (d)'s fall and
  rise at the smallest lr is at most ``TARGET`` nats at every size (``analysis.power.plan``), with
  the target's cost in core-hours at that (n, m) and at the preset's own.

The target study copies ``power.json`` (committed under ``paper_figures/reference/pilot/``) into its
``study.json`` beside the n and m it uses, so the record says what the pilot asked for and what ran.
"""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import power
from experiments import store

TARGET = 0.03  # nats: the 95% half-width of claim (d)'s fall and rise at the smallest lr
POWER_FILE = "power.json"
REFERENCE = Path(__file__).resolve().parent.parent / "paper_figures" / "reference" / "pilot" / POWER_FILE


def _seconds(manifest: dict) -> float:
    start, end = (datetime.fromisoformat(manifest[k]) for k in ("started", "finished"))
    return (end - start).total_seconds()


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
    from experiments.llm_study_report import load

    data = pilot.finetune_data[0]
    components, flat, forgetting, costs = {}, {}, {}, {}
    for size, budgets in pilot.sizes:
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
        series = [store.read_manifest(out / "series" / pilot.series_name(size, s)) for s in pilot.seeds]
        runs = [store.read_manifest(out / pilot.finetune_stage(data) / pilot.series_name(size, s)) for s in pilot.seeds]
        trained = 1.2 * budgets[-1]  # a WSD series trains 1.2x its largest budget (pretrain.trained_steps)
        steps = len(budgets) * len(pilot.lrs) * pilot.finetune_repeats * pilot.steps
        costs[size] = {
            "pretrain_seconds_per_token": float(np.mean([_seconds(m) for m in series]) / trained),
            "finetune_seconds_per_step": float(np.mean([_seconds(m) for m in runs]) / steps),
            "note": "wall seconds of one process per series, data preparation included, from the manifests",
        }
    return {"components": components, "flattening": flat, "forgetting": forgetting, "costs": costs}


def study_costs(study, costs: dict) -> dict[str, power.Cost]:
    """Core-seconds of one series and of one batch order on it, per size, for ``study``'s grid."""
    found = {}
    for size, budgets in study.sizes:
        c = costs[size]
        runs = len(study.lrs) * len(study.finetune_data) + len(study.regs)  # fine-tuning runs per checkpoint
        found[size] = power.Cost(
            series=1.2 * budgets[-1] * c["pretrain_seconds_per_token"],
            order=len(budgets) * runs * study.steps * c["finetune_seconds_per_step"],
        )
    return found


def plan_study(measured: dict, study) -> dict:
    """The (n, m) the pilot asks of ``study``: variances at the smallest lr (the cautious estimator of
    each component), costs, the plan, and the cost at the study's own n and m."""
    lr = min(study.lrs)
    variances = {
        f"{size}/{side}": power.cautious(measured["components"][f"{size}/lr={lr:g}"][side])
        for size, _ in study.sizes
        for side in ("fall", "rise")
    }
    costs = study_costs(study, measured["costs"])
    chosen = power.plan(variances, costs, TARGET, n_min=6, m_min=2)
    n, m = len(study.seeds), study.finetune_repeats
    own = {key: power.half_width(s2, o2, n, m) for key, (s2, o2) in variances.items()}
    hours = sum(n * (c.series + m * c.order) for c in costs.values()) / 3600
    return {
        "lr": lr,
        "target": TARGET,
        "variances": {k: {"sigma_s2": v[0], "sigma_o2": v[1]} for k, v in variances.items()},
        "costs_core_seconds": {k: {"series": c.series, "order": c.order} for k, c in costs.items()},
        "plan": chosen | {"core_hours": chosen["cost"] / 3600},
        "preset": {"n": n, "m": m, "half_widths": own, "core_hours": hours},
    }


def write(out: Path, pilot, target) -> dict:
    """``DIR/power.json`` of a finished pilot for the study ``target``."""
    from experiments.llm_study_report import uniform_loss

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
        "n": len(study.seeds),
        "m": study.finetune_repeats,
        "lrs": list(study.lrs),
        "warmup_steps": study.warmup_steps,
        "steps": study.steps,
    }


def reference_record() -> dict | None:
    """The committed pilot's ``power.json``, or None where it is absent."""
    return json.loads(REFERENCE.read_text()) if REFERENCE.is_file() else None


def summary(record: dict) -> str:
    """What a pilot prints: the plan, then per size and lr the components and how flat the runs end."""
    target = record["for"]
    plan = target["plan"]
    lines = [
        f"power: n = {plan['n']} series x m = {plan['m']} orders meets {target['target']} nats at lr "
        f"{target['lr']:g}: {plan['met']} ({plan['core_hours']:.1f} core-hours); the preset's "
        f"n = {target['preset']['n']}, m = {target['preset']['m']}: {target['preset']['core_hours']:.1f} core-hours",
    ]
    for key, half in target["preset"]["half_widths"].items():
        lines.append(f"  preset half-width {key}: {half:.4f}")
    for key, sides in record["measured"]["components"].items():
        flat = record["measured"]["flattening"][key]
        parts = [
            f"{side} sigma_s {math.sqrt(power.cautious(sides[side])[0]):.4f} "
            f"sigma_o {math.sqrt(power.cautious(sides[side])[1]):.4f}"
            for side in ("fall", "rise")
        ]
        lines.append(
            f"  {key}: {'; '.join(parts)}; loss drop per 100 steps at the end {flat['drop_per_100_steps']:.4f}"
        )
    return "\n".join(lines)
