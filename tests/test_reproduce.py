"""The main job end to end (minutes): run by `make test-slow`, not by `make test`."""

import pytest

from experiments import cli
from rundir import store


@pytest.mark.slow
def test_quick_reproduce_writes_every_figure_and_store(tmp_path):
    assert cli.main(["reproduce", "--quick", "--out", str(tmp_path), "--quiet"]) == 0
    names = {p.stem for p in (tmp_path / "figures").glob("*.png")}
    assert names == {
        "gaussian",
        "finetune",
        "regularization",
        "tuned_lr",
        "depth",
        "misalignment",
        "schedule",
        "llm_perturb",
        "llm_finetune",
    }
    runs = store.find_runs(tmp_path)
    frame = store.load(runs)
    assert set(frame.source) == {"theory", "llm"}
