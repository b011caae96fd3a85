"""The report of a mitigation study (``Study.mitigates``): claims (k) of ``analysis.mitigation_claims``,
one per mitigation against the unmitigated series, from the study's stage folders.

Arms, each a fine-tuning table at the study's comparison lr ``reg_lr`` on its first dataset:

    baseline          finetune/DATA/SIZE_seed=S            the study's own series (annealed, WSD)
    ARM               finetune/DATA/SIZE_ARM_seed=S        a pre-training arm (``Study.arms``)
    no anneal         trunk/finetune/DATA/SIZE_seed=S      the WSD trunk at the same tokens (anneal share 0)
    replay=R          finetune-replay/replay=R/SIZE_seed=S fine-tuning that replays pre-training text
    reg=X             finetune-reg/reg=X/SIZE_seed=S       the paper's L2 pull toward the checkpoint

The series of every arm share the seeds of the baseline's, so every difference is paired by series.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.mitigation_claims import mitigation_claims
from experiments.llm.study_claims import SERIES, load
from rundir import store

BASELINE, NO_ANNEAL = "baseline", "no anneal"


def arm_tables(study, out: Path, size: str) -> dict[str, pd.DataFrame]:
    """{arm: its fine-tuning table, empty where no series has one} for one size, the baseline first
    (module docstring)."""
    first = study.finetune_stage(study.finetune_data[0])
    arms = {BASELINE: load(out, first, study, size, missing_ok=True)}
    arms |= {arm: load(out, first, study, size, arm=arm, missing_ok=True) for arm, _ in study.arms}
    seeds = dict(study.trunk_seeds).get(size, ())
    if seeds and study.reg_lr in study.trunk_lrs:
        arms[NO_ANNEAL] = load(out, f"trunk/{first}", study, size, seeds, missing_ok=True)
    stages = {f"replay={r:g}": f"finetune-replay/replay={r:g}" for r in study.replays}
    stages |= {f"reg={r:g}": f"finetune-reg/reg={r:g}" for r in study.regs}
    arms |= {arm: load(out, stage, study, size, missing_ok=True) for arm, stage in stages.items()}
    return arms


def forgetting_curves(arms: dict[str, pd.DataFrame], lr: float) -> dict[str, dict]:
    """{arm: {"tokens", "mean", "sem", "n_series"}} for every arm with a table (``arm_tables``; an arm
    with none is left out): per series F_s(T) = mean over batch orders of ln ppl
    after fine-tuning at ``lr`` - ln ppl before, then its mean and standard error over series per T."""
    curves = {}
    for arm, table in arms.items():
        if table.empty:
            continue
        rows = table[(table.metric == "perplexity") & (table.checkpoint != "inflection")]
        before = rows[rows.modification == "none"].groupby([SERIES, "pretrain_time"])["value"].mean()
        tuned = rows[(rows.modification == "finetune") & (rows.lr_policy == "fixed") & (rows.lr == lr)]
        after = tuned.assign(value=np.log(tuned.value)).groupby([SERIES, "pretrain_time"])["value"].mean()
        forgetting = (after - np.log(before)).dropna().unstack(SERIES)
        if forgetting.empty:
            continue
        n = forgetting.notna().sum(axis=1)
        sem = forgetting.std(axis=1, ddof=1) / np.sqrt(n)
        curves[arm] = {
            "tokens": forgetting.index.tolist(),
            "mean": forgetting.mean(axis=1).tolist(),
            "sem": [float(v) if np.isfinite(v) else None for v in sem],
            "n_series": int(n.max()),
        }
    return curves


def write(study, name: str, out: Path) -> dict:
    """claims.json and claims.md of the mitigation study ``name`` in ``out``, and its figure."""
    claims, curves = [], {}
    for size, _ in study.sizes:
        arms = arm_tables(study, out, size)
        found = mitigation_claims(arms, BASELINE, SERIES, lr=study.reg_lr)
        claims += [c | {"size": size, "dataset": study.finetune_data[0]} for c in found]
        curves[size] = forgetting_curves(arms, study.reg_lr)
    report = {"study": name, "config": dataclasses.asdict(study), "claims": claims, "curves": curves}
    store.write_json(out / "claims.json", report)
    (out / "claims.md").write_text(render(study, name, claims), encoding="utf-8")
    from paper_figures import study_mitigations as figure

    figure.draw(out, out / "figures")
    return report


def _interval(entry: dict | None, digits: int = 3) -> str:
    if not entry or entry.get("value") is None or not math.isfinite(entry["value"]):
        return "n/a"
    lo, hi = entry.get("interval") or (None, None)
    shown = f"{entry['value']:+.{digits}f}"
    return shown if lo is None or hi is None else f"{shown} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def render(study, name: str, claims: list[dict]) -> str:
    """``claims.md``: per size, one row per mitigation, then the head claim over all of them."""
    lines = [
        f"# Study `{name}`: how much each mitigation reduces forgetting\n",
        f"Fine-tuning at lr {study.reg_lr:g}, {study.steps} steps ({study.warmup_steps} of warmup) on "
        f"{study.finetune_data[0]}; forgetting F = ln ppl after - ln ppl before fine-tuning on held-out "
        "pre-training text, at the largest budget; intervals 95% Student-t over the paired series.\n",
    ]
    for size, _ in study.sizes:
        rows = [c for c in claims if c["size"] == size]
        lines += [
            f"\n## {size}\n",
            "| mitigation | F reduction (nats) | reduction (%) | base cost (nats) | task cost (nats) | "
            "ln T* shift | series | verdict |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for c in rows:
            if c["claim"] == "k":
                continue
            lines.append(
                f"| {c.get('arm', c['claim'])} | {_interval(c)} | {_interval(c.get('reduction_pct'), 1)} | "
                f"{_interval(c.get('base_cost'))} | {_interval(c.get('task_cost'))} | "
                f"{_interval(c.get('t_star_shift'), 2)} | {c.get('n_series', 0)} | {c['verdict']} |"
            )
        head = next((c for c in rows if c["claim"] == "k"), None)
        if head:
            lines.append(f"\n(k) {head['statement']}: **{head['verdict']}** ({head['rule']})\n")
    return "\n".join(lines) + "\n"
