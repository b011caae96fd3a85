"""Cost of post-training quantization as a modification, in both halves, as ratios side by side.

LLM (``llm_validation.quantize``), per model preset, CPU, float32, one thread:

    plain        ``perplexity`` of the model as it is
    quantized    ``Quantization.applied(bits)`` + ``perplexity`` + the exact restore (round-to-nearest)
    stochastic   the same with stochastic rounding
    gaussian     ``Perturbation.draw(gamma, seed)`` + ``perplexity`` + restore, for comparison

each on the same token blocks, alternating ``--repeats`` times, each keeping its best CPU time (the
steadier clock on a shared machine). Target: quantized / plain <= 1.10 at the study's evaluation size
(1024 blocks of 64 tokens), so a bit width costs what one more evaluation costs.

Theory (``theory.quantization``): the exact expected excess of stochastic rounding (one Gram
recursion) against a Monte-Carlo estimate from ``--draws`` rounded networks, for the default setup
(d = 32) at depths 2 and 3; both jitted, compile excluded. The exact value replaces the draws; the
ratio says how many draws' time it costs.

    .venv/bin/python benchmarks/quantize_speed.py [--presets 5k 20k 1m] [--blocks 1024] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time


def llm_row(preset: str, blocks: int, seq_len: int, repeats: int) -> dict:
    import torch

    from llm_validation.evaluate import perplexity
    from llm_validation.models import build_model, count_parameters, olmo_config
    from llm_validation.perturb import Perturbation
    from llm_validation.quantize import Quantization

    torch.set_num_threads(1)
    config = olmo_config(preset)
    model = build_model(config, seed=0).float().eval()
    tokens = torch.randint(config.vocab_size, (blocks, seq_len), generator=torch.Generator().manual_seed(0))
    quantization, perturbation = Quantization(model), Perturbation(model, "init")

    def plain():
        perplexity(model, tokens, 32)

    def rounded(rounding):
        def work():
            with quantization.applied(4, rounding, seed=0):
                perplexity(model, tokens, 32)

        return work

    def gaussian():
        with perturbation.draw(1.0, 0):
            perplexity(model, tokens, 32)

    work = {"plain": plain, "quantized": rounded("nearest"), "stochastic": rounded("stochastic"), "gaussian": gaussian}
    return {"preset": preset, "parameters": count_parameters(model), **best_cpu_times(work, repeats)}


def best_cpu_times(work: dict, repeats: int) -> dict:
    """{name: the least CPU seconds of ``work[name]()`` over ``repeats`` rounds}, the calls alternating
    within each round after one warm-up call each (the steadier clock on a shared machine)."""
    best = {name: float("inf") for name in work}
    for fn in work.values():
        fn()  # warm-up
    for _ in range(repeats):
        for name, fn in work.items():
            start = time.process_time()
            fn()
            best[name] = min(best[name], time.process_time() - start)
    return best


def theory_rows(draws: int, repeats: int) -> list[dict]:
    import jax
    import jax.numpy as jnp

    from theory import network, quantization

    @jax.jit
    def exact(Ws):
        return quantization.stochastic_excess(Ws, 4)

    @jax.jit
    def monte_carlo(Ws, A, key):
        def one(k):
            rounded = [quantization.stochastic_round(kk, W, 4) for kk, W in zip(jax.random.split(k, len(Ws)), Ws)]
            return network.task_loss(rounded, A) - network.task_loss(Ws, A)

        return jnp.mean(jax.vmap(one)(jax.random.split(key, draws)))

    rows = []
    for depth in (2, 3):
        Ws = network.init_gaussian(jax.random.PRNGKey(0), network.widths(32, 32, 32, depth), 32**-0.5)
        calls = {
            "exact": (exact, (Ws,)),
            "monte_carlo": (monte_carlo, (Ws, jnp.zeros((32, 32)), jax.random.PRNGKey(1))),
        }
        values = {name: float(fn(*a).block_until_ready()) for name, (fn, a) in calls.items()}  # compiles
        best = {name: float("inf") for name in calls}
        for _ in range(repeats):
            for name, (fn, a) in calls.items():
                start = time.perf_counter()
                fn(*a).block_until_ready()
                best[name] = min(best[name], time.perf_counter() - start)
        rows.append({"depth": depth, **best, "exact_value": values["exact"], "mc_value": values["monte_carlo"]})
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["5k", "20k", "1m"])
    parser.add_argument("--blocks", type=int, default=1024)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--draws", type=int, default=1000)
    args = parser.parse_args(argv)

    print(f"LLM: {args.blocks} blocks x {args.seq_len} tokens, 4 bits, best CPU seconds of {args.repeats}, 1 thread")
    print(
        f"{'preset':8s}{'params':>10s}{'plain':>9s}{'RTN':>9s}{'stoch':>9s}{'gauss':>9s}{'RTN/plain':>11s}{'stoch/plain':>13s}"
    )
    for preset in args.presets:
        r = llm_row(preset, args.blocks, args.seq_len, args.repeats)
        print(
            f"{preset:8s}{r['parameters']:>10,d}{r['plain']:>9.3f}{r['quantized']:>9.3f}{r['stochastic']:>9.3f}"
            f"{r['gaussian']:>9.3f}{r['quantized'] / r['plain']:>11.3f}{r['stochastic'] / r['plain']:>13.3f}"
        )
    heading = f"exact stochastic-rounding excess vs {args.draws} Monte-Carlo draws (d = 32, 4 bits)"
    print(f"\ntheory: {heading}, best of {args.repeats}")
    print(f"{'depth':6s}{'exact s':>10s}{'MC s':>10s}{'MC/exact':>10s}{'exact':>12s}{'MC':>12s}")
    for r in theory_rows(args.draws, args.repeats):
        print(
            f"{r['depth']:<6d}{r['exact']:>10.2e}{r['monte_carlo']:>10.2e}{r['monte_carlo'] / r['exact']:>10.1f}"
            f"{r['exact_value']:>12.4e}{r['mc_value']:>12.4e}"
        )


if __name__ == "__main__":
    main()
