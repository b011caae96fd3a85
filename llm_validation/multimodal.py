"""Multimodal adaptation: a CPU analogue of LLaVA's two-stage recipe (Liu et al. 2023, "Visual
Instruction Tuning"; the modification Springer et al. 2025 apply to OLMo-1B checkpoints) on a
language-model checkpoint.

World. A scene is ``OBJECTS`` = 2 objects on a ``GRID`` x ``GRID`` board, each with a shape, a
colour, a size and a cell (no two objects in one cell), drawn uniformly by a seeded generator. Its
caption comes from the grammar

    caption  := object " " relation " " object "."
    object   := "a " size " " colour " " shape
    relation := "left of" | "right of" | "above" | "below"

and places the first object relative to the second: left or right of it where their columns differ,
else above or below ("a small red circle left of a large blue square."). A caption is a function of
its scene, so the caption loss can only fall far below its text-only floor through the image.

Vision encoder (frozen). The scene's attributes one-hot, x in {0, 1}^F (F = ``FEATURES`` = 32, ten
ones), go through a fixed seeded random map to k patches of d_v features,

    v_j = tanh(x W_j),    W_j in R^{F x d_v},  entries ~ N(0, 1/10)  (unit variance before tanh),

computed once for every scene (the encoder never trains, so its output is a table).

Projector (LLaVA-1.5's two-layer MLP), per patch into the model's hidden size H,

    P(v) = W_2 GELU(W_1 v + b_1) + b_2,    W_1: H x d_v, W_2: H x H,

its init uniform in +-1/sqrt(fan_in) (``nn.Linear``'s bound) from a seeded generator. The k projected
patches are the image tokens, prepended to the caption's token embeddings as ``inputs_embeds``.

Caption loss: the token-mean NLL of the caption tokens (and the EOS that ends each caption) given the
image tokens and the caption so far; image positions carry no loss (``finetune.token_nll_sum``).

Stage 1 (feature alignment): the projector alone, the language model frozen (``requires_grad``
False: it is not in the optimizer and its weights stay bit for bit). Stage 2: projector and language
model together at the run's lr. Both are ``finetune.finetune`` runs (AdamW, linear warmup, clipping,
divergence, seeded batch order): an example's ``input_ids`` are its scene's row of the feature table,
then its caption's tokens, and ``Captioner`` turns them into the embeddings above.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import nn
from transformers import PreTrainedTokenizerBase

from llm_validation.evaluate import MAX_LOSS, perplexity
from llm_validation.finetune import FinetuneConfig, finetune, masked_loss
from llm_validation.finetune_data import IGNORE, Examples

SHAPES = ("circle", "square", "triangle", "star")
COLOURS = ("red", "green", "blue", "yellow")
SIZES = ("small", "large")
GRID = 3
OBJECTS = 2
WIDTHS = (len(SHAPES), len(COLOURS), len(SIZES), GRID, GRID)  # one-hot widths: shape, colour, size, column, row
FEATURES = OBJECTS * sum(WIDTHS)
ONES = OBJECTS * len(WIDTHS)  # ones in a scene's one-hot code
GRAMMAR = "a SIZE COLOUR SHAPE RELATION a SIZE COLOUR SHAPE. + EOS; RELATION: left of | right of | above | below"


def generator(seed: int, purpose: str) -> torch.Generator:
    """A CPU generator of one use of ``seed`` (scenes, encoder, projector): the uses draw independently."""
    digest = hashlib.blake2b(f"{seed}:{purpose}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))


def draw_scenes(n: int, seed: int, split: str) -> torch.Tensor:
    """[n, OBJECTS, 5] attribute indices (shape, colour, size, column, row) of ``n`` scenes, uniform,
    the objects in distinct cells. ``split`` (train, heldout) keys the draw, and scene i is the same
    for every n: the held-out scenes do not depend on how many train, nor a run's scenes on its size."""
    kinds = OBJECTS * 3
    u = torch.rand(n, kinds + GRID * GRID, generator=generator(seed, f"scenes:{split}"))  # rows drawn in order
    widths = torch.tensor(WIDTHS[:3]).repeat(OBJECTS)
    shape_colour_size = (u[:, :kinds] * widths).long().view(n, OBJECTS, 3)
    cells = u[:, kinds:].argsort(-1)[:, :OBJECTS]  # a random permutation of the cells, first OBJECTS
    return torch.cat([shape_colour_size, (cells % GRID)[..., None], (cells // GRID)[..., None]], -1)


def caption(scene: torch.Tensor) -> str:
    """The grammar's caption of one scene [OBJECTS, 5] (row 0 is the top of the board)."""
    (h1, c1, s1, x1, y1), (h2, c2, s2, x2, y2) = scene.tolist()
    relation = "left of" if x1 < x2 else "right of" if x1 > x2 else "above" if y1 < y2 else "below"
    return f"a {SIZES[s1]} {COLOURS[c1]} {SHAPES[h1]} {relation} a {SIZES[s2]} {COLOURS[c2]} {SHAPES[h2]}."


def ones(scenes: torch.Tensor) -> torch.Tensor:
    """[n, ONES] where each scene's one-hot code x has its ones (object by object, attribute by attribute)."""
    starts = torch.tensor([0, *WIDTHS[:-1]]).cumsum(0)
    return (scenes + starts + sum(WIDTHS) * torch.arange(OBJECTS)[:, None]).flatten(1)


def one_hot(scenes: torch.Tensor) -> torch.Tensor:
    """x: [n, FEATURES] float32, every attribute of every object one-hot."""
    return torch.zeros(len(scenes), FEATURES).scatter_(1, ones(scenes), 1.0)


def vision_features(scenes: torch.Tensor, image_tokens: int, vision_dim: int, seed: int) -> torch.Tensor:
    """The frozen encoder's patches v [n, k, d_v] = tanh(x W), W [F, k d_v] ~ N(0, 1/ONES), seeded; x W
    summed as the rows of W at x's ones, in order, so a scene's features are the same bits in any batch."""
    W_FxKD = torch.randn(FEATURES, image_tokens * vision_dim, generator=generator(seed, "encoder")) / math.sqrt(ONES)
    rows = ones(scenes)
    xW = W_FxKD[rows[:, 0]]
    for j in range(1, ONES):
        xW = xW + W_FxKD[rows[:, j]]
    return torch.tanh(xW).view(len(scenes), image_tokens, vision_dim)


def _uniform(shape: tuple[int, ...], fan_in: int, g: torch.Generator) -> nn.Parameter:
    bound = 1 / math.sqrt(fan_in)
    return nn.Parameter(torch.rand(shape, generator=g) * (2 * bound) - bound)


class Projector(nn.Module):
    """P(v) = W_2 GELU(W_1 v + b_1) + b_2 from d_v to H, float32, its init drawn from ``seed``."""

    def __init__(self, vision_dim: int, hidden_size: int, seed: int):
        super().__init__()
        g = generator(seed, "projector")
        self.W1_HxV = _uniform((hidden_size, vision_dim), vision_dim, g)
        self.b1_H = _uniform((hidden_size,), vision_dim, g)
        self.W2_HxH = _uniform((hidden_size, hidden_size), hidden_size, g)
        self.b2_H = _uniform((hidden_size,), hidden_size, g)

    def forward(self, v_BxKxV: torch.Tensor) -> torch.Tensor:
        return F.linear(F.gelu(F.linear(v_BxKxV, self.W1_HxV, self.b1_H)), self.W2_HxH, self.b2_H)


class Captioner(nn.Module):
    """The language model with the projector in front. ``input_ids`` [B, 1 + L]: a scene's row of
    ``features`` [n_scenes, k, d_v], then its caption's tokens; the output's ``logits`` [B, k + L, V]."""

    def __init__(self, lm: nn.Module, projector: Projector, features: torch.Tensor):
        super().__init__()
        self.lm, self.projector = lm, projector
        self.register_buffer("features", features, persistent=False)

    def forward(self, input_ids: torch.Tensor):
        text_BxLxH = self.lm.get_input_embeddings()(input_ids[:, 1:])
        image_BxKxH = self.projector(self.features[input_ids[:, 0]]).to(text_BxLxH.dtype)
        return self.lm(inputs_embeds=torch.cat([image_BxKxH, text_BxLxH], 1))


@dataclasses.dataclass(frozen=True)
class CaptionTask:
    """Every scene's encoder features [n_train + n_heldout, k, d_v], and the captions as examples:
    ``input_ids`` [n, 1 + L] (scene row, caption, EOS, padding), ``labels`` [n, k + L] (IGNORE on the
    image and the padding), L the longest caption in tokens with its EOS."""

    features: torch.Tensor
    train: Examples
    heldout: Examples
    examples: tuple[str, ...]  # the first training captions, for the record

    @property
    def image_tokens(self) -> int:
        return self.features.shape[1]

    @property
    def vision_dim(self) -> int:
        return self.features.shape[2]

    @property
    def caption_tokens(self) -> int:
        return self.train.input_ids.shape[1] - 1

    def record(self) -> dict:
        """The world, encoder and projector as a manifest records them."""
        return {
            "world": {"shapes": SHAPES, "colours": COLOURS, "sizes": SIZES, "grid": GRID, "objects": OBJECTS},
            "grammar": GRAMMAR,
            "examples": list(self.examples),
            "n_train": len(self.train),
            "n_heldout": len(self.heldout),
            "caption_tokens": self.caption_tokens,
            "encoder": f"v_j = tanh(x W_j), x one-hot [{FEATURES}], W ~ N(0, 1/{ONES}), frozen",
            "projector": "P(v) = W_2 GELU(W_1 v + b_1) + b_2, init U(+-1/sqrt(fan_in))",
            "image_tokens": self.image_tokens,
            "vision_dim": self.vision_dim,
        }


def caption_task(
    tokenizer: PreTrainedTokenizerBase, n_train: int, n_heldout: int, image_tokens: int, vision_dim: int, seed: int
) -> CaptionTask:
    """The scenes of ``seed`` (train and held-out), their features and their captions in ``tokenizer``'s tokens."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token to end a caption with")
    scenes = torch.cat([draw_scenes(n_train, seed, "train"), draw_scenes(n_heldout, seed, "heldout")])
    texts = [caption(scene) for scene in scenes]
    eos = tokenizer.eos_token_id
    tokens = [ids + [eos] for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    length = max(map(len, tokens))
    input_ids = torch.full((len(tokens), 1 + length), eos)
    labels = torch.full((len(tokens), image_tokens + length), IGNORE)
    mask = torch.zeros_like(labels)
    for row, ids in enumerate(tokens):
        input_ids[row, 0] = row
        input_ids[row, 1 : 1 + len(ids)] = torch.tensor(ids)
        labels[row, image_tokens : image_tokens + len(ids)] = torch.tensor(ids)
        mask[row, : image_tokens + len(ids)] = 1
    train, heldout = Examples(input_ids, labels, mask).split(n_heldout)
    features = vision_features(scenes, image_tokens, vision_dim, seed)
    return CaptionTask(features, train, heldout, tuple(texts[:3]))


def captioner(lm: nn.Module, task: CaptionTask, seed: int) -> Captioner:
    """``lm`` with a fresh projector of ``seed`` (on the model's device) and the task's features."""
    device = next(lm.parameters()).device
    projector = Projector(task.vision_dim, lm.get_input_embeddings().embedding_dim, seed).to(device)
    return Captioner(lm, projector, task.features.to(device))


@dataclasses.dataclass(frozen=True)
class StagePoint:
    """One stage of one run: ``losses`` the training loss of every step (``FinetuneResult.losses``),
    ``train_loss`` the last one, ``caption_loss`` the held-out caption loss and ``perplexity`` the
    held-out pre-training perplexity after it; every metric NaN when the stage diverged (its training,
    or a held-out loss NaN or above ``evaluate.MAX_LOSS``)."""

    stage: int
    lr: float
    seed: int
    diverged: bool
    steps_done: int
    train_loss: float
    caption_loss: float
    perplexity: float
    losses: tuple[float, ...] = ()


@contextlib.contextmanager
def _lm_trainable(model: Captioner, trainable: bool):
    flags = [p.requires_grad for p in model.lm.parameters()]
    model.lm.requires_grad_(trainable)
    try:
        yield
    finally:
        for p, flag in zip(model.lm.parameters(), flags):
            p.requires_grad_(flag)


def run_stage(
    model: Captioner,
    task: CaptionTask,
    blocks: torch.Tensor,
    config: FinetuneConfig,
    stage: int,
    *,
    accelerator: Accelerator | None = None,
) -> StagePoint:
    """Train ``model`` in place on the task's captions, the projector alone (``stage`` 1) or with the
    language model (2), and measure it on the held-out captions and the pre-training ``blocks``."""
    if stage not in (1, 2):
        raise ValueError(f"stage={stage!r} is not a stage; allowed: 1 (projector), 2 (projector and model)")
    with _lm_trainable(model, stage == 2):
        run = finetune(model, task.train, config, accelerator=accelerator)
    return measure_stage(model, task, blocks, stage, config, run.losses, run.diverged, run.steps_done)


def measure_stage(
    model: Captioner,
    task: CaptionTask,
    blocks: torch.Tensor,
    stage: int,
    config: FinetuneConfig,
    losses: tuple[float, ...] = (),
    diverged: bool = False,
    steps_done: int = 0,
) -> StagePoint:
    """The stage's point: ``model`` measured after a run of ``config`` that made ``losses`` (none: a
    stage of no steps, the model as it is, ``lr`` NaN)."""
    lr = config.lr if losses else math.nan
    failed = StagePoint(stage, lr, config.seed, True, steps_done, math.nan, math.nan, math.nan, losses)
    if diverged:
        return failed
    loss = masked_loss(model, task.heldout, config.eval_batch_size)
    forgetting = perplexity(model.lm, blocks, config.eval_batch_size)
    if not loss <= MAX_LOSS or forgetting.diverged:
        return failed
    last = losses[-1] if losses else math.nan
    return StagePoint(stage, lr, config.seed, False, steps_done, last, loss, forgetting.perplexity, losses)


def two_stage_grid(
    lm: nn.Module,
    task: CaptionTask,
    blocks: torch.Tensor,
    stage1: FinetuneConfig | None,
    stage2: FinetuneConfig,
    lrs: Sequence[float],
    projector_seed: int,
    *,
    accelerator: Accelerator | None = None,
) -> tuple[StagePoint, list[StagePoint]]:
    """Stage 1 once (``stage1``; None: none, the fresh projector of ``projector_seed`` measured), then
    stage 2 from its end at each lr (``stage2``'s lr replaced). Between rates the model's weights are
    loaded back from one exact CPU copy and the projector from its end of stage 1, so ``lm`` comes
    back unchanged. After a diverged stage 1 every stage 2 is recorded diverged, untrained."""
    model = captioner(lm, task, projector_seed)
    checkpoint = {name: t.detach().to("cpu", copy=True) for name, t in lm.state_dict().items()}
    points = []
    try:
        if stage1 is None:
            first = measure_stage(model, task, blocks, 1, stage2)
        else:
            first = run_stage(model, task, blocks, stage1, 1, accelerator=accelerator)
        aligned = {name: t.detach().clone() for name, t in model.projector.state_dict().items()}
        for lr in lrs:
            config = dataclasses.replace(stage2, lr=lr)
            if first.diverged:
                points.append(StagePoint(2, lr, config.seed, True, 0, *[math.nan] * 3))
                continue
            try:
                points.append(run_stage(model, task, blocks, config, 2, accelerator=accelerator))
            finally:
                lm.load_state_dict(checkpoint)
                model.projector.load_state_dict(aligned)
    finally:
        lm.load_state_dict(checkpoint)
    return first, points


def caption_loss(lm: nn.Module, task: CaptionTask, projector_seed: int, batch_size: int) -> float:
    """The held-out caption loss of ``lm`` behind a fresh projector of ``projector_seed`` (before stage 1)."""
    return masked_loss(captioner(lm, task, projector_seed), task.heldout, batch_size)
