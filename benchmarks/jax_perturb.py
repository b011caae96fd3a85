"""Draws per second of the Gaussian protocol: JAX batched (one compiled call per chunk of draws) vs
JAX one draw a call vs torch (``Perturbation.draw`` + ``perplexity``), side by side, on the CPU in
float32, for OLMo-architecture presets with random weights (``random_weights`` / ``build_model``).

For each preset, in a fresh subprocess: ``--draws`` draws (gamma 1, seeds 0..K-1) on ``--blocks``
synthetic blocks of ``--seq-len`` tokens in batches of ``--batch-size``; every path gets an untimed
warm-up (JAX: its compilation), then the best of ``--repeats`` timings. The JAX perturbation overhead
is (a chunk of draws) / (the same chunk's evaluation on unperturbed copies), the torch one (a draw) /
(a plain evaluation), as ``benchmarks/llm_perturb.py`` measures it.

    .venv/bin/python benchmarks/jax_perturb.py [--presets 1m 5m] [--draws 16] [--threads 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _best(fn, repeats: int) -> float:
    fn()  # warm-up (compilation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def worker(preset: str, draws: int, blocks: int, seq_len: int, batch_size: int, repeats: int, threads: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    from llm_validation.evaluate import perplexity
    from llm_validation.jax_backend import evaluate as jax_evaluate
    from llm_validation.jax_backend.model import OlmoForCausalLM, random_weights
    from llm_validation.jax_backend.spec import spec_of_preset
    from llm_validation.models import PRESETS, build_model, olmo_config
    from llm_validation.perturb import Perturbation

    torch.set_num_threads(threads)
    spec = spec_of_preset(dataclasses.asdict(PRESETS[preset]))
    tokens = np.random.default_rng(0).integers(0, spec.vocab_size, (blocks, seq_len))
    model = OlmoForCausalLM(spec, random_weights(spec, seed=0))
    work = [(1.0, seed) for seed in range(draws)]
    batched = jax_evaluate.DrawEvaluator(model, spec, tokens, batch_size, draws_per_call=draws)
    single = jax_evaluate.DrawEvaluator(model, spec, tokens, batch_size, draws_per_call=1)
    t_batched = _best(lambda: batched.mean_nlls(work), repeats)
    t_single = _best(lambda: single.mean_nlls(work), repeats)
    copies = jax.tree.map(lambda x: jnp.broadcast_to(x, (draws, *x.shape)), batched.params)
    batches = list(batched._batches())

    def plain():
        for toks, weights in batches:
            jax.block_until_ready(jax_evaluate._stack_nll(copies, toks, weights, batched.graphdef))

    t_plain = _best(plain, repeats)
    torch_model = build_model(olmo_config(preset), seed=0)
    torch_tokens = torch.tensor(tokens)
    perturbation = Perturbation(torch_model)

    def torch_draws():
        for seed in range(draws):
            with perturbation.draw(1.0, seed):
                perplexity(torch_model, torch_tokens, batch_size)

    t_torch = _best(torch_draws, repeats)
    t_torch_plain = _best(lambda: perplexity(torch_model, torch_tokens, batch_size), repeats)
    return {
        "preset": preset,
        "draws": draws,
        "jax_batched_draws_per_s": draws / t_batched,
        "jax_single_draws_per_s": draws / t_single,
        "torch_draws_per_s": draws / t_torch,
        "jax_overhead": t_batched / t_plain,
        "torch_overhead": t_torch / (draws * t_torch_plain),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["1m", "5m"])
    parser.add_argument("--draws", type=int, default=16)
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    settings = (args.draws, args.blocks, args.seq_len, args.batch_size, args.repeats, args.threads)
    if args.worker:
        print(json.dumps(worker(args.worker, *settings)))
        return 0
    header = "preset  draws  JAX batched  JAX one-by-one  torch    batched/torch  overhead JAX  overhead torch"
    print(f"draws per second, CPU float32, {args.blocks} blocks x {args.seq_len} tokens, batch {args.batch_size}")
    print(header)
    for preset in args.presets:
        flags = ["--draws", args.draws, "--blocks", args.blocks, "--seq-len", args.seq_len]
        flags += ["--batch-size", args.batch_size, "--repeats", args.repeats, "--threads", args.threads]
        command = [sys.executable, __file__, "--worker", preset, *map(str, flags)]
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=True)
        r = json.loads(done.stdout.splitlines()[-1])
        print(
            f"{r['preset']:6s}  {r['draws']:5d}  {r['jax_batched_draws_per_s']:11.2f}"
            f"  {r['jax_single_draws_per_s']:14.2f}"
            f"  {r['torch_draws_per_s']:7.2f}  {r['jax_batched_draws_per_s'] / r['torch_draws_per_s']:13.2f}"
            f"  {r['jax_overhead']:12.2f}  {r['torch_overhead']:14.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
