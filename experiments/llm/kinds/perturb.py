"""``ovt llm perturb``: perplexity of Gaussian-perturbed checkpoints into a result store.

    ovt llm perturb [--preset validation [--quick]] [FIELD=VALUE ...] [--out DIR] [--quiet]
                    --model M [--revisions R1,R2 | --tokens 1e9,2.3T] --eval-text FILE
                    --gammas G1,G2 --seeds K [--scale init|relative|absolute]
                    [--seq-len 128] [--batch-size 8] [--max-blocks N] [--threads N]
                    [--dtype float32|bfloat16] [--device cpu|cuda|tpu] [--backend torch|jax]

The run is a ``experiments.llm.config.PerturbRun``: every flag is also a field (``seeds=3``), a preset sets
several (``experiments.llm.presets``), and a comma list on a scalar field sweeps it. ``KIND.plan(cfg, out)`` checks
it, ``execute(plan)`` runs it (``experiments.llm.batch.run_config(cfg, out)`` does both).

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

Bounds and checks: ``experiments.llm.series``; the run lifecycle: ``experiments.llm.kinds.base``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from experiments.llm.config import PerturbRun
from experiments.llm.kinds import perturb_jax as llm_perturb_jax
from experiments.llm.kinds.base import CheckpointKind
from experiments.llm.lifecycle import checkpoint_summary
from experiments.llm.series import check_device
from llm_validation.suites import OLMO1, perturbation_record
from rundir import store
from rundir.derived import perturb_inflection_rows

if TYPE_CHECKING:  # annotations only: torch loads when a run starts, after its input is checked
    from llm_validation.evaluate import Perplexity
    from llm_validation.revisions import Revision


class Perturb(CheckpointKind):
    name = "perturb"
    CONFIG = PerturbRun
    HELP = "perplexity of Gaussian-perturbed checkpoints into a result store"
    unit = "eval"

    def check(self, cfg: PerturbRun) -> None:
        if cfg.backend == "jax":
            llm_perturb_jax.check(cfg)
        else:
            check_device(cfg.device)

    def units_per_checkpoint(self, plan) -> int:
        return 1 + len(plan.cfg.gammas) * plan.cfg.seeds

    def workers(self, plan, workers: int | None) -> int | None:
        return 1 if plan.cfg.backend == "jax" else workers  # the JAX backend's devices are its parallelism

    def derive(self, table: pd.DataFrame) -> pd.DataFrame:
        return perturb_inflection_rows(table)

    def manifest_fields(self, plan) -> dict:
        device = plan.cfg.device
        devices = llm_perturb_jax.manifest_fields(device) if plan.cfg.backend == "jax" else {"devices": [device]}
        return devices | {"sigma": None}  # the noise scale: the first checkpoint's note

    def measure(self, plan, index: int, revision, progress) -> tuple[pd.DataFrame, object, dict]:
        """One checkpoint loaded and evaluated; the first one's sigmas are the run's record of the noise
        scale (and, on the JAX backend, of its device mesh)."""
        cfg = plan.cfg
        if cfg.backend == "jax":
            results, sigmas, mesh = llm_perturb_jax.evaluate_checkpoint(plan, revision, progress)
            # The JAX backend is OLMo-1's: its tensors take that family's rule, recorded as torch's are.
            sigma = _sigma_summary(cfg.scale, revision.name, sigmas) | perturbation_record(
                OLMO1, list(sigmas), cfg.scale
            )
            run = {"sigma": sigma, "jax": mesh}
            return _rows(plan, revision, results), None, {"run": run} if index == 0 else {}
        import torch

        from llm_validation.checkpoints import load_checkpoint
        from llm_validation.perturb import perturbation_rule  # the family's per-tensor rule, for the manifest

        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[cfg.dtype]
        model, _ = load_checkpoint(plan.source, revision.name, dtype, cfg.device)
        rows, sigmas = evaluate_checkpoint(plan, revision, model, progress)
        sigma = _sigma_summary(cfg.scale, revision.name, sigmas) | perturbation_rule(model, cfg.scale)
        return rows, model, {"run": {"sigma": sigma}} if index == 0 else {}

    def report(self, plan, table: pd.DataFrame) -> str:
        return f"perplexity (mean over {plan.cfg.seeds} seed(s)), {len(table)} rows -> {plan.out}\n{summary(table)}"


KIND = Perturb()


def _sigma_summary(scale: str, checkpoint: str, sigmas: dict[str, float]) -> dict:
    values = sorted(sigmas.values())
    return {
        "scale": scale,
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


def _rows(plan, revision: Revision, results: list[tuple[str, float, int, Perplexity]]) -> pd.DataFrame:
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


def evaluate_checkpoint(plan, revision, model, progress=None) -> tuple[pd.DataFrame, dict[str, float]]:
    """Base perplexity, then every (gamma, seed) draw of one loaded checkpoint; returns (rows, sigmas)."""
    from llm_validation.evaluate import perplexity
    from llm_validation.perturb import Perturbation

    cfg = plan.cfg
    results = [("none", float("nan"), 0, perplexity(model, plan.blocks, cfg.batch_size))]
    if progress is not None:
        progress.update()
    perturbation = Perturbation(model, cfg.scale, cfg.noise_device)  # one exact copy serves every draw
    for gamma in cfg.gammas:
        for seed in range(cfg.seeds):
            with perturbation.draw(gamma, seed):
                results.append(("gaussian", gamma, seed, perplexity(model, plan.blocks, cfg.batch_size)))
            if progress is not None:
                progress.update()
    return _rows(plan, revision, results), perturbation.sigmas


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
