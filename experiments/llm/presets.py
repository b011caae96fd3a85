"""Named presets of the LLM runs (``ovt llm pretrain|perturb|finetune|quantize|multimodal --list``);
``quick`` variants shrink grids and budgets, not the protocol.

``validation`` is the CPU-scale LLM validation of ``ovt reproduce``, the paper's controlled design in
miniature, as three presets that read each other's run directories where ``make reproduce`` writes
them (``results/llm/series``, ``.../perturb``, ``.../finetune``):

1. ``pretrain``: a series of 20k-parameter OLMo-architecture models on Shakespeare, every token budget
   its own run annealed to zero, spanning 32x in tokens up to ~500 tokens per parameter (4096 tokens a
   step: 2,500 steps at the largest budget);
2. ``perturb``: the Gaussian protocol on every checkpoint (gamma 0.5..4, three paired draws);
3. ``finetune``: every checkpoint fine-tuned on Python source (the Starcoder-Python analogue) over a
   fixed lr grid, forgetting measured as Shakespeare perplexity.

All three score the same held-out token set: the first ``max_blocks`` blocks of the series' held-out
text, as does ``quantize``'s ``validation`` (every checkpoint's linear weights at 8, 4, 3 and 2 bits,
round-to-nearest and three paired stochastic draws; not part of ``ovt reproduce``) and
``multimodal``'s (both stages on every checkpoint in the study's fine-tuning regime, its config's
defaults). The other pretrain presets are one per model size, with the library's defaults (budgets
to give).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from experiments.llm.config import FinetuneRun, PerturbRun, PretrainRun, RunConfig, changes, shown
from experiments.llm.config_measures import QuantizeRun
from experiments.llm.config_multimodal import MultimodalRun
from llm_validation.models import PRESETS as MODEL_SIZES

RESULTS = Path("results") / "llm"
SERIES = RESULTS / "series"
SEQ_LEN = 64  # x batch 64 = 4096 tokens per pre-training step
EVAL = dict(eval_text=str(SERIES / "heldout.txt"), seq_len=SEQ_LEN, max_blocks=64)

PRESETS: dict[str, dict[str, RunConfig]] = {
    "pretrain": {
        **{size: PretrainRun(size=size) for size in MODEL_SIZES},
        "validation": PretrainRun(
            size="20k",
            budgets=(319_488, 638_976, 1_277_952, 2_560_000, 5_120_000, 10_240_000),
            corpus="shakespeare",
            mode="separate",
            seq_len=SEQ_LEN,
            batch_size=64,
            lr=1e-2,
            threads=1,
            max_blocks=64,
        ),
    },
    "perturb": {
        "validation": PerturbRun(
            model=str(SERIES), gammas=(0.5, 1.0, 2.0, 4.0), seeds=3, scale="init", batch_size=16, **EVAL
        ),
    },
    "curvature": {},
    "quantize": {
        "validation": QuantizeRun(
            model=str(SERIES), bits=(8, 4, 3, 2), rounding=("nearest", "stochastic"), seeds=3, batch_size=16, **EVAL
        ),
    },
    "finetune": {
        "validation": FinetuneRun(
            model=str(SERIES),
            data="corpus:python",
            format="text",
            lrs=(3e-4, 1e-3, 3e-3),
            steps=60,
            reg=0.0,
            batch_size=16,
            threads=1,
            **EVAL,
        ),
    },
    "multimodal": {
        "validation": MultimodalRun(model=str(SERIES), batch_size=16, threads=1, **EVAL),
    },
}
QUICK_SERIES = RESULTS / "series-quick"  # where ``--preset validation --quick`` puts its series
QUICK_EVAL = dict(model=str(QUICK_SERIES), eval_text=str(QUICK_SERIES / "heldout.txt"), max_blocks=32)
QUICK: dict[tuple[str, str], dict] = {
    ("pretrain", "validation"): dict(budgets=(65_536, 262_144, 1_048_576, 2_097_152), max_blocks=32),
    ("perturb", "validation"): dict(gammas=(1.0, 4.0), seeds=2, **QUICK_EVAL),
    ("quantize", "validation"): dict(bits=(8, 3), seeds=2, **QUICK_EVAL),
    ("finetune", "validation"): dict(lrs=(1e-3, 3e-3), steps=30, **QUICK_EVAL),
    ("multimodal", "validation"): dict(
        lrs=(1e-3, 3e-3), steps=60, warmup_steps=6, stage1_steps=30, scenes=500, heldout_scenes=100, **QUICK_EVAL
    ),
}
# Where a preset's run goes by default (``ovt llm KIND --preset NAME`` without --out).
RUN_NAMES = {("pretrain", "validation"): "series", ("perturb", "validation"): "perturb"}


def get(kind: str, name: str, quick: bool = False) -> RunConfig:
    """The preset ``name`` of run type ``kind``, or its quick variant."""
    if name not in PRESETS[kind]:
        raise ValueError(f"preset {name!r} is unknown for llm {kind}; allowed: {', '.join(PRESETS[kind])}")
    cfg = PRESETS[kind][name]
    return dataclasses.replace(cfg, **QUICK.get((kind, name), {})) if quick else cfg


def default_out(kind: str, name: str) -> Path:
    """``results/llm/series`` (the validation series), ``results/llm/KIND`` for the other validation
    runs, ``results/llm/KIND-NAME`` for the rest: a variant is named after this by ``run.variant_dir``."""
    if name == "validation":
        return RESULTS / RUN_NAMES.get((kind, name), kind)
    return RESULTS / f"{kind}-{name}"


def describe(kind: str, name: str) -> str:
    """One ``--list`` line: the name, then the fields the preset sets, then its quick variant's."""
    cfg = PRESETS[kind][name]
    quick = QUICK.get((kind, name))
    fields = {"size": cfg.size, **changes(cfg)} if kind == "pretrain" else changes(cfg)  # size: even the default
    return f"{name:11s} {shown(fields)}" + (f"  (--quick: {shown(quick)})" if quick else "")
