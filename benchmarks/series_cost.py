"""The cost of a budget series: separate cosine runs vs one WSD trunk with a decay branch per budget,
in one process and in two, side by side; and whether the WSD checkpoints are as good.

One series (the 20k preset, 64 x 64 = 4,096 tokens a step, Shakespeare, lr 1e-2, the validation
preset's shape): ``--budgets`` doubling budgets (default 8, from 39 steps = 0.16M tokens to 5,000
steps = 20.5M tokens; ``--largest 41M`` for the 0.32M ... 41M series). It is trained four times
from scratch, each into its own folder, with one torch thread per process:

- ``separate``, one process: every budget its own warmup + cosine run (the paper's design);
- ``separate --workers 2``: the same runs in two processes (the tokens/s ratio to one process is the
  parallel speedup on this machine; the checkpoints are bit-identical, checked);
- ``wsd``, one process; ``wsd --workers 2``: the trunk in one process, each branch started in the
  other as soon as the trunk passes its start (again bit-identical, checked).

Reported per design: updates and tokens trained (exact, ``series_runs.trained_steps``, and counted
from the run), their ratio to the largest budget, wall time and aggregate tokens/s; then, per budget,
the held-out perplexity of the WSD checkpoint against the separate cosine run's, on the same
``--eval-blocks`` x 64 held-out tokens (the published finding: a ~20% linear cooldown matches cosine).
Results: a table on stdout and ``results/benchmarks/series_cost.json``.

    .venv/bin/python benchmarks/series_cost.py [--budgets 8] [--largest 20.5M] [--eval-blocks 1024]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import torch
import transformers

from llm_validation.checkpoints import is_saved, load_checkpoint
from llm_validation.corpora import load_corpus
from llm_validation.evaluate import load_token_blocks, perplexity
from llm_validation.models import count_parameters
from llm_validation.pretrain import PretrainConfig, pretrain
from llm_validation.series_runs import trained_steps
from rundir.tokens import human_tokens, parse_tokens

TOKENS_PER_STEP = 64 * 64
DESIGNS = [("separate", 1), ("separate", 2), ("wsd", 1), ("wsd", 2)]
OUT = Path("results") / "benchmarks" / "series_cost.json"


def series(n_budgets: int, largest: int) -> PretrainConfig:
    """``n_budgets`` budgets halving down from ``largest`` tokens (whole steps)."""
    steps = largest // TOKENS_PER_STEP
    budgets = tuple(TOKENS_PER_STEP * round(steps / 2**k) for k in reversed(range(n_budgets)))
    return PretrainConfig(preset="20k", budgets=budgets, corpus="shakespeare", seq_len=64, batch_size=64, lr=1e-2)


def train(config: PretrainConfig, out: Path, workers: int) -> dict:
    """One design trained from scratch: wall time and the updates it made."""
    start = time.perf_counter()
    made = pretrain(config, out, progress=False, threads=1, workers=workers)
    wall = time.perf_counter() - start
    assert all(is_saved(out, t.revision) for t in config.targets()) and len(made) == len(config.budgets)
    steps = trained_steps(config)
    return {
        "wall_s": wall,
        "updates": steps,
        "tokens": steps * TOKENS_PER_STEP,
        "tokens_per_s": steps * TOKENS_PER_STEP / wall,
    }


def same_weights(a: Path, b: Path, revisions: list[str]) -> bool:
    for revision in revisions:
        wa, wb = (load_checkpoint(folder, revision)[0].state_dict() for folder in (a, b))
        if wa.keys() != wb.keys() or not all(torch.equal(wa[k], wb[k]) for k in wa):
            return False
    return True


def held_out_perplexities(folder: Path, revisions: list[str], heldout: Path, blocks: int) -> tuple[list[float], int]:
    tokenizer = load_checkpoint(folder, revisions[0])[1]
    tokens = load_token_blocks(heldout, tokenizer, 64, blocks)
    return [perplexity(load_checkpoint(folder, r)[0], tokens, 32).perplexity for r in revisions], int(tokens.numel())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", type=int, default=8, help="doubling budgets in the series")
    parser.add_argument("--largest", type=parse_tokens, default=20_480_000, help="the largest budget in tokens")
    parser.add_argument("--eval-blocks", type=int, default=1024, help="held-out blocks of 64 tokens")
    args = parser.parse_args()
    torch.set_num_threads(1)
    transformers.utils.logging.disable_progress_bar()  # one "Loading weights" bar per checkpoint read
    config = series(args.budgets, int(args.largest))
    revisions = [t.revision for t in config.targets()]
    largest = config.targets()[-1].step
    print(
        f"series: 20k preset, {len(revisions)} budgets {human_tokens(config.budgets[0])} ... "
        f"{human_tokens(config.budgets[-1])} tokens ({config.targets()[0].step} ... {largest} steps)"
    )
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for mode, workers in DESIGNS:
            name = f"{mode} x{workers}"
            rows[name] = train(dataclasses.replace(config, mode=mode), root / f"{mode}-{workers}", workers)
            rows[name]["tokens_vs_largest"] = rows[name]["updates"] / largest
            print(f"  {name:11s} {rows[name]['wall_s']:8.1f} s  {rows[name]['tokens_per_s']:9,.0f} tok/s", flush=True)
        identical = {
            mode: same_weights(root / f"{mode}-1", root / f"{mode}-2", revisions) for mode in ("separate", "wsd")
        }
        heldout = root / "heldout.txt"
        heldout.write_text("\n".join(load_corpus("shakespeare").heldout), encoding="utf-8")
        cosine, n_tokens = held_out_perplexities(root / "separate-1", revisions, heldout, args.eval_blocks)
        wsd, _ = held_out_perplexities(root / "wsd-1", revisions, heldout, args.eval_blocks)
        parameters = count_parameters(load_checkpoint(root / "wsd-1", revisions[0])[0])
    speedup = {
        mode: rows[f"{mode} x2"]["tokens_per_s"] / rows[f"{mode} x1"]["tokens_per_s"] for mode in ("separate", "wsd")
    }
    print(f"\n{'design':12s} {'updates':>8s} {'tokens':>8s} {'x largest':>9s} {'wall s':>8s} {'tok/s':>9s}")
    for name, row in rows.items():
        print(
            f"{name:12s} {row['updates']:8d} {human_tokens(row['tokens']):>8s} {row['tokens_vs_largest']:9.3f} "
            f"{row['wall_s']:8.1f} {row['tokens_per_s']:9,.0f}"
        )
    print(
        f"two workers vs one (aggregate tokens/s): separate {speedup['separate']:.2f}x, wsd {speedup['wsd']:.2f}x; "
        f"checkpoints bit-identical: {identical}"
    )
    print(f"\nheld-out perplexity ({n_tokens:,} tokens), WSD vs separate cosine:")
    print(f"{'budget':>8s} {'tok/param':>9s} {'cosine':>8s} {'wsd':>8s} {'wsd/cos':>8s}")
    for target, c, w in zip(config.targets(), cosine, wsd):
        print(f"{human_tokens(target.tokens):>8s} {target.tokens / parameters:9.0f} {c:8.3f} {w:8.3f} {w / c:8.4f}")
    result = {
        "series": {"preset": "20k", "parameters": parameters, "budgets": list(config.budgets), "revisions": revisions},
        "designs": rows,
        "speedup_two_workers": speedup,
        "bit_identical": identical,
        "perplexity": {
            "eval_tokens": n_tokens,
            "cosine": cosine,
            "wsd": wsd,
            "ratio": [w / c for w, c in zip(wsd, cosine)],
        },
        "cpu": _cpu_model(),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1))
    print(f"-> {OUT}")


def _cpu_model() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


if __name__ == "__main__":
    main()
