"""What the LLM mitigations cost per step, as ratios side by side (CPU, float32, one thread).

Pre-training (``llm_validation.pretrain``), one step of the study's shape (64 sequences x 64 tokens):

    adamw        forward + backward, clip, AdamW step (the series' step)
    sam          the same with ``sam_gradient``: a second forward + backward at w + rho g / ||g||

Fine-tuning (``llm_validation.finetune.finetune``), ``--steps`` steps of the study's shape (16 x 64):

    plain        the task batch alone
    replay=R     the task batch and ceil(R / (1 - R) x 16) replayed rows a step (``replay_rows``)

each alternating ``--repeats`` times, each keeping its best CPU time (the steadier clock on a shared
machine). Expected: sam / adamw ~2 (two passes); replay / plain ~1 + R / (1 - R) in the rows processed.
The mitigation study's wall time (``study.json``) is these costs times its arms.

    .venv/bin/python benchmarks/mitigation_cost.py [--presets 5k 20k] [--steps 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.quantize_speed import best_cpu_times  # noqa: E402

REPLAYS = (0.1, 0.3)


def pretrain_row(preset: str, repeats: int) -> dict:
    import torch

    from llm_validation.models import build_model, count_parameters, olmo_config
    from llm_validation.pretrain import sam_gradient

    torch.set_num_threads(1)
    config = olmo_config(preset)
    model = build_model(config, seed=0).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    batch = torch.randint(config.vocab_size, (64, 64), generator=torch.Generator().manual_seed(0))

    def step(rho: float):
        def work():
            model(input_ids=batch, labels=batch).loss.backward()
            if rho:
                sam_gradient(model, batch, rho)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return work

    return {
        "preset": preset,
        "parameters": count_parameters(model),
        **best_cpu_times({"adamw": step(0.0), "sam": step(0.05)}, repeats),
    }


def finetune_row(preset: str, steps: int, repeats: int) -> dict:
    import torch

    from llm_validation.finetune import FinetuneConfig, finetune
    from llm_validation.finetune_data import Examples
    from llm_validation.models import build_model, olmo_config

    torch.set_num_threads(1)
    config = olmo_config(preset)
    model = build_model(config, seed=0)
    generator = torch.Generator().manual_seed(1)

    def examples(n: int) -> Examples:
        ids = torch.randint(config.vocab_size, (n, 64), generator=generator)
        return Examples(ids, ids.clone(), torch.ones_like(ids))

    task, pretraining = examples(256), examples(256)

    def run(replay: float):
        def work():
            finetune(model, task, FinetuneConfig(lr=1e-4, steps=steps, batch_size=16, replay=replay),
                     replay=pretraining if replay else None)  # fmt: skip

        return work

    work = {"plain": run(0.0)} | {f"replay={r:g}": run(r) for r in REPLAYS}
    return {"preset": preset, **best_cpu_times(work, repeats)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["5k", "20k"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    print(f"pre-training step, 64 x 64 tokens, best CPU seconds of {args.repeats}, 1 thread")
    print(f"{'preset':8s}{'params':>10s}{'adamw':>9s}{'sam':>9s}{'sam/adamw':>11s}")
    for preset in args.presets:
        r = pretrain_row(preset, args.repeats)
        print(f"{preset:8s}{r['parameters']:>10,d}{r['adamw']:>9.4f}{r['sam']:>9.4f}{r['sam'] / r['adamw']:>11.2f}")
    print(f"\nfine-tuning, {args.steps} steps of 16 x 64 tokens, best CPU seconds of {args.repeats}, 1 thread")
    print(f"{'preset':8s}{'plain':>9s}" + "".join(f"{f'replay={r:g}':>12s}{'ratio':>7s}" for r in REPLAYS))
    for preset in args.presets:
        r = finetune_row(preset, args.steps, args.repeats)
        cells = "".join(f"{r[f'replay={x:g}']:>12.3f}{r[f'replay={x:g}'] / r['plain']:>7.2f}" for x in REPLAYS)
        print(f"{preset:8s}{r['plain']:>9.3f}{cells}")


if __name__ == "__main__":
    main()
