"""``ovt llm multimodal``: LLaVA's two-stage multimodal adaptation of every checkpoint, into a result store.

    ovt llm multimodal [--preset validation [--quick]] [FIELD=VALUE ...] [--out DIR] [--quiet]
                       --model M [--revisions R1,R2 | --tokens 1e9,2.3T] --eval-text FILE
                       [--lrs 1e-4,3e-4,1e-3,3e-3] [--steps 400] [--warmup-steps 40]
                       [--stage1-steps 200] [--stage1-lr 1e-3] [--image-tokens 4] [--vision-dim 64]
                       [--scenes 2000] [--heldout-scenes 200] [--world-seed 0] [--seed 0] [--repeats 1]

The run is an ``experiments.llm.config_multimodal.MultimodalRun``; the world, the frozen encoder, the
projector and the two stages are ``llm_validation.multimodal``'s. Per checkpoint (one model in
memory), and per batch order ``seed`` .. ``seed + repeats - 1`` (the same orders at every
checkpoint: paired repeats): stage 1 (``stage1_steps`` AdamW steps at ``stage1_lr``, the projector
alone, the model frozen) once, then from its end stage 2 (``steps`` at each lr, projector and model),
the checkpoint's weights and the aligned projector restored exactly between rates. Both stages warm
up linearly over ``warmup_steps`` (stage 1 over at most its own steps), clip gradients at 1.0 and
train on ``batch_size`` captions a step. Rows (long form, docs/ARCHITECTURE.md "Result store"):

- ``modification='none'``: the checkpoint itself, ``perplexity`` (the ``--eval-text`` token set, as
  every checkpoint run builds it) and ``caption_loss`` (held-out captions behind the projector as
  initialised, before stage 1); ``stage`` "", ``lr``, ``steps`` NaN;
- ``modification='multimodal'``, ``lr_policy='fixed'``, column ``stage`` ``projector`` (stage 1) or
  ``joint`` (stage 2), the theory wing's names (``experiments.sweep.rows.STAGES``), with ``lr`` and
  ``steps`` that stage's (stage 1's ``stage1_lr`` and ``stage1_steps``; NaN lr without stage 1),
  one block per stage run: ``perplexity`` (forgetting: the model alone, after the stage),
  ``caption_loss`` (held-out scenes, in-task), ``train_loss`` (the last step's batch loss) and
  ``step_loss`` at every step (column ``step``). A stage that diverges (``finetune``'s rule) is
  recorded, never a crash: ``diverged`` True, every value NaN, ``steps_done`` the updates made;
  after a diverged stage 1 its stage 2 runs are recorded diverged, untrained;
- ``checkpoint='inflection'``: per lr, T* of the stage-2 perplexity over tokens (the mean over
  orders: ``seed`` -1 with several; ``rundir.derived.finetune_inflection_rows``).

``seed`` is the batch order (``seed`` on the base rows). Captions are tokenised once with the first
checkpoint's tokenizer, and ``image_tokens`` plus the longest caption must fit every checkpoint's
positions (checked). The token set, the series' checks and the lifecycle (bad input refused before
anything is written, resume after a kill, workers, cluster jobs) are every checkpoint run's
(``experiments.llm.series``, ``experiments.llm.kinds.base``). The manifest records the world, the
grammar with example captions, the encoder, the projector and both stages' configs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from experiments.llm.config import MAX_SEED
from experiments.llm.config_multimodal import MAX_FEATURES, OWN, MultimodalRun
from experiments.llm.kinds.base import CheckpointKind
from experiments.llm.kinds.finetune import EVAL_BATCH_SIZE, accelerator
from experiments.llm.lifecycle import checkpoint_summary, manifest_head
from experiments.llm.series import SeriesPlan, check_device, load_tokenizer, read_back
from rundir import store
from rundir.derived import finetune_inflection_rows
from rundir.lifecycle import UsageError

if TYPE_CHECKING:  # annotations only: torch loads when a run starts, after its input is checked
    from llm_validation.finetune import FinetuneConfig
    from llm_validation.multimodal import CaptionTask

METRICS = ("perplexity", "caption_loss", "train_loss")  # of every stage run, beside its step losses
STAGES = {1: "projector", 2: "joint"}  # the ``stage`` column, in the theory wing's words


@dataclasses.dataclass
class MultimodalPlan(SeriesPlan):
    """A multimodal run's plan: the series' fields, and the caption task built and checked."""

    task: CaptionTask

    @property
    def seeds(self) -> range:
        """The batch orders, the same at every checkpoint."""
        return range(self.cfg.seed, self.cfg.seed + self.cfg.repeats)

    def resolved(self) -> dict:
        captions = self.task.train.input_ids.numpy().tobytes() + self.task.heldout.input_ids.numpy().tobytes()
        return super().resolved() | {"captions_sha256": hashlib.sha256(captions).hexdigest()}


def stage_config(cfg: MultimodalRun, stage: int, seed: int | None = None) -> FinetuneConfig | None:
    """The library's config of one stage in batch order ``seed`` (default the first): stage 1 at
    ``stage1_lr`` (None without steps), stage 2 at the first lr (the grid replaces it)."""
    from llm_validation.finetune import FinetuneConfig

    if stage == 1 and cfg.stage1_steps == 0:
        return None
    steps = cfg.stage1_steps if stage == 1 else cfg.steps
    return FinetuneConfig(
        lr=cfg.stage1_lr if stage == 1 else cfg.lrs[0],
        steps=steps,
        batch_size=cfg.batch_size,
        warmup_steps=min(cfg.warmup_steps, steps),
        seed=cfg.seed if seed is None else seed,
        dtype=cfg.dtype,
        eval_batch_size=EVAL_BATCH_SIZE,
    )


class Multimodal(CheckpointKind):
    name = "multimodal"
    CONFIG = MultimodalRun
    HELP = "LLaVA-style two-stage multimodal adaptation of every checkpoint: forgetting and caption loss"
    Plan = MultimodalPlan
    unit = "stage"

    def check(self, cfg: MultimodalRun) -> None:
        read_back(cfg, OWN)
        if cfg.warmup_steps > cfg.steps:
            raise UsageError(f"warmup_steps={cfg.warmup_steps} exceeds steps={cfg.steps}; allowed: 0..steps")
        if cfg.seed + cfg.repeats - 1 > MAX_SEED:
            allowed = f"seed + repeats - 1 <= {MAX_SEED}"
            raise UsageError(f"seed={cfg.seed} with repeats={cfg.repeats} passes {MAX_SEED}; allowed: {allowed}")
        features = (cfg.scenes + cfg.heldout_scenes) * cfg.image_tokens * cfg.vision_dim
        if features > MAX_FEATURES:
            raise UsageError(
                f"(scenes + heldout_scenes) x image_tokens x vision_dim = {features:,} encoder features; "
                f"allowed: <= {MAX_FEATURES:,} (lower one of them)"
            )
        check_device(cfg.device)

    def resolve(self, cfg: MultimodalRun, shared: dict) -> dict:
        """The scenes, their features and their captions in the first checkpoint's tokens; the image
        tokens and the longest caption checked against every checkpoint's positions."""
        from llm_validation.multimodal import caption_task

        tokenizer = load_tokenizer(shared["source"], shared["is_folder"], shared["revisions"][0].name)
        task = caption_task(tokenizer, cfg.scenes, cfg.heldout_scenes, cfg.image_tokens, cfg.vision_dim, cfg.world_seed)
        _check_positions(shared, task)
        return dict(task=task)

    def units_per_checkpoint(self, plan: MultimodalPlan) -> int:
        return 1 + plan.cfg.repeats * (1 + len(plan.cfg.lrs))

    def derive(self, table: pd.DataFrame) -> pd.DataFrame:
        return finetune_inflection_rows(table[table.stage == STAGES[2]], "multimodal")

    def new_manifest(self, plan: MultimodalPlan) -> dict:
        stage1 = stage_config(plan.cfg, 1)
        head = manifest_head(plan, {"diverged_runs": None}, {"batch_size": EVAL_BATCH_SIZE})
        return head | {
            "multimodal": plan.task.record() | {"tokenizer": f"the tokenizer of {plan.revisions[0].name}"},
            "stage1": stage1 and dataclasses.asdict(stage1),
            "stage2": dataclasses.asdict(stage_config(plan.cfg, 2)) | {"lr": None},
            "optimizer": "AdamW (fused where available), linear warmup then constant lr, grad clip 1.0; "
            "stage 1: the projector only (the model's requires_grad off), stage 2: projector and model",
        }

    def before(self, plan: MultimodalPlan) -> None:
        accelerator(plan.cfg.device)

    def measure(self, plan: MultimodalPlan, index: int, revision, progress) -> tuple[pd.DataFrame, object, dict]:
        """One checkpoint loaded and measured, then both stages in every batch order."""
        import torch

        from llm_validation.checkpoints import load_checkpoint
        from llm_validation.evaluate import perplexity
        from llm_validation.multimodal import caption_loss, two_stage_grid

        cfg = plan.cfg
        model, _ = load_checkpoint(plan.source, revision.name, torch.float32, cfg.device)
        base = {
            "perplexity": perplexity(model, plan.blocks, EVAL_BATCH_SIZE).perplexity,
            "caption_loss": caption_loss(model, plan.task, cfg.world_seed, EVAL_BATCH_SIZE),
        }
        progress.update()
        points = []
        for seed in plan.seeds:
            stages = (stage_config(cfg, 1, seed), stage_config(cfg, 2, seed))
            first, second = two_stage_grid(
                model, plan.task, plan.blocks, *stages, cfg.lrs, cfg.world_seed, accelerator=accelerator(cfg.device)
            )
            points += [first, *second]
            progress.update(1 + len(cfg.lrs))
        notes = {"diverged_runs": [[STAGES[p.stage], p.lr, p.seed] for p in points if p.diverged]}
        return checkpoint_rows(plan, revision, base, points), model, notes

    def report(self, plan: MultimodalPlan, table: pd.DataFrame) -> str:
        cfg = plan.cfg
        head = f"{len(plan.revisions)} checkpoint(s) x {len(cfg.lrs)} lr(s) x {cfg.repeats} order(s), "
        return f"{head}{len(table)} rows -> {plan.out}\n{summary(table)}"


KIND = Multimodal()


def _check_positions(shared: dict, task: CaptionTask) -> None:
    """The image tokens and the longest caption (EOS included) in one sequence must fit every
    checkpoint's ``max_position_embeddings``."""
    from transformers import AutoConfig

    need, source = task.image_tokens + task.caption_tokens, shared["source"]
    for revision in shared["revisions"]:
        if shared["is_folder"]:
            config = AutoConfig.from_pretrained(str(Path(source) / revision.name))
        else:
            config = AutoConfig.from_pretrained(source, revision=revision.name)
        limit = getattr(config, "max_position_embeddings", None)
        if limit is not None and need > limit:
            raise UsageError(
                f"image_tokens={task.image_tokens} and captions of up to {task.caption_tokens} tokens need "
                f"{need} positions; {revision.name} has {limit} (max_position_embeddings); "
                f"allowed: image_tokens <= {limit - task.caption_tokens}"
            )


def checkpoint_rows(plan: MultimodalPlan, revision, base: dict[str, float], points: list) -> pd.DataFrame:
    """The rows of one checkpoint: its own, then every stage run's metrics and step losses."""
    cfg = plan.cfg
    records = [
        dict(modification="none", metric=metric, value=value, stage="", lr_policy="",
             diverged=not math.isfinite(value), steps_done=0.0, seed=cfg.seed)
        for metric, value in base.items()
    ]  # fmt: skip
    for point in points:
        run = dict(
            modification="multimodal",
            stage=STAGES[point.stage],
            lr=point.lr,
            steps=float(cfg.stage1_steps if point.stage == 1 else cfg.steps),
            lr_policy="fixed",
            diverged=point.diverged,
            steps_done=float(point.steps_done),
            seed=point.seed,
        )
        records += [run | dict(metric=metric, value=getattr(point, metric)) for metric in METRICS]
        records += [run | dict(metric="step_loss", value=v, step=float(t)) for t, v in enumerate(point.losses)]
    columns = pd.DataFrame.from_records(records)  # base rows leave lr and steps NaN; only step rows a step
    return store.block(
        source="llm",
        setup=plan.setup,
        checkpoint=revision.name,
        pretrain_time=float(revision.tokens),
        **{name: columns[name].tolist() for name in columns},
    )


def summary(table: pd.DataFrame) -> str:
    """Per checkpoint: perplexity and caption loss before, after stage 1 and after stage 2 at each lr
    (means over the batch orders); then T* of each lr's stage-2 perplexity."""
    rows = table[table.checkpoint != "inflection"]
    columns = []
    for metric, short in (("perplexity", "ppl"), ("caption_loss", "caption")):
        these = rows[rows.metric == metric]
        columns.append(these[these.modification == "none"].set_index("checkpoint")["value"].rename(f"{short} before"))
        first = these[these.stage == STAGES[1]].groupby("checkpoint")["value"].mean()
        columns.append(first.rename(f"{short} stage 1"))
        second = these[these.stage == STAGES[2]].pivot_table(index="checkpoint", columns="lr", values="value")
        second.columns = [f"{short} lr={lr:g}" for lr in second.columns]
        columns.append(second)
    infl = table[table.checkpoint == "inflection"]
    return checkpoint_summary(rows, columns, infl, (f"lr={lr:g}" for lr in infl.lr))
