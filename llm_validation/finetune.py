"""Full fine-tuning with AdamW through HF ``accelerate``, with an optional L2 pull to the checkpoint.

The objective on a global batch B of examples is the theory's regularised fine-tuning loss

    L(theta) = (1 / N_B) * sum_{(i, t) in B, labels[i, t] != -100} -log p_theta(x_{i,t} | x_{i,<t})
               + (lambda / 2) * sum_p ||theta_p - theta_p(checkpoint)||^2,

with N_B the number of trained tokens of the whole global batch. With replay r > 0 the data term is
the theory's mixture (1 - r) L_task + r L_replay: each step also draws a batch R of pre-training text
(``replay`` examples) and L_replay is its token mean, so the task batch, its order and its share of
the objective's weight, 1 - r, are those of the run without replay. The same script runs on one CPU
process, one GPU, or N processes under ``accelerate launch`` / ``torchrun`` (DDP; on CPUs set
``ACCELERATE_USE_CPU=1``, the gloo backend): every process draws the same global batch from a
generator seeded by ``seed`` and trains on its contiguous share, and each share's token sum is
divided by the global N_B, so the gradient equals the one-process gradient up to summation order.
The pull enters as its gradient lambda * (theta - theta_ckpt), added after the backward pass
(before clipping); AdamW's ``weight_decay`` is a different, decoupled pull toward zero.

``dtype="bfloat16"`` is mixed precision: float32 master weights and optimiser state, the forward and
backward under ``torch.autocast`` in bfloat16 (pure-bf16 weights would swallow fine-tuning updates
of ~1e-6 relative size). Autocast is entered here rather than through ``Accelerator(mixed_precision)``
because accelerate fixes the precision once per process, while the dtype is a per-run setting.
Evaluation runs in the weights' dtype.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import nn
from transformers import PreTrainedTokenizerBase

from analysis import tuned
from llm_validation.evaluate import MAX_LOSS, evaluating, perplexity
from llm_validation.finetune_data import IGNORE, Examples, MCItem
from llm_validation.multiple_choice import score_multiple_choice

DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """One fine-tuning run. ``batch_size`` is global (all processes), in examples.

    ``micro_batch_size`` (per process; None = the whole local share) accumulates gradients over
    several forward passes, with the same result up to summation order. ``grad_clip = inf`` turns
    clipping off; the gradient norm is still computed, to detect divergence. ``replay`` is the weight r
    of the pre-training text in the objective (0: none; ``replay_rows``).
    """

    lr: float = 1e-4
    steps: int = 100
    batch_size: int = 8
    warmup_steps: int = 0
    weight_decay: float = 0.0
    reg: float = 0.0
    grad_clip: float = 1.0
    replay: float = 0.0
    seed: int = 0
    dtype: str = "float32"
    eval_batch_size: int = 16
    micro_batch_size: int | None = None

    def __post_init__(self):
        checks = {
            "lr": (self.lr > 0, "> 0"),
            "steps": (self.steps >= 1, ">= 1"),
            "batch_size": (self.batch_size >= 1, ">= 1"),
            "warmup_steps": (self.warmup_steps >= 0, ">= 0"),
            "weight_decay": (self.weight_decay >= 0, ">= 0"),
            "reg": (self.reg >= 0, ">= 0"),
            "replay": (0 <= self.replay < 1, "in [0, 1)"),
            "grad_clip": (self.grad_clip > 0, "> 0 (inf: no clipping)"),
            "eval_batch_size": (self.eval_batch_size >= 1, ">= 1"),
            "micro_batch_size": (self.micro_batch_size is None or self.micro_batch_size >= 1, "None or >= 1"),
        }
        for name, (ok, allowed) in checks.items():
            if not ok:
                raise ValueError(f"{name}={getattr(self, name)!r} is out of range; allowed: {allowed}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r} is unknown; allowed: {', '.join(DTYPES)}")


@dataclasses.dataclass(frozen=True)
class FinetuneResult:
    """``losses[t]``: the data loss (first term of L) of step t's batch before its update.

    A diverged run stops at the first loss that is NaN or above ``evaluate.MAX_LOSS`` (~709.8, where
    its perplexity overflows; far above any trainable loss, so the test is not borderline) or the
    first non-finite gradient norm, without applying that step; its last loss is the offending one
    and ``final_loss`` is NaN.
    """

    losses: tuple[float, ...]
    diverged: bool
    steps_done: int

    @property
    def final_loss(self) -> float:
        return math.nan if self.diverged else self.losses[-1]


@dataclasses.dataclass(frozen=True)
class GridPoint:
    """One learning rate on one checkpoint: in-task and forgetting metrics after fine-tuning.

    ``seed``: the run's batch order; ``losses``: the training loss of every step
    (``FinetuneResult.losses``, the in-task curve that shows whether the run has flattened);
    ``finetune_loss``: token-mean loss on held-out fine-tuning examples (in-task); ``perplexity``:
    held-out pre-training perplexity (forgetting); ``accuracy`` / ``accuracy_norm``: multiple-choice
    accuracy, NaN without questions. Every metric is NaN for a diverged run: one whose training
    diverged (``FinetuneResult``), or whose held-out loss or perplexity after training is NaN or
    overflows (``evaluate.MAX_LOSS``).
    """

    lr: float
    diverged: bool
    steps_done: int
    train_loss: float
    finetune_loss: float
    perplexity: float
    accuracy: float
    accuracy_norm: float
    seed: int = 0
    losses: tuple[float, ...] = ()


def batch_order(n_examples: int, batch_size: int, steps: int, seed: int) -> Iterator[torch.Tensor]:
    """Row indices of each step's global batch: consecutive seeded permutations of the examples."""
    generator = torch.Generator().manual_seed(seed)
    pending = torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        while len(pending) < batch_size:
            pending = torch.cat([pending, torch.randperm(n_examples, generator=generator)])
        yield pending[:batch_size]
        pending = pending[batch_size:]


REPLAY_ORDER = 0x5EED  # added to a run's seed for its replay batches: an order of their own


def replay_rows(config: FinetuneConfig, world: int = 1) -> int:
    """Rows of pre-training text a step replays: ceil(r / (1 - r) x batch_size), rounded up to a multiple
    of the processes, so that with rows of equal length the replayed tokens are a share ~r of all the
    step trains on, as in a data mixture (Kotha and Liang 2026 replay this way); 0 without replay."""
    if config.replay == 0:
        return 0
    rows = math.ceil(config.replay / (1 - config.replay) * config.batch_size - 1e-9)
    return -(-rows // world) * world


def lr_at(step: int, config: FinetuneConfig) -> float:
    """lr_t = lr * min(1, (t + 1) / warmup_steps), then constant, as the theory's fixed-rate flow."""
    if config.warmup_steps == 0:
        return config.lr
    return config.lr * min(1.0, (step + 1) / config.warmup_steps)


def token_nll_sum(logits_BxLxV: torch.Tensor, labels_BxL: torch.Tensor) -> torch.Tensor:
    """sum over trained tokens of -log p(labels[:, t] | tokens < t), in float32.

    The labels are shifted, not the logits (as transformers' causal-LM loss does), so the logits
    are flattened as a view instead of copied; the last position gets the ignored label.
    """
    targets_BxL = F.pad(labels_BxL[:, 1:], (0, 1), value=IGNORE)
    logits_NxV = logits_BxLxV.flatten(0, 1).float()
    return F.cross_entropy(logits_NxV, targets_BxL.flatten(), ignore_index=IGNORE, reduction="sum")


def trained_tokens(labels_BxL: torch.Tensor) -> int:
    """N: the tokens that carry loss (the first position is never predicted)."""
    return int((labels_BxL[:, 1:] != IGNORE).sum())


def finetune(
    model: nn.Module,
    train: Examples,
    config: FinetuneConfig,
    *,
    replay: Examples | None = None,
    accelerator: Accelerator | None = None,
) -> FinetuneResult:
    """Fine-tune ``model`` in place on ``train`` for ``config.steps`` AdamW steps; never raises on divergence.

    The model ends on the accelerator's device, in the mode it came in. Without a pull (reg = 0) no
    reference copy of the weights is kept. Without ``accelerator``, one is made from the environment
    (``accelerate launch`` / ``torchrun`` settings). ``replay``: the pre-training examples a run with
    ``config.replay`` > 0 mixes in (``replay_rows`` a step, in an order seeded by seed + ``REPLAY_ORDER``);
    ``losses`` stay the task batch's.
    """
    if (config.replay > 0) != (replay is not None and len(replay) > 0):
        raise ValueError(f"replay={config.replay} needs replay examples, and replay examples need replay > 0")
    owned = accelerator is None
    accelerator = accelerator or Accelerator()
    world, rank = accelerator.num_processes, accelerator.process_index
    if config.batch_size % world:
        raise ValueError(f"batch_size={config.batch_size} must be a multiple of the {world} processes")
    share = config.batch_size // world
    micro = config.micro_batch_size or share
    if share % micro:
        raise ValueError(f"micro_batch_size={micro} must divide the per-process batch {share}")

    was_training = model.training
    prepared = accelerator.prepare(model)
    params = [p for p in prepared.parameters() if p.requires_grad]
    reference = [p.detach().clone() for p in params] if config.reg > 0 else None
    # Fused AdamW is one kernel per step on CPU and CUDA (what HF Trainer uses by default too).
    fused = accelerator.device.type in ("cpu", "cuda") or None
    optimizer = accelerator.prepare(
        torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)
    )
    autocast = torch.autocast(accelerator.device.type, torch.bfloat16, enabled=config.dtype == "bfloat16")
    prepared.train()
    losses: list[float] = []
    diverged = False
    n_replay = replay_rows(config, world)
    replay_order = batch_order(len(replay), n_replay, config.steps, config.seed + REPLAY_ORDER) if n_replay else None
    if n_replay and replay.input_ids.shape[1] != train.input_ids.shape[1]:
        raise ValueError(
            f"replay examples of {replay.input_ids.shape[1]} tokens; the task's have {train.input_ids.shape[1]}"
        )
    try:
        for step, rows in enumerate(batch_order(len(train), config.batch_size, config.steps, config.seed)):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, config)
            n_tokens = max(trained_tokens(train.labels[rows]), 1)
            chunks = [(chunk, None) for chunk in rows[rank * share : (rank + 1) * share].split(micro)]
            if replay_order is not None:
                # The replayed rows ride with the last micro-batch: one forward pass, not two small ones.
                mixed = next(replay_order)
                n_replayed = max(trained_tokens(replay.labels[mixed]), 1)
                chunks[-1] = (chunks[-1][0], mixed[rank * (n_replay // world) : (rank + 1) * (n_replay // world)])
            nll = torch.zeros((), device=accelerator.device)
            for k, (chunk, replayed) in enumerate(chunks):
                # Synchronise gradients once per step, on the last micro-batch.
                sync = contextlib.nullcontext() if k == len(chunks) - 1 else accelerator.no_sync(prepared)
                with sync:
                    ids, labels = train.input_ids[chunk], train.labels[chunk]
                    if replayed is not None:
                        ids, labels = (
                            torch.cat([ids, replay.input_ids[replayed]]),
                            torch.cat([labels, replay.labels[replayed]]),
                        )
                    ids = ids.to(accelerator.device, non_blocking=True)
                    labels = labels.to(accelerator.device, non_blocking=True)
                    # No attention mask: padding is on the right only, so causal attention already
                    # hides every pad from every real token, and the fused causal kernel stays in use.
                    with autocast:
                        logits = prepared(input_ids=ids).logits
                        chunk_nll = token_nll_sum(logits[: len(chunk)], labels[: len(chunk)])
                        # DDP averages gradients over processes; the factor `world` turns that into sum / N_B.
                        loss = chunk_nll / n_tokens * world
                        if replayed is not None:  # the mixture (1 - r) L_task + r L_replay
                            replay_nll = token_nll_sum(logits[len(chunk) :], labels[len(chunk) :])
                            loss = (1 - config.replay) * loss + config.replay * replay_nll / n_replayed * world
                    accelerator.backward(loss)
                nll += chunk_nll.detach()
            if reference is not None:
                with torch.no_grad():
                    pull = torch._foreach_sub(params, reference)
                    torch._foreach_add_([p.grad for p in params], pull, alpha=config.reg)
            grad_norm = accelerator.clip_grad_norm_(params, config.grad_clip)
            loss, norm = torch.stack([accelerator.reduce(nll, "sum") / n_tokens, grad_norm.float()]).tolist()
            losses.append(loss)
            if not (loss <= MAX_LOSS and math.isfinite(norm)):
                diverged = True
                break
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    finally:
        optimizer.zero_grad(set_to_none=True)
        if not owned:
            # A caller's accelerator keeps what it prepared (this run's optimizer state included);
            # ours goes with this frame.
            release(accelerator)
        model.train(was_training)
    return FinetuneResult(tuple(losses), diverged, len(losses) - diverged)


def release(accelerator: Accelerator) -> None:
    """Drop what ``accelerator`` prepared (models, optimizers and their state), as
    ``Accelerator.free_memory`` does. On CPU without its full garbage collection: the prepared objects
    hold no reference cycles, so dropping the accelerator's lists frees them, while a full collection
    costs ~0.25 s in a process that holds JAX and transformers, 40% of a tiny study's time. On an
    accelerator ``free_memory`` as is: it also empties the device's cache for the next run."""
    if accelerator.device.type != "cpu":
        accelerator.free_memory()
        return
    for prepared in (accelerator._models, accelerator._optimizers, accelerator._schedulers, accelerator._dataloaders):
        prepared.clear()
    accelerator.step = 0


def masked_loss(model: nn.Module, examples: Examples, batch_size: int) -> float:
    """Token-mean loss over every trained token of ``examples`` (in-task metric), in eval mode."""
    weight = next(model.parameters())
    total = 0.0
    with evaluating(model):
        for ids, labels in zip(examples.input_ids.split(batch_size), examples.labels.split(batch_size)):
            logits = model(input_ids=ids.to(weight.device)).logits
            total += token_nll_sum(logits, labels.to(weight.device)).double().item()
    return total / max(trained_tokens(examples.labels), 1)


def lr_grid(
    model: nn.Module,
    train: Examples,
    heldout: Examples,
    pretrain_blocks: torch.Tensor,
    config: FinetuneConfig,
    lrs: Sequence[float],
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    mc_items: Sequence[MCItem] | None = None,
    replay: Examples | None = None,
    accelerator: Accelerator | None = None,
) -> list[GridPoint]:
    """Fine-tune one checkpoint at each lr (``config.lr`` is replaced) and measure it.

    Every run starts from the checkpoint: one copy of its weights is kept on the CPU and loaded back
    after each run (exact), so ``model`` comes back unchanged. Under several processes every process
    evaluates the whole held-out sets (same numbers everywhere). ``replay``: as ``finetune`` takes it.
    """
    if mc_items is not None and tokenizer is None:
        raise ValueError("scoring multiple-choice questions needs the tokenizer")
    checkpoint = {name: t.detach().to("cpu", copy=True) for name, t in model.state_dict().items()}
    points = []
    for lr in lrs:
        try:
            run = finetune(model, train, dataclasses.replace(config, lr=lr), replay=replay, accelerator=accelerator)
            points.append(_measure(model, run, lr, heldout, pretrain_blocks, config, tokenizer, mc_items))
        finally:
            model.load_state_dict(checkpoint)
    return points


def _measure(model, run: FinetuneResult, lr, heldout, pretrain_blocks, config, tokenizer, mc_items) -> GridPoint:
    diverged = GridPoint(lr, True, run.steps_done, *[math.nan] * 5, seed=config.seed, losses=run.losses)
    if run.diverged:
        return diverged
    finetune_loss = masked_loss(model, heldout, config.eval_batch_size)
    forgetting = perplexity(model, pretrain_blocks, config.eval_batch_size)
    if not finetune_loss <= MAX_LOSS or forgetting.diverged:
        return diverged
    accuracy = accuracy_norm = math.nan
    if mc_items is not None:
        scores = score_multiple_choice(model, tokenizer, mc_items, batch_size=config.eval_batch_size)
        accuracy, accuracy_norm = scores.accuracy, scores.accuracy_norm
    return GridPoint(
        lr=lr,
        diverged=False,
        steps_done=run.steps_done,
        train_loss=run.final_loss,
        finetune_loss=finetune_loss,
        perplexity=forgetting.perplexity,
        accuracy=accuracy,
        accuracy_norm=accuracy_norm,
        seed=config.seed,
        losses=run.losses,
    )


def tuned_lr(points: Sequence[GridPoint]) -> float:
    """The lr of one checkpoint's grid with the lowest in-task (held-out fine-tuning) loss.

    Diverged runs are ignored; NaN when every run diverged. For a series, map it per checkpoint:
    ``{ckpt: tuned_lr(pts) for ckpt, pts in grids.items()}``.
    """
    return tuned.tuned_lr([p.lr for p in points], [math.nan if p.diverged else p.finetune_loss for p in points])
