"""``ovt llm curvature``: the curvature of the held-out loss on every checkpoint, beside the excess it
predicts for small Gaussian noise.

    ovt llm curvature --model M --eval-text FILE --gammas 0.25,0.5 [--draws 8] [--probes 32]
                      [--iterations 30] [--scale init] [--max-blocks N] [--seq-len 128] [--workers N]

Per checkpoint (``llm_validation.curvature``), on the held-out token set L is the mean NLL of:

- ``hessian_trace``: tr_sigma(H) = sum_p sigma_p^2 H_pp by Hutchinson (``--probes`` Rademacher
  vectors scaled by sigma_p, the perturbation's own per-tensor scale), and ``hessian_trace_se`` its
  standard error over probes;
- ``top_eigenvalue``: the largest-magnitude eigenvalue of H (power iteration on Hessian-vector
  products, ``--iterations`` at most);
- ``delta_nll`` (``modification='gaussian'``, per gamma and draw k): the excess of draw k of
  ``ovt llm perturb`` (the same noise) measured as an antithetic pair,
  (L(theta + d_k) + L(theta - d_k)) / 2 - L(theta), which has the excess's expectation with every odd
  order cancelled; small-noise theory predicts (gamma^2 / 2) tr_sigma(H) for its mean.

Rows: ``modification='none'`` for the first three (seed 0), one ``gaussian`` row per (gamma, draw).
The lifecycle (resume, workers, cluster jobs) is every checkpoint run's (``experiments.llm.lifecycle``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from experiments.llm.config import CurvatureRun
from experiments.llm.lifecycle import (
    execute_checkpoint,
    finish_run,
    manifest_head,
    pending_units,
    quiet_transformers,
    run_checkpoints,
    start,
    torch_threads,
)
from experiments.llm.series import SeriesPlan, check_device, light_checks, plan_checkpoints
from rundir import store
from rundir.lifecycle import marks_failure, out_decision

CONFIG = CurvatureRun
HELP = "Hessian trace and top eigenvalue of the held-out loss, beside the small-noise excess they predict"
CURVATURE_METRICS = ("hessian_trace", "hessian_trace_se", "top_eigenvalue")


@dataclasses.dataclass
class Plan(SeriesPlan):
    gammas: list[float]
    draws: int
    probes: int
    iterations: int
    scale: str
    batch_size: int

    def config(self) -> dict:
        return {
            "model": self.recorded_source,
            "revisions": [r.name for r in self.revisions],
            "gammas": self.gammas,
            "draws": self.draws,
            "probes": self.probes,
            "iterations": self.iterations,
            "scale": self.scale,
            "eval_sha256": self.eval_sha256,
            "seq_len": int(self.blocks.shape[1]),
            "n_blocks": int(self.blocks.shape[0]),
            "batch_size": self.batch_size,
        }

    def identity(self) -> dict:
        return {"command": "llm curvature", "config": self.config()}

    def new_manifest(self) -> dict:
        return manifest_head(self, "llm curvature") | {
            "gammas": self.gammas,
            "draws": self.draws,
            "probes": self.probes,
            "iterations": self.iterations,
            "scale": self.scale,
            "threads": self.threads,
            "estimators": "Hutchinson (Rademacher x sigma_p) for tr_sigma(H); power iteration on H for the top "
            "eigenvalue; antithetic pairs of perturb's draws for the excess",
        }


def plan(cfg: CurvatureRun, out: Path, quiet: bool = False) -> Plan:
    """Check every input (nothing written); the fields that need no torch first."""
    light_checks(cfg, out)
    check_device(cfg.device)
    planned = Plan(
        **plan_checkpoints(cfg, out, quiet),
        gammas=list(cfg.gammas),
        draws=cfg.draws,
        probes=cfg.probes,
        iterations=cfg.iterations,
        scale=cfg.scale,
        batch_size=cfg.batch_size,
    )
    out_decision(planned.out, planned.identity())
    return planned


def measure(plan: Plan, index: int, revision, progress) -> tuple[pd.DataFrame, object, dict]:
    """One checkpoint: trace, top eigenvalue, then every (gamma, draw) antithetic pair."""
    import torch

    from llm_validation.checkpoints import load_checkpoint
    from llm_validation.curvature import top_hessian_eigenvalue, weighted_hessian_trace
    from llm_validation.evaluate import perplexity
    from llm_validation.perturb import Perturbation

    model, _ = load_checkpoint(plan.source, revision.name, torch.float32, plan.device)
    perturbation = Perturbation(model, plan.scale)
    trace = weighted_hessian_trace(
        model, plan.blocks, perturbation.sigmas, probes=plan.probes, batch_size=plan.batch_size
    )
    eigen = top_hessian_eigenvalue(model, plan.blocks, iterations=plan.iterations, batch_size=plan.batch_size)
    progress.update()
    base = perplexity(model, plan.blocks, plan.batch_size).mean_nll
    excess = []
    for gamma in plan.gammas:
        for k in range(plan.draws):
            with perturbation.draw(gamma, k):
                plus = perplexity(model, plan.blocks, plan.batch_size).mean_nll
                perturbation.reflect()
                minus = perplexity(model, plan.blocks, plan.batch_size).mean_nll
            excess.append((gamma, k, (plus + minus) / 2 - base))
        progress.update()
    at = dict(source="llm", setup=plan.setup, checkpoint=revision.name, pretrain_time=float(revision.tokens))
    curvature = store.block(
        **at,
        modification="none",
        seed=0,
        metric=list(CURVATURE_METRICS),
        value=[trace.trace, trace.stderr, eigen.eigenvalue],
        mean_nll=base,
    )
    pairs = store.block(
        **at,
        modification="gaussian",
        gamma=[g for g, _, _ in excess],
        seed=[k for _, k, _ in excess],
        metric="delta_nll",
        value=[e for _, _, e in excess],
    )
    notes = {"probes": trace.probes, "eigen_iterations": eigen.iterations, "eigen_converged": eigen.converged}
    return pd.concat([curvature, pairs], ignore_index=True), model, notes


prepare_units = pending_units  # a cluster array: the run started, its pending checkpoints


def _no_derived(table: pd.DataFrame) -> pd.DataFrame:
    return table.iloc[0:0]


def execute(plan: Plan, workers: int | None = 1) -> pd.DataFrame:
    """Measure every planned checkpoint not yet stored (in ``workers`` processes); write the table."""
    manifest = start(plan)
    with marks_failure(plan.out), torch_threads(plan.threads), quiet_transformers(plan.quiet):
        run_checkpoints(plan, manifest, "curvature", "step", 1 + len(plan.gammas), measure, workers)
        return finish_run(plan.out, len(plan.revisions), manifest, _no_derived)


def execute_unit(plan: Plan, index: int) -> None:
    """One checkpoint, stored beside the others: a cluster job's share (``experiments.llm.cluster``)."""
    execute_checkpoint(plan, index, "curvature", measure)


def summary(table: pd.DataFrame) -> str:
    """Per checkpoint: trace, top eigenvalue, and measured / predicted excess at each gamma."""
    rows = table.pivot_table(index="pretrain_time", columns="metric", values="value", aggfunc="mean")
    trace = rows["hessian_trace"]
    frame = rows[list(CURVATURE_METRICS)].copy()
    pairs = table[table.metric == "delta_nll"]
    for gamma, group in pairs.groupby("gamma"):
        measured = group.groupby("pretrain_time")["value"].mean()
        frame[f"excess/pred gamma={gamma:g}"] = measured / (gamma**2 / 2 * trace)
    return frame.to_string(float_format=lambda v: f"{v:.4g}")


def report(plan: Plan, table: pd.DataFrame) -> str:
    return f"curvature of {len(plan.revisions)} checkpoint(s), {len(table)} rows -> {plan.out}\n{summary(table)}"
