"""``ovt llm perturb``: perplexity of Gaussian-perturbed checkpoints into a result store.

    ovt llm perturb [--preset validation [--quick]] [FIELD=VALUE ...] [--out DIR] [--quiet]
                    --model M [--revisions R1,R2 | --tokens 1e9,2.3T] --eval-text FILE
                    --gammas G1,G2 --seeds K [--scale init|relative|absolute]
                    [--seq-len 128] [--batch-size 8] [--max-blocks N] [--threads N]
                    [--dtype float32|bfloat16] [--device cpu|cuda|tpu] [--backend torch|jax]

The run is a ``experiments.llm.config.PerturbRun``: every flag is also a field (``seeds=3``), a preset sets
several (``experiments.llm.presets``), and a comma list on a scalar field sweeps it. ``plan(cfg, out)`` checks
it, ``execute(plan)`` runs it (``llm_runs.run_config(cfg, out)`` does both).

``perturb`` evaluates, for each checkpoint in turn (one model in memory at a time), the held-out
perplexity of the checkpoint itself (``modification='none'``, ``gamma`` NaN, ``seed`` 0) and of
``K`` Gaussian draws per gamma (``modification='gaussian'``, ``seed`` k = 0..K-1). Draw k uses the
noise of ``perturb.gaussian_noise(k, name, shape)`` on every checkpoint, so draws are paired across
checkpoints. The token set is the same for every checkpoint and draw: the eval text is tokenised
with *each* checkpoint's own tokenizer, and the run refuses (exit 2, before writing anything) when
two checkpoints' tokenizers give different token ids, since their perplexities would not be
comparable. An evaluation whose mean loss overflows the perplexity (``evaluate.MAX_LOSS``) or is
NaN is recorded, never a crash: value inf or NaN and ``diverged`` True (False on every other row).

Defaults: ``--scale init`` (the paper's choice); on a local folder series without ``--revisions``
or ``--tokens``, every checkpoint of the series (a hub id needs one of them); ``--threads``: torch's
own count (``--threads 1`` is fastest for small models on a busy machine). A ``--tokens`` value
whose nearest checkpoint is more than 2x away is reported in one warning line on stderr.

``--backend jax`` measures the same checkpoints with ``llm_validation.jax_backend`` (OLMo-1 in
flax.nnx; ``experiments.llm.kinds.perturb_jax``): the same store, its draws keyed by (seed, tensor name) the same way
but with JAX's random numbers, so its values match torch's in distribution, not draw by draw. The
manifest records the backend, the devices and the dtype; ``--device tpu`` is the JAX backend's alone.

Bounds and checks: ``experiments.llm.series``; the run lifecycle: ``experiments.llm.lifecycle``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from experiments.llm.config import PerturbRun
from experiments.llm.kinds import perturb_jax as llm_perturb_jax
from experiments.llm.lifecycle import (
    checkpoint_summary,
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
from llm_validation.suites import OLMO1, perturbation_record
from rundir import store
from rundir.derived import perturb_inflection_rows
from rundir.lifecycle import marks_failure, out_decision

if TYPE_CHECKING:  # annotations only: torch loads when a run starts, after its input is checked
    from llm_validation.evaluate import Perplexity
    from llm_validation.revisions import Revision

CONFIG = PerturbRun
HELP = "perplexity of Gaussian-perturbed checkpoints into a result store"


@dataclasses.dataclass
class Plan(SeriesPlan):
    """Everything ``perturb`` needs, checked before anything is written."""

    gammas: list[float]
    seeds: int
    scale: str
    noise_device: str
    batch_size: int
    dtype: str
    backend: str = "torch"

    def config(self) -> dict:
        """What the numbers depend on: a run directory holds one config, and a rerun of it resumes."""
        config = {
            "model": self.recorded_source,
            "revisions": [r.name for r in self.revisions],
            "gammas": self.gammas,
            "seeds": self.seeds,
            "scale": self.scale,
            "eval_sha256": self.eval_sha256,
            "seq_len": int(self.blocks.shape[1]),
            "n_blocks": int(self.blocks.shape[0]),
            "batch_size": self.batch_size,
            "dtype": self.dtype,
            "device": self.device,
        }
        if self.noise_device != "cpu":  # the default is left out, so older run directories still resume
            config["noise_device"] = self.noise_device
        if self.backend != "torch":  # likewise
            config["backend"] = self.backend
        return config

    def identity(self) -> dict:
        """The manifest fields a rerun must match to resume (``rundir.lifecycle.out_decision``)."""
        return {"command": "llm perturb", "config": self.config()}

    def new_manifest(self) -> dict:
        return _new_manifest(self)


def plan(cfg: PerturbRun, out: Path, quiet: bool = False) -> Plan:
    """Check every input of a perturb run (raising UsageError / ValueError) without writing anything;
    the fields that need no torch first."""

    light_checks(cfg, out)
    if cfg.backend == "jax":
        llm_perturb_jax.check(cfg)
    else:
        check_device(cfg.device)
    planned = Plan(
        **plan_checkpoints(cfg, out, quiet),
        gammas=list(cfg.gammas),
        seeds=cfg.seeds,
        scale=cfg.scale,
        noise_device=cfg.noise_device,
        batch_size=cfg.batch_size,
        dtype=cfg.dtype,
        backend=cfg.backend,
    )
    out_decision(planned.out, planned.identity())  # a run of another config: refused unless it may be replaced
    return planned


def _sigma_summary(plan: Plan, checkpoint: str, sigmas: dict[str, float]) -> dict:
    values = sorted(sigmas.values())
    return {
        "scale": plan.scale,
        "checkpoint": checkpoint,
        "n_tensors": len(values),
        "min": values[0],
        "median": values[len(values) // 2],
        "max": values[-1],
        "mean": sum(values) / len(values),
        "by_parameter": sigmas,
        "policy": "Linear and Embedding weights perturbed (a tied embedding once, under its first name); "
        "norm weights and biases unchanged (zero init variance)",
    }


def _new_manifest(plan: Plan) -> dict:
    n_blocks, seq_len = plan.blocks.shape
    return manifest_head(plan, "llm perturb") | {
        "n_tokens": int(n_blocks * (seq_len - 1)),
        "seq_len": int(seq_len),
        "batch_size": plan.batch_size,
        "dtype": plan.dtype,
        "device": plan.device,
        **(llm_perturb_jax.manifest_fields(plan.device) if plan.backend == "jax" else _torch_fields(plan.device)),
        "scale": plan.scale,
        "gammas": plan.gammas,
        "n_seeds": plan.seeds,
        "threads": plan.threads,
        "sigma": None,  # draws are seeds 0..n_seeds-1
    }


def _torch_fields(device: str) -> dict:
    return {"backend": "torch", "devices": [device]}


def _rows(plan: Plan, revision: Revision, results: list[tuple[str, float, int, Perplexity]]) -> pd.DataFrame:
    return store.block(
        source="llm",
        setup=plan.setup,
        checkpoint=revision.name,
        pretrain_time=float(revision.tokens),
        modification=[m for m, *_ in results],
        gamma=[g for _, g, _, _ in results],
        seed=[s for _, _, s, _ in results],
        metric="perplexity",
        value=[p.perplexity for *_, p in results],
        mean_nll=[p.mean_nll for *_, p in results],
        n_tokens=[p.n_tokens for *_, p in results],
        diverged=[p.diverged for *_, p in results],
    )


def evaluate_checkpoint(plan: Plan, revision, model, progress=None) -> tuple[pd.DataFrame, dict[str, float]]:
    """Base perplexity, then every (gamma, seed) draw of one loaded checkpoint; returns (rows, sigmas)."""
    from llm_validation.evaluate import perplexity
    from llm_validation.perturb import Perturbation

    results = [("none", float("nan"), 0, perplexity(model, plan.blocks, plan.batch_size))]
    if progress is not None:
        progress.update()
    perturbation = Perturbation(model, plan.scale, plan.noise_device)  # one exact copy serves every draw
    for gamma in plan.gammas:
        for seed in range(plan.seeds):
            with perturbation.draw(gamma, seed):
                results.append(("gaussian", gamma, seed, perplexity(model, plan.blocks, plan.batch_size)))
            if progress is not None:
                progress.update()
    return _rows(plan, revision, results), perturbation.sigmas


def measure(plan: Plan, index: int, revision, progress) -> tuple[pd.DataFrame, object, dict]:
    """One checkpoint loaded and evaluated (``experiments.llm.lifecycle.run_checkpoints``); the first one's
    sigmas are the run's record of the noise scale (and, on the JAX backend, of its device mesh)."""
    if plan.backend == "jax":
        results, sigmas, mesh = llm_perturb_jax.evaluate_checkpoint(plan, revision, progress)
        # The JAX backend is OLMo-1's: its tensors take that family's rule, recorded as torch's are.
        sigma = _sigma_summary(plan, revision.name, sigmas) | perturbation_record(OLMO1, list(sigmas), plan.scale)
        run = {"sigma": sigma, "jax": mesh}
        return _rows(plan, revision, results), None, {"run": run} if index == 0 else {}
    import torch

    from llm_validation.checkpoints import load_checkpoint

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[plan.dtype]
    model, _ = load_checkpoint(plan.source, revision.name, dtype, plan.device)
    rows, sigmas = evaluate_checkpoint(plan, revision, model, progress)
    from llm_validation.perturb import perturbation_rule  # the family's per-tensor rule, for the manifest

    sigma = _sigma_summary(plan, revision.name, sigmas) | perturbation_rule(model, plan.scale)
    notes = {"run": {"sigma": sigma}} if index == 0 else {}
    return rows, model, notes


prepare_units = pending_units  # a cluster array: the run started, its pending checkpoints


def execute(plan: Plan, workers: int | None = 1) -> pd.DataFrame:
    """Evaluate every planned checkpoint not yet stored under ``plan.out`` (in ``workers`` processes);
    write the final table. The JAX backend runs in this process (its devices are its parallelism)."""
    workers = 1 if plan.backend == "jax" else workers
    manifest = start(plan)
    with marks_failure(plan.out), torch_threads(plan.threads), quiet_transformers(plan.quiet):
        run_checkpoints(plan, manifest, "perturb", "eval", 1 + len(plan.gammas) * plan.seeds, measure, workers)
        return finish_run(plan.out, len(plan.revisions), manifest, perturb_inflection_rows)


def execute_unit(plan: Plan, index: int) -> None:
    """One checkpoint, stored beside the others: a cluster job's share (``experiments.llm.cluster``)."""
    execute_checkpoint(plan, index, "perturb", measure)


def summary(table: pd.DataFrame) -> str:
    """Per checkpoint: base perplexity and the mean perplexity over seeds at each gamma; then T* of each gamma."""
    rows, infl = table[table.checkpoint != "inflection"], table[table.checkpoint == "inflection"]
    base = rows[rows.modification == "none"].set_index("checkpoint")["value"].rename("none")
    noisy = (
        rows[rows.modification == "gaussian"]
        .groupby(["checkpoint", "gamma"])["value"]
        .mean()
        .unstack("gamma")
        .rename(columns=lambda g: f"gamma={g:g}")
    )
    return checkpoint_summary(rows, [base, noisy], infl, (f"gamma={g:g}" for g in infl.gamma))


def report(plan: Plan, table: pd.DataFrame) -> str:
    """What ``ovt llm perturb`` prints after a run."""
    return f"perplexity (mean over {plan.seeds} seed(s)), {len(table)} rows -> {plan.out}\n{summary(table)}"
