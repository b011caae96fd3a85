"""The main job end to end (minutes): run by `make test-slow`, not by `make test`."""

import json

import pytest

from experiments import cli
from experiments.sweep import presets
from rundir import store


@pytest.mark.slow
def test_quick_reproduce_writes_every_figure_and_store(tmp_path):
    assert cli.main(["reproduce", "--quick", "--out", str(tmp_path), "--quiet"]) == 0
    names = {p.stem for p in (tmp_path / "figures").glob("*.png")}
    theory = set(presets.PRESETS) - {"smoke"}  # every preset but the smoke test draws its own figure
    assert names == theory | {"llm_perturb", "llm_finetune"}
    assert {"quantization", "anneal", "multimodal", "landscape_alpha", *presets.REPRODUCED_QUICK} <= names
    assert set(presets.REPRODUCED_QUICK) == {"weight_decay", "replay", "sam", "anneal_fraction"}
    runs = store.find_runs(tmp_path)
    frame = store.load(runs)
    assert set(frame.source) == {"theory", "llm"}
    fits = json.loads((tmp_path / "compare" / "fits.json").read_text())  # the theory met by the data only
    assert {f["source"] for f in fits["families"]} == {"llm"} and len(fits["families"]) == 2
