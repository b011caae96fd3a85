"""Leave one series out: how good is ``ovt advise``'s advice on a study (docs/ADVISE.md)?

    .venv/bin/python benchmarks/advise_validation.py STUDY_DIR [--data shakespeare] [--gammas 1] [--draws 2]
                                                     [--perturb DIR] [--replicates 4000] [--json PATH]

STUDY_DIR is an ``ovt llm study`` folder (``perturb/SETUP``, ``finetune/DATA/SETUP``; the committed
``paper_figures/reference/study`` or a newer one). For every series and every fine-tuning lr of its
grid (at the study's steps), ``analysis.advice_series.leave_one_series_out`` advises as ``ovt advise
--reference`` does: eq. (1) fitted on the *other* series' fine-tuning (the other seeds of its size
where there are two or more, else every other series) and applied to the held-out series' probes
alone, i.e. its base perplexity and the first ``--draws`` draws at ``--gammas`` of its perturb store
(``--perturb DIR``: the series' perturb stores from another run on the same checkpoints, e.g. a
cheaper probe on fewer eval blocks).
The held-out series' own fine-tuning only scores the advice. The study's ``step_loss`` rows are not
used (no fine-tuning probe is emulated). The method is fixed before this script is run; nothing in it
is tuned on the held-out series.

Per lr: the median and mean regret (the measured post-fine-tuning log perplexity of the advised
checkpoint, mean over batch orders, minus the best checkpoint's) of the advice, of the last
checkpoint and of the checkpoint with the lowest base loss; the share of cases whose advice is no
worse than the last checkpoint; how often the best checkpoint is on the short list; the per-run s.d.
of the fine-tuning (``analysis.advice_series.run_sd``: between batch orders, or with one order the
residuals around a quadratic in log T, an upper bound); whether the median regret is within it.
Probe cost in tokens: (1 + gammas x draws) evaluations of the perturb store's eval blocks x seq_len
per checkpoint, over fine-tuning every checkpoint once at one lr (checkpoints x steps x batch x
seq_len) and over the study's whole grid (x lrs x batch orders). Prints the table; ``--json`` writes
every case.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import advice_series as check
from analysis.advice import REPLICATES
from experiments.advise import study_series


def validate(study: Path, data: str, gammas, draws: int, replicates: int, perturb: Path | None = None) -> dict:
    perturb, finetune = perturb or study / "perturb", study / "finetune" / data
    for folder in (perturb, finetune):
        if not folder.is_dir():
            sys.exit(f"advise_validation: {folder} is not a folder of the study")
    series, settings = study_series([perturb, finetune], gammas, draws)
    tuned = settings["llm finetune"]["config"]
    steps, batch, seq = tuned["steps"], tuned["batch_size"], tuned["seq_len"]
    orders, lrs = tuned.get("repeats", 1), tuned["lrs"]
    evaluation = settings["llm perturb"]["eval"]
    n = len(series[0].probes.names)
    probe = n * (1 + len(gammas) * draws) * evaluation["n_blocks"] * evaluation["seq_len"]
    per_lr = n * steps * batch * seq
    rows, cases = [], []
    for lr in lrs:
        key = (float(lr), float(steps))
        found = check.leave_one_series_out(series, key, replicates)
        sd, how = check.run_sd([s.post[key] for s in series if key in s.post], series[0].probes.T)
        rows.append({"lr": lr} | check.summary(found, sd) | {"run_sd_from": how})
        cases += found
    return {
        "study": str(study),
        "perturb": str(perturb),
        "data": data,
        "probe": {"gammas": list(gammas), "draws": draws, "eval_blocks": evaluation["n_blocks"]},
        "series": [s.name for s in series],
        "cost": {
            "probe_tokens": probe,
            "finetune_every_checkpoint_one_lr": per_lr,
            "fraction_one_lr": probe / per_lr,
            "finetune_study_grid": per_lr * len(lrs) * orders,
            "fraction_study_grid": probe / (per_lr * len(lrs) * orders),
        },
        "per_lr": rows,
        "overall": {
            "cases": len(cases),
            "advice_no_worse_than_last": float(np.mean([c["regret"] <= c["regret_last"] + 1e-12 for c in cases])),
            "median_regret": float(np.median([c["regret"] for c in cases])),
            "lrs_with_median_within_run_sd": sum(r["median_within_run_sd"] for r in rows),
        },
        "cases": cases,
    }


def table(result: dict) -> str:
    frame = pd.DataFrame(result["per_lr"])
    columns = {
        "lr": "lr",
        "cases": "cases",
        "median_regret": "regret advice",
        "median_regret_last": "regret last",
        "median_regret_lowest_base": "regret low-base",
        "mean_regret": "mean advice",
        "mean_regret_last": "mean last",
        "advice_no_worse_than_last": "advice<=last",
        "advised_last": "advised=last",
        "best_in_short_list": "best listed",
        "run_sd": "run sd",
        "median_within_run_sd": "median<=sd",
    }
    text = frame[list(columns)].rename(columns=columns).to_string(index=False, float_format=lambda v: f"{v:.4f}")
    cost, overall = result["cost"], result["overall"]
    lines = [
        f"{result['study']} ({result['data']}): {len(result['series'])} series, probes gammas "
        f"{result['probe']['gammas']} x {result['probe']['draws']} draws on {result['probe']['eval_blocks']} "
        f"eval blocks ({result['perturb']}); regrets in nats (medians unless 'mean')",
        text,
        f"run sd from: {result['per_lr'][0]['run_sd_from']}",
        f"overall: advice <= last in {overall['advice_no_worse_than_last']:.0%} of {overall['cases']} cases; "
        f"median regret {overall['median_regret']:.4f}; median within the run sd at "
        f"{overall['lrs_with_median_within_run_sd']} of {len(result['per_lr'])} lrs",
        f"probe cost: {cost['probe_tokens']:,} tokens = {cost['fraction_one_lr']:.1%} of fine-tuning every "
        f"checkpoint once at one lr ({cost['finetune_every_checkpoint_one_lr']:,}), "
        f"{cost['fraction_study_grid']:.1%} of the study's grid ({cost['finetune_study_grid']:,})",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study", type=Path)
    p.add_argument("--data", default="shakespeare", help="the fine-tuning dataset folder under STUDY/finetune")
    p.add_argument("--gammas", default="1", help="the probe's gammas (comma list)")
    p.add_argument("--draws", type=int, default=2, help="the probe's draws per gamma")
    p.add_argument("--perturb", type=Path, help="the series' perturb stores (default: STUDY_DIR/perturb)")
    p.add_argument("--replicates", type=int, default=REPLICATES)
    p.add_argument("--json", type=Path, help="write every case here")
    args = p.parse_args()
    gammas = tuple(float(g) for g in args.gammas.split(","))
    result = validate(args.study, args.data, gammas, args.draws, args.replicates, args.perturb)
    print(table(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=lambda v: v.item() if hasattr(v, "item") else str(v)))
        print(f"-> {args.json}")
    if not math.isfinite(result["overall"]["median_regret"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
