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
The lifecycle (resume, workers, cluster jobs) is every checkpoint run's (``experiments.llm.kinds.base``).
"""

from __future__ import annotations

import pandas as pd

from experiments.llm.config_measures import CurvatureRun
from experiments.llm.kinds.base import CheckpointKind
from rundir import store

CURVATURE_METRICS = ("hessian_trace", "hessian_trace_se", "top_eigenvalue")


class Curvature(CheckpointKind):
    name = "curvature"
    CONFIG = CurvatureRun
    HELP = "Hessian trace and top eigenvalue of the held-out loss, beside the small-noise excess they predict"

    def units_per_checkpoint(self, plan) -> int:
        return 1 + len(plan.cfg.gammas)

    def manifest_fields(self, plan) -> dict:
        return {
            "estimators": "Hutchinson (Rademacher x sigma_p) for tr_sigma(H); power iteration on H for the top "
            "eigenvalue; antithetic pairs of perturb's draws for the excess"
        }

    def measure(self, plan, index: int, revision, progress) -> tuple[pd.DataFrame, object, dict]:
        """One checkpoint: trace, top eigenvalue, then every (gamma, draw) antithetic pair."""
        import torch

        from llm_validation.checkpoints import load_checkpoint
        from llm_validation.curvature import top_hessian_eigenvalue, weighted_hessian_trace
        from llm_validation.evaluate import perplexity
        from llm_validation.perturb import Perturbation

        cfg = plan.cfg
        model, _ = load_checkpoint(plan.source, revision.name, torch.float32, cfg.device)
        perturbation = Perturbation(model, cfg.scale)
        trace = weighted_hessian_trace(
            model, plan.blocks, perturbation.sigmas, probes=cfg.probes, batch_size=cfg.batch_size
        )
        eigen = top_hessian_eigenvalue(model, plan.blocks, iterations=cfg.iterations, batch_size=cfg.batch_size)
        progress.update()
        base = perplexity(model, plan.blocks, cfg.batch_size).mean_nll
        excess = []
        for gamma in cfg.gammas:
            for k in range(cfg.draws):
                with perturbation.draw(gamma, k):
                    plus = perplexity(model, plan.blocks, cfg.batch_size).mean_nll
                    perturbation.reflect()
                    minus = perplexity(model, plan.blocks, cfg.batch_size).mean_nll
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

    def report(self, plan, table: pd.DataFrame) -> str:
        return f"curvature of {len(plan.revisions)} checkpoint(s), {len(table)} rows -> {plan.out}\n{summary(table)}"


KIND = Curvature()


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
