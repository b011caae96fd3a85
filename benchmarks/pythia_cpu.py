"""The laptop recipe's time: Pythia-70m on the CPU, measured on a locally built model of its architecture.

``EleutherAI/pythia-70m``'s config (GPT-NeoX, d = 512, 6 layers, 8 heads, MLP 2048, vocabulary
50,304, rotary on 25% of each head, parallel residual, untied output: 70,426,624 parameters) with
random weights, saved with ``save_pretrained`` and read back through ``checkpoints.load_checkpoint``,
as a downloaded checkpoint is. Nothing is downloaded; the times do not depend on the weights' values.

Measured in float32 with ``--threads`` torch threads (2: the laptop of the recipe), each the best of
``--repeats`` (other processes share the cores):

- load: one checkpoint from disk (weights already local: a download is extra);
- eval: ``perplexity`` over ``--blocks`` x ``--seq-len`` tokens at batch 8 (the baseline);
- draw: perturb (the family's per-tensor init scale, CPU noise) + restore, no evaluation;
- perturbed eval: draw + evaluation, so the ratio perturbed / eval (target <= 1.10) is the draw's overhead.

Then the recipe's estimate, ``n_checkpoints x (load + eval + gammas x seeds x perturbed eval)``:

    ovt llm perturb --model EleutherAI/pythia-70m --tokens 1B,4B,16B,33B,66B,133B,200B,300B \\
        --eval-text heldout.txt --gammas 0.5,1,2 --seeds 3 --seq-len 512 --batch-size 8 --max-blocks 8 --threads 2

    .venv/bin/python benchmarks/pythia_cpu.py [--threads 2] [--blocks 8] [--seq-len 512] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PYTHIA_70M = dict(
    hidden_size=512,
    num_hidden_layers=6,
    num_attention_heads=8,
    intermediate_size=2048,
    vocab_size=50304,
    max_position_embeddings=2048,
    rotary_pct=0.25,
    use_parallel_residual=True,
    tie_word_embeddings=False,
)
RECIPE = dict(checkpoints=8, gammas=3, seeds=3)


def best(fn, repeats: int) -> tuple[float, float]:
    """(wall, CPU) seconds of the fastest of ``repeats`` calls; CPU time sums the process' threads, so
    on a machine shared with other work it is the cost the load does not inflate."""
    times = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        times.append((time.perf_counter() - wall, time.process_time() - cpu))
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from llm_validation.checkpoints import load_checkpoint
    from llm_validation.evaluate import perplexity
    from llm_validation.models import count_parameters
    from llm_validation.perturb import Perturbation
    from llm_validation.tokenizer import train_bpe_tokenizer

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(GPTNeoXConfig(**PYTHIA_70M)).eval()
    n_params = count_parameters(model)
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / "step143000"
        model.save_pretrained(checkpoint)
        train_bpe_tokenizer(["a small tokenizer to save beside the weights"] * 4, 300).save_pretrained(checkpoint)
        load, _ = best(lambda: load_checkpoint(folder, "step143000"), args.repeats)
        model, _ = load_checkpoint(folder, "step143000")
    generator = torch.Generator().manual_seed(0)
    blocks = torch.randint(PYTHIA_70M["vocab_size"], (args.blocks, args.seq_len), generator=generator)
    perplexity(model, blocks, 8)  # warm-up
    perturbation = Perturbation(model, "init")

    def draw():
        with perturbation.draw(1.0, seed=0):
            pass

    def perturbed_eval():
        with perturbation.draw(1.0, seed=0):
            perplexity(model, blocks, 8)

    (evaluate, evaluate_cpu), (noise, _), (noisy, noisy_cpu) = (
        best(fn, args.repeats) for fn in (lambda: perplexity(model, blocks, 8), draw, perturbed_eval)
    )
    tokens = args.blocks * (args.seq_len - 1)
    print(f"Pythia-70m architecture, {n_params:,} parameters, float32, {args.threads} torch thread(s)")
    print("| measurement | wall | CPU | note |")
    print("|---|---|---|---|")
    print(f"| load one checkpoint from disk | {load:.2f} s | | weights local |")
    print(f"| eval {args.blocks} x {args.seq_len} tokens, batch 8 | {evaluate:.1f} s | {evaluate_cpu:.1f} s | "
          f"{tokens / evaluate:,.0f} tok/s wall |")  # fmt: skip
    print(f"| one draw (perturb + restore) | {noise:.2f} s | | {noise / n_params * 1e9:.1f} ns/param |")
    print(f"| perturbed eval / eval (CPU) | {noisy_cpu:.1f} s / {evaluate_cpu:.1f} s | | "
          f"ratio {noisy_cpu / evaluate_cpu:.2f} (target <= 1.10) |")  # fmt: skip
    for label, e, n in (
        ("wall", evaluate, noisy),
        ("CPU / threads", evaluate_cpu / args.threads, noisy_cpu / args.threads),
    ):
        per_checkpoint = load + e + RECIPE["gammas"] * RECIPE["seeds"] * n
        print(
            f"recipe estimate ({label}): {RECIPE['checkpoints']} checkpoints x (load + eval + "
            f"{RECIPE['gammas']} x {RECIPE['seeds']} perturbed evals) = {RECIPE['checkpoints']} x "
            f"{per_checkpoint:.1f} s = {RECIPE['checkpoints'] * per_checkpoint / 60:.1f} min (downloads not included)"
        )


if __name__ == "__main__":
    main()
