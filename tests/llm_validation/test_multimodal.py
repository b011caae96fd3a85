"""``llm_validation.multimodal``: the world and its captions, the frozen encoder, the projector, and
the two stages: stage 1 leaves every weight of the model bit for bit, stage 2 changes them, and the
held-out caption loss falls in each."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest
import torch

from llm_validation import multimodal as mm
from llm_validation.evaluate import pack_tokens, perplexity
from llm_validation.finetune import FinetuneConfig
from llm_validation.finetune_data import IGNORE
from tests.llm_validation.conftest import make_model, tiny_corpus

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CAPTION = re.compile(r"a (small|large) (red|green|blue|yellow) (circle|square|triangle|star) "
                     r"(left of|right of|above|below) a (small|large) (red|green|blue|yellow) "
                     r"(circle|square|triangle|star)\.")  # fmt: skip
STAGE1 = FinetuneConfig(lr=3e-3, steps=40, batch_size=8, warmup_steps=4, seed=1)
STAGE2 = FinetuneConfig(lr=1e-2, steps=40, batch_size=8, warmup_steps=4, seed=1)


@pytest.fixture(scope="module")
def task(tokenizer):
    return mm.caption_task(tokenizer, 300, 40, image_tokens=3, vision_dim=16, seed=0)


@pytest.fixture(scope="module")
def blocks(tokenizer):
    documents = tokenizer(tiny_corpus(40, seed=9), add_special_tokens=False)["input_ids"]
    return pack_tokens(documents, 32, tokenizer.eos_token_id)[:6]


def test_scenes_are_seeded_and_their_captions_follow_the_grammar():
    scenes = mm.draw_scenes(500, 7, "train")
    assert scenes.shape == (500, 2, 5) and torch.equal(scenes, mm.draw_scenes(500, 7, "train"))
    assert not torch.equal(scenes, mm.draw_scenes(500, 8, "train"))
    assert torch.equal(mm.draw_scenes(20, 7, "heldout"), mm.draw_scenes(60, 7, "heldout")[:20])
    cells = scenes[..., 3] + 3 * scenes[..., 4]
    assert (cells[:, 0] != cells[:, 1]).all() and (scenes >= 0).all()
    assert [int(scenes[..., i].max()) for i in range(5)] == [3, 3, 1, 2, 2]  # every value drawn
    assert all(CAPTION.fullmatch(mm.caption(s)) for s in scenes)
    # (shape, colour, size, column, row): a small red circle in the top left, a large blue square below it.
    scene = torch.tensor([[0, 0, 0, 0, 0], [1, 2, 1, 0, 2]])
    assert mm.caption(scene) == "a small red circle above a large blue square."
    assert mm.caption(scene.flip(0)) == "a large blue square below a small red circle."
    assert mm.caption(torch.tensor([[3, 3, 0, 2, 1], [2, 1, 1, 1, 1]])) == (
        "a small yellow star right of a large green triangle."
    )
    x = mm.one_hot(scenes)
    assert x.shape == (500, mm.FEATURES) and (x.sum(1) == mm.ONES).all()


def test_the_encoder_is_a_fixed_map_and_the_projector_init_is_seeded():
    scenes = mm.draw_scenes(50, 0, "train")
    v = mm.vision_features(scenes, 4, 8, seed=3)
    assert v.shape == (50, 4, 8) and torch.equal(v, mm.vision_features(scenes, 4, 8, seed=3))
    assert v.abs().max() < 1 and 0.3 < v.std() < 0.8  # tanh of unit-variance inputs
    # The same scene, the same features (a function of the scene, not of its place in the draw).
    assert torch.equal(mm.vision_features(scenes[5:6], 4, 8, seed=3), v[5:6])
    state = torch.random.get_rng_state()
    one, two = mm.Projector(8, 32, seed=5), mm.Projector(8, 32, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is left alone
    assert all(torch.equal(a, b) for a, b in zip(one.parameters(), two.parameters()))
    assert one.W1_HxV.abs().max() <= 1 / math.sqrt(8) and one.W2_HxH.abs().max() <= 1 / math.sqrt(32)
    assert one(v).shape == (50, 4, 32)


def test_caption_examples_put_the_scene_first_and_no_loss_on_the_image(tokenizer, task):
    assert len(task.train) == 300 and len(task.heldout) == 40 and task.features.shape == (340, 3, 16)
    assert task.train.input_ids[:, 0].tolist() == list(range(300))
    assert task.heldout.input_ids[:, 0].tolist() == list(range(300, 340))
    assert (task.train.labels[:, :3] == IGNORE).all()
    first = tokenizer(task.examples[0], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert task.train.labels[0, 3 : 3 + len(first)].tolist() == first
    assert task.train.input_ids[0, 1 : 1 + len(first)].tolist() == first
    assert (task.train.labels[0, 3 + len(first) :] == IGNORE).all()
    assert task.caption_tokens == max(int((row != IGNORE).sum()) for row in task.train.labels)


def test_the_caption_loss_reads_the_image(tokenizer, task):
    model = make_model(tokenizer, seed=1)
    captioner = mm.captioner(model, task, seed=0)
    logits = captioner(task.heldout.input_ids[:4]).logits
    assert logits.shape == (4, 3 + task.caption_tokens, len(tokenizer))
    loss = mm.caption_loss(model, task, 0, 16)
    assert 5.0 < loss < 6.5  # about log(V) = log(300) = 5.70 for an untrained model
    blank = dataclasses.replace(task, features=torch.zeros_like(task.features))
    assert mm.caption_loss(model, blank, 0, 16) != loss


def test_stage_1_leaves_every_model_weight_and_stage_2_changes_them(tokenizer, task, blocks):
    model = make_model(tokenizer, seed=1)
    before = {name: t.clone() for name, t in model.state_dict().items()}
    captioner = mm.captioner(model, task, seed=0)
    init = {name: t.clone() for name, t in captioner.projector.state_dict().items()}
    first = mm.run_stage(captioner, task, blocks, STAGE1, 1)
    assert all(torch.equal(t, before[name]) for name, t in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())  # trainable again after the stage
    assert all(not torch.equal(t, init[name]) for name, t in captioner.projector.state_dict().items())
    assert first.perplexity == perplexity(model, blocks, 16).perplexity
    second = mm.run_stage(captioner, task, blocks, STAGE2, 2)
    changed = [name for name, t in model.state_dict().items() if not torch.equal(t, before[name])]
    assert changed == list(before)  # every tensor of the model moved
    assert second.perplexity != first.perplexity and not second.diverged and second.steps_done == 40


def test_the_caption_loss_falls_in_stage_1_and_further_in_stage_2(tokenizer, task, blocks):
    model = make_model(tokenizer, seed=1)
    before = {name: t.clone() for name, t in model.state_dict().items()}
    base = mm.caption_loss(model, task, 0, 16)
    first, points = mm.two_stage_grid(model, task, blocks, STAGE1, STAGE2, [1e-3, 1e-2], 0)
    assert all(torch.equal(t, before[name]) for name, t in model.state_dict().items())  # restored
    assert (first.stage, first.lr, first.seed, len(first.losses)) == (1, 3e-3, 1, 40)
    assert [(p.stage, p.lr) for p in points] == [(2, 1e-3), (2, 1e-2)]
    low, high = (p.caption_loss for p in points)
    print(f"caption loss: before {base:.4f}, stage 1 {first.caption_loss:.4f}, stage 2 {low:.4f} / {high:.4f}")
    assert first.caption_loss < base - 0.02  # the projector alone moves the frozen model
    assert high < low < first.caption_loss - 0.5  # the model itself learns far more, the more at the larger lr
    assert high < 3.5 and points[1].train_loss < 3.5
    # Stage 2 at an lr starts from the end of stage 1 whatever came before: the grid's point is a lone run's.
    captioner = mm.captioner(model, task, seed=0)
    mm.run_stage(captioner, task, blocks, STAGE1, 1)
    alone = mm.run_stage(captioner, task, blocks, STAGE2, 2)
    assert alone == points[1]


def test_no_stage_1_measures_the_projector_as_initialised(tokenizer, task, blocks):
    model = make_model(tokenizer, seed=1)
    first, [point] = mm.two_stage_grid(model, task, blocks, None, STAGE2, [1e-3], 0)
    assert first.losses == () and math.isnan(first.lr) and math.isnan(first.train_loss) and not first.diverged
    assert first.caption_loss == mm.caption_loss(model, task, 0, 16)
    assert point.steps_done == 40 and point.caption_loss < first.caption_loss


def test_a_diverged_stage_is_recorded_never_a_crash(tokenizer, task, blocks):
    model = make_model(tokenizer, seed=1)
    # The model's layer norms absorb a projector grown by lr 1e6; at 1e10 its outputs overflow.
    wild = dataclasses.replace(STAGE1, lr=1e10, warmup_steps=0, steps=10)
    first, [point] = mm.two_stage_grid(model, task, blocks, wild, STAGE2, [1e-3], 0)
    assert first.diverged and first.steps_done == 1 and math.isnan(first.losses[-1])
    assert math.isnan(first.caption_loss) and math.isnan(first.perplexity)
    assert point.diverged and point.steps_done == 0 and point.losses == ()  # stage 2 recorded, untrained
    wild = dataclasses.replace(STAGE2, warmup_steps=0, steps=10)
    _, [point] = mm.two_stage_grid(model, task, blocks, STAGE1, wild, [1e6], 0)
    assert point.diverged and math.isnan(point.caption_loss) and math.isnan(point.perplexity)
