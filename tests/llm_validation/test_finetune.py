"""Fine-tuning loop: plain-loop equivalence, the L2 pull, divergence, determinism, DDP, the lr grid."""

from __future__ import annotations

import dataclasses
import math
import os
import socket

import pytest
import torch
from accelerate import Accelerator, PartialState
from transformers import OlmoForCausalLM

from llm_validation.evaluate import MAX_LOSS, pack_tokens
from llm_validation.finetune import (
    REPLAY_ORDER,
    FinetuneConfig,
    GridPoint,
    batch_order,
    finetune,
    lr_grid,
    replay_rows,
    tuned_lr,
)
from llm_validation.finetune_data import IGNORE, Examples, load_examples, read_multiple_choice

from .conftest import make_model, tiny_corpus
from .test_finetune_data import HH_ROWS, MC_ROWS, tokenizer, write_jsonl  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONFIG = FinetuneConfig(lr=3e-3, steps=4, batch_size=4, seed=3)


@pytest.fixture(scope="module")
def train(tmp_path_factory, tokenizer):
    return load_examples(write_jsonl(tmp_path_factory.mktemp("hh") / "hh.jsonl", HH_ROWS), "hh", tokenizer, 48)


def distance2(model_a, model_b) -> float:
    with torch.no_grad():
        return sum(float(((a - b) ** 2).sum()) for a, b in zip(model_a.parameters(), model_b.parameters()))


def same_weights(model_a, model_b) -> bool:
    return all(torch.equal(a, b) for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values()))


def plain_loop(model, train, config: FinetuneConfig) -> list[float]:
    """Textbook SFT with transformers' own causal-LM loss (token mean over the batch), clipped AdamW."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=True)
    model.train()
    losses = []
    for rows in batch_order(len(train), config.batch_size, config.steps, config.seed):
        ids, labels = train.input_ids[rows], train.labels[rows]
        n_tokens = int((labels[:, 1:] != IGNORE).sum())
        loss = model(input_ids=ids, labels=labels, num_items_in_batch=n_tokens).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def test_no_pull_is_plain_fine_tuning_bit_for_bit(tokenizer, train):
    ours, plain = make_model(tokenizer), make_model(tokenizer)
    result = finetune(ours, train, CONFIG)
    assert list(result.losses) == plain_loop(plain, train, CONFIG)
    assert same_weights(ours, plain)
    assert result.steps_done == CONFIG.steps and not result.diverged and result.final_loss == result.losses[-1]
    assert not ours.training  # back in the mode it came in


def test_pull_ends_closer_to_the_checkpoint(tokenizer, train):
    checkpoint = make_model(tokenizer)
    distances = []
    for reg in (0.0, 3.0, 30.0):
        model = make_model(tokenizer)
        finetune(model, train, FinetuneConfig(lr=1e-2, steps=6, batch_size=4, reg=reg))
        distances.append(distance2(model, checkpoint))
    assert distances[0] > distances[1] > distances[2] > 0


@pytest.mark.parametrize("how", ["lr 1e2", "lr 1e6", "inf weight"])
def test_divergence_is_recorded_not_raised(tokenizer, train, how):
    """Both ends of the divergent range: at lr 1e2 the losses stay finite but overflow the perplexity
    (far beyond MAX_LOSS ~ 710, so the verdict is not borderline); at 1e6 they are NaN."""
    model = make_model(tokenizer)
    if how == "inf weight":
        with torch.no_grad():
            model.model.layers[0].mlp.up_proj.weight[0, 0] = math.inf
    before = {name: t.clone() for name, t in model.state_dict().items()}
    lr = {"lr 1e2": 1e2, "lr 1e6": 1e6}.get(how, CONFIG.lr)
    result = finetune(model, train, FinetuneConfig(lr=lr, steps=20, batch_size=4))
    assert result.diverged and math.isnan(result.final_loss)
    assert not result.losses[-1] <= MAX_LOSS and len(result.losses) == result.steps_done + 1 < 20
    assert all(loss <= MAX_LOSS for loss in result.losses[:-1])
    if how == "inf weight":  # the failing step is not applied
        assert result.steps_done == 0
        assert all(torch.equal(before[name], t) for name, t in model.state_dict().items())


def test_one_seed_one_result_and_micro_batches_agree(tokenizer, train):
    runs = [make_model(tokenizer) for _ in range(4)]
    results = [
        finetune(runs[0], train, CONFIG),
        finetune(runs[1], train, CONFIG),
        finetune(runs[2], train, dataclasses.replace(CONFIG, micro_batch_size=1)),
        finetune(runs[3], train, dataclasses.replace(CONFIG, seed=4)),
    ]
    assert results[0] == results[1] and same_weights(runs[0], runs[1])
    assert results[2].losses == pytest.approx(results[0].losses, rel=1e-5)
    for a, b in zip(runs[2].parameters(), runs[0].parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert not same_weights(runs[3], runs[0])


def test_a_callers_accelerator_lets_each_run_go_without_a_garbage_collection(tokenizer, train, monkeypatch):
    """With the caller's accelerator (as the lr grid passes it), a run's optimizer and its state are
    freed when the run returns, by reference counting alone, and the next run prepares afresh."""
    import gc
    import weakref

    made = []

    class Watched(torch.optim.AdamW):  # the loop's AdamW, each one watched by a weak reference
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(weakref.ref(self))

    monkeypatch.setattr(torch.optim, "AdamW", Watched)
    accelerator = Accelerator(cpu=True)
    model = make_model(tokenizer)
    gc.disable()
    try:
        first = finetune(model, train, CONFIG, accelerator=accelerator)
        assert made and made[0]() is None, "the run's optimizer outlived it without a garbage collection"
        assert not accelerator._models and not accelerator._optimizers and accelerator.step == 0
        again = finetune(make_model(tokenizer), train, CONFIG, accelerator=accelerator)
    finally:
        gc.enable()
    assert again == first and not accelerator._optimizers


def test_bfloat16_autocast_keeps_float32_weights(tokenizer, train):
    model = make_model(tokenizer)
    result = finetune(model, train, FinetuneConfig(lr=1e-3, steps=2, batch_size=4, dtype="bfloat16"))
    assert not result.diverged and all(p.dtype == torch.float32 for p in model.parameters())
    with pytest.raises(ValueError, match="dtype='float16' is unknown"):
        FinetuneConfig(dtype="float16")
    with pytest.raises(ValueError, match="lr=nan is out of range; allowed: > 0"):
        FinetuneConfig(lr=math.nan)


def _ddp_worker(rank: int, world: int, port: int, checkpoint: str, train, config: FinetuneConfig, out: str):
    """One process of a gloo DDP run, set up as ``torchrun`` would, on CPU (``ACCELERATE_USE_CPU``)."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world), ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1",
    )  # fmt: skip
    torch.set_num_threads(1)
    model = OlmoForCausalLM.from_pretrained(checkpoint)
    result = finetune(model, train, config)
    if rank == 0:
        saved = {"processes": PartialState().num_processes, "losses": result.losses, "state": model.state_dict()}
        torch.save(saved, out)
    torch.distributed.destroy_process_group()


def test_two_processes_match_one(tmp_path, tokenizer, train):
    model = make_model(tokenizer)
    model.save_pretrained(tmp_path / "checkpoint")
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = (2, port, str(tmp_path / "checkpoint"), train, CONFIG, str(tmp_path / "ddp.pt"))
    torch.multiprocessing.spawn(_ddp_worker, args=args, nprocs=2, join=True)
    ddp = torch.load(tmp_path / "ddp.pt")
    assert ddp["processes"] == 2  # a real DDP run, not two copies of the one-process run
    single = finetune(model, train, CONFIG)
    assert ddp["losses"] == pytest.approx(single.losses, rel=1e-5)
    for name, weight in model.state_dict().items():
        torch.testing.assert_close(ddp["state"][name], weight, rtol=0, atol=1e-5)


def test_lr_grid_measures_each_lr_from_the_same_checkpoint(tmp_path, tokenizer):
    mc_path = write_jsonl(tmp_path / "mc.jsonl", MC_ROWS)
    train, heldout = load_examples(mc_path, "mc", tokenizer, 24).split(4)
    blocks = pack_tokens(tokenizer(tiny_corpus(20, seed=9))["input_ids"], 32, tokenizer.eos_token_id)
    model = make_model(tokenizer)
    checkpoint = {name: t.clone() for name, t in model.state_dict().items()}
    config = FinetuneConfig(steps=3, batch_size=4)
    points = lr_grid(
        model, train, heldout, blocks, config, [1e-3, 3e-2, 1e6], tokenizer=tokenizer,
        mc_items=read_multiple_choice(mc_path), accelerator=Accelerator(),  # one accelerator for every run
    )  # fmt: skip
    assert all(torch.equal(checkpoint[name], t) for name, t in model.state_dict().items())
    low, high, huge = points
    assert [p.lr for p in points] == [1e-3, 3e-2, 1e6]
    assert not low.diverged and not high.diverged and huge.diverged
    for p in (low, high):
        assert math.isfinite(p.finetune_loss) and p.perplexity > 1
        assert 0 <= p.accuracy <= 1 and 0 <= p.accuracy_norm <= 1
    assert all(math.isnan(getattr(huge, f)) for f in ("train_loss", "finetune_loss", "perplexity", "accuracy"))
    # The grid point equals a lone run of that lr from the checkpoint.
    alone = finetune(make_model(tokenizer), train, FinetuneConfig(lr=3e-2, steps=3, batch_size=4))
    assert high.train_loss == alone.final_loss
    assert tuned_lr(points) == min((low, high), key=lambda p: p.finetune_loss).lr


def test_tuned_lr_ignores_diverged_runs():
    def point(lr, loss, diverged=False):
        return GridPoint(lr, diverged, 1, loss, loss, 10.0, math.nan, math.nan)

    assert tuned_lr([point(1e-4, 2.0), point(1e-3, 1.5), point(1e-2, math.nan, True)]) == 1e-3
    assert math.isnan(tuned_lr([point(1e-2, math.nan, True)]))


@pytest.fixture(scope="module")
def replayed(tmp_path_factory, tokenizer):
    """Pre-training text to replay: packed blocks, as the corpus' training split is."""
    path = tmp_path_factory.mktemp("replay") / "pretrain.txt"
    path.write_text("\n".join(tiny_corpus(120, seed=1)))
    return load_examples(path, "text", tokenizer, 48)  # the task's length: one forward pass takes both


def test_replay_descends_the_mixture_of_the_task_and_the_replayed_token_means(tokenizer, train, replayed):
    """One step of replay r is one AdamW step on (1 - r) L_task(B) + r L_replay(R), B the run's own task
    batch and R ceil(r / (1 - r) x batch) rows in an order of their own, written out by hand."""
    config = dataclasses.replace(CONFIG, steps=1, replay=0.3)
    ours, plain = make_model(tokenizer), make_model(tokenizer)
    result = finetune(ours, train, config, replay=replayed)
    assert replay_rows(config) == 2  # ceil(0.3 / 0.7 x 4)
    task = next(batch_order(len(train), 4, 1, config.seed))
    again = next(batch_order(len(replayed), 2, 1, config.seed + REPLAY_ORDER))

    def token_mean(examples, rows):
        ids, labels = examples.input_ids[rows], examples.labels[rows]
        n_tokens = int((labels[:, 1:] != IGNORE).sum())
        return plain(input_ids=ids, labels=labels, num_items_in_batch=n_tokens).loss

    optimizer = torch.optim.AdamW(plain.parameters(), lr=config.lr, weight_decay=0.0, fused=True)
    plain.train()
    task_loss = token_mean(train, task)
    (0.7 * task_loss + 0.3 * token_mean(replayed, again)).backward()
    torch.nn.utils.clip_grad_norm_(plain.parameters(), config.grad_clip)
    optimizer.step()
    assert result.losses[0] == pytest.approx(task_loss.item(), rel=1e-6)  # the recorded loss is the task's
    for a, b in zip(ours.parameters(), plain.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert not same_weights(ours, make_model(tokenizer))


def test_replay_keeps_the_replayed_text_better_and_needs_its_examples(tokenizer, train, replayed):
    from llm_validation.finetune import masked_loss

    losses = []
    for replay in (0.0, 0.5):
        model = make_model(tokenizer)
        config = FinetuneConfig(lr=1e-2, steps=8, batch_size=4, replay=replay)
        finetune(model, train, config, replay=replayed if replay else None)
        losses.append(masked_loss(model, replayed, 16))
    assert losses[1] < losses[0]
    shorter = Examples(replayed.input_ids[:, :47], replayed.labels[:, :47], replayed.attention_mask[:, :47])
    with pytest.raises(ValueError, match="replay examples of 47 tokens; the task's have 48"):
        finetune(make_model(tokenizer), train, FinetuneConfig(replay=0.5), replay=shorter)
    with pytest.raises(ValueError, match="replay=0.5 needs replay examples"):
        finetune(make_model(tokenizer), train, FinetuneConfig(replay=0.5))
    with pytest.raises(ValueError, match=r"replay=1.0 is out of range; allowed: in \[0, 1\)"):
        FinetuneConfig(replay=1.0)
