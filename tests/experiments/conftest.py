import dataclasses

import pytest

from experiments import cli
from experiments.sweep import presets

# The LLM command tests run on the tiny checkpoint series the llm_validation tests build.
from tests.llm_validation.conftest import empty_offline_cache, folder_series, hub_cache, tokenizer  # noqa: F401


def smoke_sized(name: str):
    """Every preset at smoke size: its own method and grid, tiny dimensions and grids."""
    cfg = presets.get(name, quick=True)
    grid = tuple((k, v[:2]) for k, v in cfg.grid)
    small = dict(
        d_in=8,
        h=8,
        d_out=8,
        rank=4 if cfg.finetune_task == "rotated" or cfg.multimodal else 8,  # room for directions outside A's
        n_t=7,
        t_max=min(cfg.t_max, 200.0),
        budgets=(20, 40, 80),
        grid=grid,
    )
    return dataclasses.replace(cfg, **small)


def four_lrs():
    """The smoke fine-tuning preset over four lrs, one cell a chunk: four chunks to stop a run between."""
    return dataclasses.replace(smoke_sized("finetune"), chunk_size=1, grid=(("lr", (0.01, 0.02, 0.04, 0.08)),))


@pytest.fixture
def smoke_config():
    return smoke_sized("smoke")


def ovt(capsys, *argv):
    """``ovt ARGV`` in-process, as the command line runs it: (exit code, stdout, stderr)."""
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_study(name: str, study, out) -> None:
    """``ovt llm study NAME --out OUT`` (one worker, quiet) with ``study`` registered as preset ``name``
    for the call, as a preset would be."""
    from experiments.llm import study as llm_study

    llm_study.STUDIES[name] = study
    try:
        assert cli.main(["llm", "study", name, "--out", str(out), "--quiet", "--workers", "1"]) == 0
    finally:
        llm_study.STUDIES.pop(name, None)
