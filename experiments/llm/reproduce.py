"""The CPU-scale LLM validation of ``ovt reproduce``: the ``validation`` presets of ``experiments.llm.presets``
(pre-train a series, perturb it, fine-tune it), composed into one output folder.

Each step is the typed config its ``ovt llm`` command would run, with the model and eval text moved to
``OUT/series``; each writes its own store and resumes on its own.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from experiments.llm import presets as llm_presets
from experiments.llm.batch import run_config


def run(out: Path, quick: bool = False, quiet: bool = False) -> list[Path]:
    """Run the three steps into ``out`` (each resumable); return the run directories to draw."""
    series = out / "series"
    pretrain = llm_presets.get("pretrain", "validation", quick)
    on_series = dict(model=str(series), eval_text=str(series / "heldout.txt"))
    perturb = dataclasses.replace(llm_presets.get("perturb", "validation", quick), **on_series)
    finetune = dataclasses.replace(llm_presets.get("finetune", "validation", quick), **on_series)
    run_config(pretrain, series, quiet)
    run_config(perturb, out / "perturb", quiet)
    run_config(finetune, out / "finetune", quiet)
    return [out / "perturb", out / "finetune"]
