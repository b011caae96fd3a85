"""The CPU-scale LLM validation of ``ovt reproduce``: the paper's controlled design in miniature.

1. pre-train a series of OLMo-architecture models (the ``20k`` preset) on Shakespeare, every token
   budget its own run annealed to zero, spanning 32x in tokens up to ~500 tokens per parameter;
2. the Gaussian protocol on every checkpoint (several gamma, paired draws), held-out perplexity;
3. fine-tuning every checkpoint on Python source (the Starcoder-Python analogue) over a fixed lr
   grid, with forgetting (Shakespeare perplexity) and in-task loss, fixed and tuned lr.
Each step is the ``ovt llm`` command a user would type, run in-process; each writes its own store.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from experiments import llm_cli
from experiments.arguments import Parser


@dataclasses.dataclass(frozen=True)
class ValidationSize:
    budgets: tuple[str, ...]  # tokens, as ``ovt llm pretrain --budgets`` reads them
    gammas: tuple[float, ...]
    seeds: int
    eval_blocks: int
    lrs: tuple[float, ...]
    finetune_steps: int


PRESET = "20k"
SEQ_LEN, BATCH = 64, 64  # 4096 tokens per step: 20k params reach ~500 tokens/param in 2,500 steps
DEFAULT = ValidationSize(
    budgets=("319488", "638976", "1277952", "2560000", "5120000", "10240000"),
    gammas=(0.5, 1.0, 2.0, 4.0),
    seeds=3,
    eval_blocks=64,
    lrs=(3e-4, 1e-3, 3e-3),
    finetune_steps=60,
)
QUICK = ValidationSize(
    budgets=("65536", "262144", "1048576", "2097152"),
    gammas=(1.0, 4.0),
    seeds=2,
    eval_blocks=32,
    lrs=(1e-3, 3e-3),
    finetune_steps=30,
)


def python_finetune_text(out: Path, max_chars: int = 400_000) -> Path:
    """Real Python source (the standard library's training split) as one fine-tuning text file."""
    from llm_validation.corpora import load_corpus

    path = out / "python_train.txt"
    if not path.is_file():
        split = load_corpus("python", max_chars=max_chars)
        path.write_text("\n\n".join(split.train))
    return path


def commands(out: Path, size: ValidationSize, quiet: bool) -> list[list[str]]:
    """The ``ovt`` argument lists of the three steps, in order; all three score the same held-out
    token set (the first ``eval_blocks`` blocks of the series' held-out text)."""
    series, q = out / "series", (["--quiet"] if quiet else [])
    data = out / "python_train.txt"
    return [
        [
            "llm",
            "pretrain",
            "--preset",
            PRESET,
            "--budgets",
            ",".join(size.budgets),
            "--corpus",
            "shakespeare",
            "--mode",
            "separate",
            "--seq-len",
            str(SEQ_LEN),
            "--batch-size",
            str(BATCH),
            "--lr",
            "1e-2",
            "--threads",
            "1",
            "--max-blocks",
            str(size.eval_blocks),
            "--out",
            str(series),
            *q,
        ],
        [
            "llm",
            "perturb",
            "--model",
            str(series),
            "--tokens",
            ",".join(size.budgets),
            "--eval-text",
            str(series / "heldout.txt"),
            "--gammas",
            ",".join(map(str, size.gammas)),
            "--seeds",
            str(size.seeds),
            "--scale",
            "init",
            "--seq-len",
            str(SEQ_LEN),
            "--batch-size",
            "16",
            "--max-blocks",
            str(size.eval_blocks),
            "--out",
            str(out / "perturb"),
            *q,
        ],
        [
            "llm",
            "finetune",
            "--model",
            str(series),
            "--tokens",
            ",".join(size.budgets),
            "--data",
            str(data),
            "--format",
            "text",
            "--lrs",
            ",".join(map(str, size.lrs)),
            "--steps",
            str(size.finetune_steps),
            "--reg",
            "0",
            "--eval-text",
            str(series / "heldout.txt"),
            "--seq-len",
            str(SEQ_LEN),
            "--batch-size",
            "16",
            "--threads",
            "1",
            "--max-blocks",
            str(size.eval_blocks),
            "--out",
            str(out / "finetune"),
            *q,
        ],
    ]


def run(out: Path, quick: bool = False, quiet: bool = False) -> list[Path]:
    """Run the three steps into ``out`` (each resumable); return the run directories to draw."""
    size = QUICK if quick else DEFAULT
    out.mkdir(parents=True, exist_ok=True)
    python_finetune_text(out)
    parser = Parser(prog="ovt")  # the ``ovt llm`` commands alone, parsed as the command line parses them
    llm_cli.add_parser(parser.add_subparsers(dest="command", required=True, parser_class=Parser))
    for argv in commands(out, size, quiet):
        llm_cli.run(parser.parse_args(argv))
    return [out / "perturb", out / "finetune"]
