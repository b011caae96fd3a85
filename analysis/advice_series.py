"""Advice from other series (``ovt advise --reference``), and its check on a study: leave one series
out (``benchmarks/advise_validation.py``, docs/ADVISE.md).

A *reference* is a set of pre-training series with their perturbation probes and their fine-tuning
measured in full. Eq. (1) of ``analysis.advice`` is fitted on the reference's fine-tuning at the
planned (lr, steps), and advises another series from its probes alone. The check holds each series
of a study out in turn: its advice comes from the other seeds of its setup (every other series where
it has fewer than two), and its own fine-tuning only scores the advice, by the regret: the measured
post-fine-tuning loss of the advised checkpoint (mean over batch orders) minus the best checkpoint's,
beside the regret of the last checkpoint and of the lowest base loss.

Pure functions of arrays and frames already loaded: no file or terminal I/O.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from analysis.advice import (
    REPLICATES,
    Fit,
    Probes,
    advise,
    finetuned,
    forgetting_fit,
    probes_of,
    sensitivity,
    task_fit,
)
from analysis.fits import SERIES_SUFFIX


@dataclasses.dataclass(frozen=True)
class Series:
    """One pre-training series of a study: its probes, and its fine-tuning measured in full."""

    name: str
    group: str  # the setup the series is a seed of (``20k``)
    probes: Probes
    post: dict  # (lr, steps) -> (n, orders) log perplexity after fine-tuning
    task: dict  # (lr, steps) -> (n, orders) in-task loss after fine-tuning


def series_of(perturb: dict, finetune: dict, gammas, draws: int) -> list[Series]:
    """Every series with a perturb table: ``perturb`` and ``finetune`` map a setup (``20k_seed=0``) to its
    rows of ``ovt llm perturb`` and ``ovt llm finetune`` (absent: no fine-tuning)."""
    found = []
    for setup, frame in sorted(perturb.items()):
        probes = probes_of(frame, gammas, draws)
        tuned = finetune.get(setup, frame.iloc[0:0])
        post, task = (finetuned(tuned, probes.names, metric) for metric in ("perplexity", "finetune_loss"))
        found.append(Series(setup, SERIES_SUFFIX.sub("", setup), probes, post, task))
    return found


def transfer_fits(refs: list[Series], key: tuple[float, float]) -> tuple[Fit, Fit]:
    """Eq. (1) and the in-task model fitted on reference series fine-tuned at ``key`` = (lr, steps)."""
    log_g = np.concatenate([sensitivity(r.probes.excess)[0] for r in refs])
    base = np.concatenate([r.probes.base for r in refs])
    S = np.concatenate([np.nanmean(r.post[key], axis=1) - r.probes.base for r in refs])
    ell = np.concatenate([np.nanmean(r.task[key], axis=1) for r in refs])
    log_m = math.log(key[0] * key[1])
    return forgetting_fit(log_g, log_m, S), task_fit(base, log_m, ell)


def references(series: list[Series], held: Series) -> list[Series]:
    """The series a held-out one is advised from: the other seeds of its setup where there are two or
    more, else every other series."""
    same = [s for s in series if s.group == held.group and s.name != held.name]
    return same if len(same) >= 2 else [s for s in series if s.name != held.name]


def leave_one_series_out(series: list[Series], key, replicates: int = REPLICATES, seed: int = 0) -> list[dict]:
    """Per held-out series: the advice from the other series' fine-tuning at ``key`` and its probes,
    scored on its own fine-tuning alone (the mean over its batch orders): the regret of the advice, of
    the last checkpoint and of the lowest base loss (each minus the best measured checkpoint's), the
    short list, and how many measured losses fall inside their 95% intervals."""
    cases = []
    for held in series:
        if key not in held.post:
            continue
        refs = [s for s in references(series, held) if key in s.post]
        forgetting, task = transfer_fits(refs, key)
        advice = advise(held.probes, forgetting, math.log(key[0] * key[1]), task, replicates, seed)
        measured = np.nanmean(held.post[key], axis=1)
        best = float(np.nanmin(measured))
        inside = (measured >= advice.loss_interval[:, 0]) & (measured <= advice.loss_interval[:, 1])
        cases.append(
            {
                "series": held.name,
                "group": held.group,
                "lr": key[0],
                "steps": key[1],
                "references": [r.name for r in refs],
                "advised": held.probes.names[advice.choice],
                "short_list": [held.probes.names[i] for i in advice.short_list],
                "advised_is_last": advice.choice == measured.size - 1,
                "best": held.probes.names[int(np.nanargmin(measured))],
                "regret": float(measured[advice.choice]) - best,
                "regret_last": float(measured[-1]) - best,
                "regret_lowest_base": float(measured[int(np.argmin(held.probes.base))]) - best,
                "best_in_short_list": int(np.nanargmin(measured)) in advice.short_list,
                "covered": int(inside.sum()),
                "checkpoints": int(measured.size),
                "calibration": "power" if forgetting.log else "constant",
            }
        )
    return cases


def run_sd(cubes: list[np.ndarray], T: np.ndarray) -> tuple[float, str]:
    """The s.d. of one fine-tuning run's loss: between batch orders (pooled over series and
    checkpoints) where there are two or more; else from the residuals of each series' curve around a
    quadratic in log T (n - 3 dof per series: it holds misfit too, so it is an upper bound)."""
    cubes = [np.asarray(c, float) for c in cubes]
    if all(c.shape[1] >= 2 for c in cubes):
        var = np.concatenate([np.nanvar(c, axis=1, ddof=1) for c in cubes])
        return math.sqrt(float(np.nanmean(var))), "between batch orders"
    design = np.vander(np.log(np.asarray(T, float)), 3)
    rss, dof = 0.0, 0
    for c in cubes:
        y = np.nanmean(c, axis=1)
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        rss += float(np.sum((y - design @ coef) ** 2))
        dof += y.size - 3
    return math.sqrt(rss / dof), "residuals around a quadratic in log T (one order: an upper bound)"


def summary(cases: list[dict], sd: float) -> dict:
    """Medians and means of the three regrets, how often the advice is no worse than the last
    checkpoint, and whether the median regret is within the per-run s.d. ``sd``."""
    r = {k: np.array([c[k] for c in cases], float) for k in ("regret", "regret_last", "regret_lowest_base")}
    no_worse = r["regret"] <= r["regret_last"] + 1e-12
    return {
        "cases": len(cases),
        "median_regret": float(np.median(r["regret"])),
        "median_regret_last": float(np.median(r["regret_last"])),
        "median_regret_lowest_base": float(np.median(r["regret_lowest_base"])),
        "mean_regret": float(np.mean(r["regret"])),
        "mean_regret_last": float(np.mean(r["regret_last"])),
        "mean_regret_lowest_base": float(np.mean(r["regret_lowest_base"])),
        "advice_no_worse_than_last": float(no_worse.mean()),
        "advised_last": float(np.mean([c["advised_is_last"] for c in cases])),
        "best_in_short_list": float(np.mean([c["best_in_short_list"] for c in cases])),
        "run_sd": sd,
        "median_within_run_sd": bool(np.median(r["regret"]) <= sd),
    }
