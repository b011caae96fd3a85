"""Pre-training throughput: ``llm_validation.pretrain`` against a plain PyTorch loop, side by side.

Both loops train the same initialised model on the same packed batches in the same order with
AdamW and gradient clipping; ours adds the schedule, loss logging, progress bar, resume state and
checkpoint writing. For each preset and thread count the table gives tokens/s of

- plain: forward, backward, clip, step on pre-packed batches;
- ours: ``pretrain()`` per training step, i.e. ``(S - 1) * tokens_per_step / (t(S) - t(1))`` for
  budgets of S steps and of one step, which removes its fixed costs (corpus loading, tokenizer
  training, tokenisation, checkpoint writing);
- ours e2e: the whole ``pretrain()`` call for S steps, fixed costs included (``fixed s``);

and ours / plain, the loop-overhead ratio (target >= 1.0x), in wall time and in process CPU time.
Other processes share the cores, so each loop runs ``--repeats`` times, alternating, and keeps its
best; CPU time is the steadier of the two ratios on a busy machine. A closing section sizes the
reproduce series from the measured rate.

    .venv/bin/python benchmarks/pretrain_speed.py [--seconds 6] [--repeats 2] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from typing import NamedTuple

import torch

from llm_validation.models import build_model, count_parameters, olmo_config
from llm_validation.pretrain import PretrainConfig, pretrain
from llm_validation.pretrain_data import batch_indices, prepare_data

# (preset, batch_size, seq_len): the smallest named size at the batch shape it runs fastest at, then
# the ~100k and ~1M sizes at the batch 8 x 128 the design notes measured.
SHAPES = [("20k", 64, 64), ("100k", 64, 64), ("100k", 8, 128), ("1m", 8, 128)]
TRAIN_CHARS = 400_000  # enough text for every measured step, small enough to tokenise in a second

# Candidate reproduce series for the 20k preset at 64 x 64 = 4096 tokens a step. Separate mode trains
# every budget from scratch, so a series costs the sum of its budgets.
SERIES = {
    "default": [4096 * steps for steps in (78, 156, 312, 625, 1250, 2500)],
    "quick": [4096 * steps for steps in (16, 64, 256, 512)],
}


class Clock(NamedTuple):
    wall: float
    cpu: float

    @staticmethod
    def now() -> Clock:
        return Clock(time.perf_counter(), time.process_time())

    def since(self) -> Clock:
        now = Clock.now()
        return Clock(now.wall - self.wall, now.cpu - self.cpu)

    @staticmethod
    def best(clocks: list[Clock]) -> Clock:
        return Clock(min(c.wall for c in clocks), min(c.cpu for c in clocks))


def plain_loop(config: PretrainConfig, sequences: torch.Tensor, steps: int) -> Clock:
    """Time for ``steps`` updates of the textbook loop."""
    model = build_model(olmo_config(config.preset, vocab_size=config.model_vocab_size), config.seed).train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
    )
    batches = [sequences[batch_indices(s, config.batch_size, len(sequences), config.seed)] for s in range(steps)]
    start = Clock.now()
    for batch in batches:
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return start.since()


def ours(config: PretrainConfig) -> Clock:
    """Time for ``pretrain(config)`` into a fresh folder, end to end."""
    with tempfile.TemporaryDirectory() as folder:
        start = Clock.now()
        pretrain(config, folder, progress=False)
        return start.since()


def measure(preset: str, batch_size: int, seq_len: int, seconds: float, repeats: int) -> dict:
    one_step = PretrainConfig(
        preset=preset,
        budgets=(batch_size * seq_len,),
        seq_len=seq_len,
        batch_size=batch_size,
        max_train_chars=TRAIN_CHARS,
    )
    sequences = prepare_data(one_step).sequences
    per_step = plain_loop(one_step, sequences, 2).wall / 2  # the first steps also warm up the allocator
    steps = max(3, round(seconds / per_step))
    config = dataclasses.replace(one_step, budgets=(steps * one_step.tokens_per_step,))
    tokens = steps * config.tokens_per_step
    plain, fixed, total = [], [], []
    for _ in range(repeats):
        fixed.append(ours(one_step))
        total.append(ours(config))
        plain.append(plain_loop(config, sequences, steps))
    best_plain, best_fixed, best_total = (Clock.best(runs) for runs in (plain, fixed, total))
    train = Clock(best_total.wall - best_fixed.wall, best_total.cpu - best_fixed.cpu)
    trained = tokens - config.tokens_per_step
    model = build_model(olmo_config(preset, vocab_size=config.model_vocab_size))
    return {
        "preset": preset,
        "params": count_parameters(model),
        "batch": f"{batch_size}x{seq_len}",
        "steps": steps,
        "plain": tokens / best_plain.wall,
        "ours": trained / train.wall,
        "ours_e2e": tokens / best_total.wall,
        "fixed_s": best_fixed.wall,
        "ratio_wall": (trained / train.wall) / (tokens / best_plain.wall),
        "ratio_cpu": (trained / train.cpu) / (tokens / best_plain.cpu),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="target length of one measurement")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="e.g. 1 2 to compare")
    args = parser.parse_args()

    rows = []
    header = (
        f"{'preset':>6} {'params':>9} {'batch':>7} {'thr':>3} {'steps':>5} {'plain tok/s':>11} {'ours tok/s':>10} "
        f"{'ours e2e':>9} {'fixed s':>7} {'ratio wall':>10} {'ratio cpu':>9}"
    )
    print(header)
    print("-" * len(header))
    for threads in args.threads:
        torch.set_num_threads(threads)
        for preset, batch_size, seq_len in SHAPES:
            row = measure(preset, batch_size, seq_len, args.seconds, args.repeats) | {"threads": threads}
            rows.append(row)
            print(
                f"{row['preset']:>6} {row['params']:>9,} {row['batch']:>7} {threads:>3} {row['steps']:>5} "
                f"{row['plain']:>11,.0f} {row['ours']:>10,.0f} {row['ours_e2e']:>9,.0f} {row['fixed_s']:>7.1f} "
                f"{row['ratio_wall']:>9.2f}x {row['ratio_cpu']:>8.2f}x",
                flush=True,
            )

    fastest = max((r for r in rows if r["preset"] == "20k"), key=lambda r: r["ours"])
    params = fastest["params"]
    print(
        f"\nSizing with 20k at {fastest['batch']}, {fastest['threads']} thread(s): {fastest['ours']:,.0f} tokens/s "
        f"and {fastest['fixed_s']:.1f} s of fixed cost (counted once per budget: an upper bound)"
    )
    for name, budgets in SERIES.items():
        minutes = (sum(budgets) / fastest["ours"] + len(budgets) * fastest["fixed_s"]) / 60
        print(
            f"  {name:>7}: budgets {', '.join(f'{b / 1e6:.2f}M' for b in budgets)} "
            f"(span {budgets[-1] / budgets[0]:.0f}x, {budgets[-1] / params:,.0f} tokens/param at the top): "
            f"{sum(budgets) / 1e6:.1f}M tokens in all, ~{minutes:.1f} min"
        )


if __name__ == "__main__":
    main()
