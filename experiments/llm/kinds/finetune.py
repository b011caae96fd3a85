"""``ovt llm finetune``: fine-tune every checkpoint of a series over an lr grid, into a result store.

    ovt llm finetune --model M --data FILE --format F --lrs L1,L2 --steps N --eval-text FILE [FIELD=VALUE ...]

The run is an ``experiments.llm.config.FinetuneRun``: every field, its default, its bounds and its
flag are declared there once (``ovt llm finetune --help``); a preset sets several, and a comma list
on a scalar field sweeps it (``reg=0,0.1``: two runs).

For each checkpoint in turn (one model in memory), and from it at each lr (``finetune.lr_grid``
restores the checkpoint's weights exactly between rates): ``--steps`` AdamW steps on ``--data``
(``--batch-size`` examples of ``--seq-len`` tokens, linear warmup over ``--warmup-steps``, the L2
pull ``--reg`` toward the checkpoint, with ``--replay`` r > 0 the loss (1 - r) L_task + r L_replay on
pre-training text from ``--replay-data`` (``finetune.replay_rows`` rows a step), batch order seeded by
``--seed``), once per batch order
``--seed`` .. ``--seed + --repeats - 1`` (the same orders at every checkpoint: paired repeats).
Rows (long form, docs/ARCHITECTURE.md "Result store"; ``seed`` is the run's batch order):

- ``modification='none'``: the checkpoint before fine-tuning, metrics ``perplexity`` (the
  ``--eval-text`` token set, as perturb builds it) and ``finetune_loss`` (token-mean loss on the
  held-out fine-tuning examples), and ``accuracy`` / ``accuracy_norm`` with ``--mc-data``;
- ``modification='finetune'``, ``lr_policy='fixed'``, one block per (lr, order): ``perplexity``
  (forgetting), ``finetune_loss`` (in-task), ``train_loss`` (the last step's batch loss), the
  accuracies with ``--mc-data``, and ``step_loss`` at every step (column ``step``: the in-task
  training curve, kept up to the offending loss of a diverged run). A run that diverges (a
  non-finite gradient, or a loss that is NaN or above ``evaluate.MAX_LOSS`` ~ 709.8, where its
  perplexity overflows; during training or on the held-out sets after it) is recorded, never a
  crash: ``diverged`` True, every value NaN, ``steps_done`` the updates made;
- ``lr_policy='tuned'``: per checkpoint and order the block of the lr with the lowest held-out
  ``finetune_loss`` (``finetune.tuned_lr``; diverged runs never win; all NaN if every lr diverged);
- ``checkpoint='inflection'``, ``metric='inflection'``, ``pretrain_time`` NaN: per fixed lr and for
  the tuned curve, T* of the post-fine-tuning perplexity over tokens (``analysis.inflection``,
  the theory's helper, of the mean over orders: ``seed`` -1 with several; NaN when the minimum is at
  an end, or with fewer than three checkpoints).

With ``--replay`` the fine-tuning rows carry a ``replay`` column (r).
``lr``, ``steps``, ``reg`` are NaN on the base rows (and ``lr`` on the tuned inflection); ``seed``
is ``--seed`` throughout. Fine-tuning data are tokenised once with the first checkpoint's tokenizer;
every checkpoint must tokenise ``--eval-text`` identically (checked, as in perturb). Held-out
fine-tuning examples are the last ``round(f * n)`` (at least one) of ``--data``, or ``--heldout-data``.

Every input is checked before the run directory is created (exit 2, one line naming the value,
nothing written; numbers and flags before torch is imported); a malformed or non-UTF-8 data file
names the file (and row). The run directory follows ``rundir.lifecycle``'s lifecycle: a failure
while running (exit 1) marks the manifest ``failed`` with the reason; finished checkpoints are kept
under ``DIR/chunks/`` and the same command resumes after them, while another config replaces a
failed run. A seed gives the same table every time (for a fixed thread count). The manifest
records the inputs (paths and sha256), the grid, the resolved revisions and the tuned lr of each
checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from experiments.llm.config import MAX_SEED, FinetuneRun
from experiments.llm.kinds.base import CheckpointKind
from experiments.llm.lifecycle import RunFailure, checkpoint_summary, manifest_head
from experiments.llm.series import SeriesPlan, check_device, load_tokenizer
from rundir import fingerprint, store
from rundir.derived import finetune_inflection_rows
from rundir.lifecycle import UsageError, path_from_run

if TYPE_CHECKING:  # annotations only: torch loads when a command runs, after its input is checked
    from llm_validation.finetune import FinetuneConfig
    from llm_validation.finetune_data import Examples

HELDOUT_FRACTION = 0.1
EVAL_BATCH_SIZE = 16  # FinetuneConfig's default; perplexity and losses are sums over tokens, not batch means
NAMED = ("hf:", "corpus:")  # data named, not a path: no file to check or hash


@dataclasses.dataclass
class FinetunePlan(SeriesPlan):
    """A finetune run's plan: the series' fields, and the fine-tuning data read and checked."""

    data: dict  # {"path", "sha256", "n_train", "n_heldout", "heldout": how held out}
    train: Examples
    heldout: Examples
    mc: dict | None  # {"path", "sha256", "n_items"}
    mc_items: list | None
    replay: dict | None  # {"path", "sha256", "n_examples"} of the replayed text
    replay_examples: Examples | None

    @property
    def seeds(self) -> range:
        """The batch orders, the same at every (checkpoint, lr)."""
        return range(self.cfg.seed, self.cfg.seed + self.cfg.repeats)

    def resolved(self) -> dict:
        # The replayed text's hash only where a run replays: a run without replay keeps the identity it
        # had before replay existed, and resumes.
        replayed = {"replay_sha256": self.replay["sha256"]} if self.replay else {}
        return (
            super().resolved()
            | {
                "data_sha256": self.data["sha256"],
                "heldout": self.data["heldout"],
                "mc_sha256": self.mc and self.mc["sha256"],
            }
            | replayed
        )

    @property
    def metrics(self) -> tuple[str, ...]:
        return ("perplexity", "finetune_loss", "train_loss") + (("accuracy", "accuracy_norm") if self.mc_items else ())


def finetune_config(cfg: FinetuneRun, lr: float | None = None, seed: int | None = None) -> FinetuneConfig:
    """The library's config of one run of the grid (``lr``, batch order ``seed``; default the first)."""
    from llm_validation.finetune import FinetuneConfig

    return FinetuneConfig(
        lr=cfg.lrs[0] if lr is None else lr,
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        warmup_steps=cfg.warmup_steps,
        reg=cfg.reg,
        replay=cfg.replay,
        seed=cfg.seed if seed is None else seed,
        dtype=cfg.dtype,
        eval_batch_size=EVAL_BATCH_SIZE,
    )


class Finetune(CheckpointKind):
    name = "finetune"
    CONFIG = FinetuneRun
    HELP = "fine-tune every checkpoint over an lr grid: forgetting and in-task metrics into a result store"
    Plan = FinetunePlan
    unit = "run"

    def check(self, cfg: FinetuneRun) -> None:
        if cfg.warmup_steps > cfg.steps:
            raise UsageError(f"warmup_steps={cfg.warmup_steps} exceeds steps={cfg.steps}; allowed: 0..steps")
        if cfg.seed + cfg.repeats - 1 > MAX_SEED:
            allowed = f"seed + repeats - 1 <= {MAX_SEED}"
            raise UsageError(f"seed={cfg.seed} with repeats={cfg.repeats} passes {MAX_SEED}; allowed: {allowed}")
        _check_file("data", cfg.data, folder_ok=cfg.format == "text")
        _check_file("heldout_data", cfg.heldout_data, folder_ok=cfg.format == "text")
        _check_file("mc_data", cfg.mc_data)
        _check_file("replay_data", cfg.replay_data, folder_ok=True)
        check_device(cfg.device)
        finetune_config(cfg)  # the library's own checks

    def resolve(self, cfg: FinetuneRun, shared: dict) -> dict:
        """The fine-tuning examples (tokenised by the first checkpoint's tokenizer), the held-out
        ones, and the multiple-choice items, read and checked."""
        from llm_validation.finetune_data import load_examples, read_multiple_choice

        out = shared["out"]
        tokenizer = load_tokenizer(shared["source"], shared["is_folder"], shared["revisions"][0].name)
        examples = load_examples(cfg.data, cfg.format, tokenizer, cfg.seq_len)  # DataError: file and row
        if cfg.heldout_data is not None:
            train, heldout = examples, load_examples(cfg.heldout_data, cfg.format, tokenizer, cfg.seq_len)
            how = {"data": cfg.heldout_data, "sha256": _sha256(cfg.heldout_data)}
        else:
            if len(examples) < 2:
                raise UsageError(
                    f"data={cfg.data} gives {len(examples)} example of seq_len={cfg.seq_len}; "
                    "holding some out needs >= 2 (or give heldout_data)"
                )
            fraction = HELDOUT_FRACTION if cfg.heldout_fraction is None else cfg.heldout_fraction
            n_heldout = min(len(examples) - 1, max(1, round(fraction * len(examples))))
            train, heldout = examples.split(n_heldout)
            how = {"fraction": fraction, "rule": "the last round(fraction * n) examples (at least 1) of --data"}
        mc_items = read_multiple_choice(cfg.mc_data) if cfg.mc_data is not None else None
        data = {
            "path": _named_or_path(cfg.data, out),
            "sha256": _sha256(cfg.data),
            "n_train": len(train),
            "n_heldout": len(heldout),
            "heldout": how,
        }
        mc = None
        if mc_items is not None:
            mc = {"path": path_from_run(cfg.mc_data, out), "sha256": _sha256(cfg.mc_data), "n_items": len(mc_items)}
        replay = replay_examples = None
        if cfg.replay_data is not None:  # pre-training text, packed as pre-training packs it
            replay_examples = load_examples(cfg.replay_data, "text", tokenizer, cfg.seq_len)
            replay = {"path": _named_or_path(cfg.replay_data, out), "sha256": _sha256(cfg.replay_data)}
            replay["n_examples"] = len(replay_examples)
        return dict(
            data=data,
            train=train,
            heldout=heldout,
            mc=mc,
            mc_items=mc_items,
            replay=replay,
            replay_examples=replay_examples,
        )

    def units_per_checkpoint(self, plan: FinetunePlan) -> int:
        return 1 + len(plan.cfg.lrs) * plan.cfg.repeats

    def derive(self, table: pd.DataFrame) -> pd.DataFrame:
        return finetune_inflection_rows(table)

    def new_manifest(self, plan: FinetunePlan) -> dict:
        head = manifest_head(plan, {"tuned_lr": None}, {"batch_size": EVAL_BATCH_SIZE})
        return head | {
            "data": {
                **plan.data,
                "tokenizer": f"the tokenizer of {plan.revisions[0].name}",
            },
            "mc": plan.mc,
            "replay": plan.replay,
            "finetune": dataclasses.asdict(finetune_config(plan.cfg)) | {"lr": None},
            "optimizer": "AdamW (fused where available), constant lr after warmup, grad clip 1.0",
        }

    def before(self, plan: FinetunePlan) -> None:
        accelerator(plan.cfg.device)

    def measure(self, plan: FinetunePlan, index: int, revision, progress) -> tuple[pd.DataFrame, object, dict]:
        """One checkpoint loaded, measured before fine-tuning, then fine-tuned at every lr of the grid
        in every batch order."""
        import torch

        from llm_validation.checkpoints import load_checkpoint
        from llm_validation.finetune import lr_grid, tuned_lr

        cfg = plan.cfg
        model, tokenizer = load_checkpoint(plan.source, revision.name, torch.float32, cfg.device)
        base = _base_metrics(plan, model, tokenizer)
        progress.update()
        points = []
        for seed in plan.seeds:
            config = finetune_config(cfg, seed=seed)
            for lr in cfg.lrs:  # one lr a call, for the progress bar; each starts from the checkpoint
                grid = (model, plan.train, plan.heldout, plan.blocks, config, [lr])
                points += lr_grid(
                    *grid,
                    tokenizer=tokenizer,
                    mc_items=plan.mc_items,
                    replay=plan.replay_examples,
                    accelerator=accelerator(cfg.device),
                )
                progress.update()
        first = [p for p in points if p.seed == cfg.seed]
        notes = {"tuned_lr": tuned_lr(first), "diverged_lrs": sorted({p.lr for p in points if p.diverged})}
        return checkpoint_rows(plan, revision, base, points), model, notes

    def report(self, plan: FinetunePlan, table: pd.DataFrame) -> str:
        head = f"{len(plan.revisions)} checkpoint(s) x {len(plan.cfg.lrs)} lr(s), {len(table)} rows -> {plan.out}"
        return f"{head}\n{summary(table)}"


KIND = Finetune()


def _sha256(path: str) -> str | None:
    """Of a file, of a folder's files (relative path and bytes, sorted), or of a built-in corpus' text
    (``corpus:NAME``: the bytes a file of that text would hold); None for hub data (``hf:``)."""
    if path.startswith("corpus:"):
        from llm_validation.finetune_data import corpus_text  # torch: planning has imported it already

        return hashlib.sha256(corpus_text(path).encode()).hexdigest()
    return None if path.startswith(NAMED) else fingerprint.sha256(path)


def _named_or_path(path: str, out: Path) -> str:
    """How the manifest records a data source: a name as given (corpus:, hf:), a path relative to the run."""
    return path if path.startswith(NAMED) else path_from_run(path, out)


def _check_file(flag: str, path: str | None, folder_ok: bool = False) -> None:
    if path is None or path.startswith(NAMED):
        return
    if not (Path(path).is_file() or (folder_ok and Path(path).is_dir())):
        kind = "file or folder" if folder_ok else "file"
        raise UsageError(f"{flag}={path} does not exist or is not a {kind}")


def _base_metrics(plan: FinetunePlan, model, tokenizer) -> dict[str, float]:
    """The checkpoint before fine-tuning, measured as the grid measures after it."""
    from llm_validation.evaluate import perplexity
    from llm_validation.finetune import masked_loss
    from llm_validation.multiple_choice import score_multiple_choice

    metrics = {
        "perplexity": perplexity(model, plan.blocks, EVAL_BATCH_SIZE).perplexity,
        "finetune_loss": masked_loss(model, plan.heldout, EVAL_BATCH_SIZE),
    }
    if plan.mc_items:
        scores = score_multiple_choice(model, tokenizer, plan.mc_items, batch_size=EVAL_BATCH_SIZE)
        metrics.update(accuracy=scores.accuracy, accuracy_norm=scores.accuracy_norm)
    return metrics


def checkpoint_rows(plan: FinetunePlan, revision, base: dict[str, float], points: list) -> pd.DataFrame:
    """The rows of one checkpoint: base, every (lr, seed) (``lr_policy='fixed'``) with its training
    loss at every step (metric ``step_loss``, column ``step``), and per seed the tuned lr's copy."""
    from llm_validation.finetune import tuned_lr

    nan = math.nan
    records = [
        dict(
            modification="none",
            metric=metric,
            value=value,
            lr_policy="",
            diverged=not math.isfinite(value),
            steps_done=0.0,
            seed=plan.cfg.seed,
        )
        for metric, value in base.items()
    ]

    replayed = {"replay": plan.cfg.replay} if plan.cfg.replay else {}  # a column of replay runs only

    def block(point, lr_policy: str, lr: float, seed: int) -> list[dict]:
        return [
            dict(
                modification="finetune",
                lr=lr,
                steps=float(plan.cfg.steps),
                reg=plan.cfg.reg,
                metric=metric,
                value=getattr(point, metric) if point else nan,
                lr_policy=lr_policy,
                diverged=point.diverged if point else True,
                steps_done=float(point.steps_done) if point else nan,
                seed=seed,
                **replayed,
            )
            for metric in plan.metrics
        ]

    for point in points:
        fixed = block(point, "fixed", point.lr, point.seed)
        records += fixed
        records += [
            fixed[0] | dict(metric="step_loss", value=loss, step=float(step)) for step, loss in enumerate(point.losses)
        ]
    for seed in plan.seeds:
        mine = [p for p in points if p.seed == seed]
        best = tuned_lr(mine)
        records += block(next((p for p in mine if p.lr == best), None), "tuned", best, seed)
    columns = pd.DataFrame.from_records(records)  # base rows leave lr, steps, reg NaN; only step rows a step
    return store.block(
        source="llm",
        setup=plan.setup,
        checkpoint=revision.name,
        pretrain_time=float(revision.tokens),
        **{name: columns[name].tolist() for name in columns},
    )


@functools.cache
def accelerator(device: str):
    """One ``Accelerator`` a process (the lr grid reuses it), refused where accelerate places the run
    on another device than asked."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=device == "cpu")
    if accelerator.device.type != device:
        raise RunFailure(f"--device {device}: accelerate placed the run on {accelerator.device}")
    return accelerator


def summary(table: pd.DataFrame) -> str:
    """Per checkpoint: perplexity before and after fine-tuning at each lr, the tuned lr and its losses;
    then T* of each curve."""
    rows = table[table.checkpoint != "inflection"]
    ppl = rows[rows.metric == "perplexity"]
    base = ppl[ppl.modification == "none"].set_index("checkpoint")["value"].rename("ppl before")
    fixed = ppl[ppl.lr_policy == "fixed"].pivot_table(index="checkpoint", columns="lr", values="value")
    fixed.columns = [f"ppl lr={lr:g}" for lr in fixed.columns]
    tuned = rows[rows.lr_policy == "tuned"]
    tuned_lr = tuned.groupby("checkpoint")["lr"].first().rename("tuned lr")
    # Means over the batch orders; the tuned lr shown is the first order's.
    tuned_ppl = tuned[tuned.metric == "perplexity"].groupby("checkpoint")["value"].mean().rename("ppl tuned")
    tuned_loss = tuned[tuned.metric == "finetune_loss"].groupby("checkpoint")["value"].mean().rename("ft loss tuned")
    infl = table[table.checkpoint == "inflection"]
    labels = ("tuned" if policy == "tuned" else f"lr={lr:g}" for policy, lr in zip(infl.lr_policy, infl.lr))
    return checkpoint_summary(rows, [base, fixed, tuned_lr, tuned_ppl, tuned_loss], infl, labels)
