"""``ovt llm study`` with mitigations (claims k): the arms' series and runs, the claims, the figure, and
the preset sized by its pilot before its data exist."""

from __future__ import annotations

import dataclasses
import json

import pytest

from analysis.power import half_width
from experiments.llm import study as llm_study
from experiments.llm.study_design import MITIGATION_POWER
from rundir import store
from tests.experiments.conftest import run_study
from tests.experiments.test_llm_study import TINY as TINY_STUDY

pytestmark = pytest.mark.usefixtures("one_torch_thread", "empty_offline_cache")

# The tiny study's series and fine-tuning (test_llm_study), 3 budgets, one lr and one order; two series
# an arm, the least an interval needs; nothing measured but the fine-tuning the arms compare.
TINY = dataclasses.replace(
    TINY_STUDY,
    sizes=(("tiny", (1024, 2048, 4096)),),
    eval_blocks=16,
    gammas=(),
    lrs=(3e-3,),
    finetune_repeats=1,
    curvature_gammas=(),
    quant_bits=(),
    trunk_budgets=None,
    trunk_gammas=(),
    trunk_lrs=(3e-3,),
    multimodal_lrs=(),
    multimodal_seeds=(),
    arms=(("sam=0.05", (("sam_rho", 0.05),)), ("wd=1", (("weight_decay", 1.0),))),
    replays=(0.3,),
)
ARMS = ["sam=0.05", "wd=1", "no anneal", "replay=0.3", "reg=1"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("mitigations") / "tiny"
    run_study("tiny-mitigations", TINY, out)
    return out


def test_every_arm_is_its_own_series_or_fine_tuning_run_and_nothing_else_runs(study):
    series = sorted(p.name for p in (study / "series").iterdir())
    assert series == sorted(f"tiny{arm}_seed={s}" for arm in ("", "_sam=0.05", "_wd=1") for s in (0, 1))
    config = json.loads((study / "series" / "tiny_sam=0.05_seed=1" / "series.json").read_text())
    assert config["config"]["sam_rho"] == 0.05 and config["config"]["trunk_checkpoints"] == 0
    assert (
        json.loads((study / "series" / "tiny_wd=1_seed=0" / "series.json").read_text())["config"]["weight_decay"] == 1
    )
    runs = [p.parent for p in study.glob("**/manifest.json") if "series" not in p.parts]
    stages = {str(run.parent.relative_to(study)) for run in runs}
    assert stages == {
        "finetune/shakespeare",
        "finetune-reg/reg=1",
        "finetune-replay/replay=0.3",
        "trunk/finetune/shakespeare",
    }
    replay = store.read_manifest(study / "finetune-replay" / "replay=0.3" / "tiny_seed=0")
    assert replay["replay"]["path"] == "corpus:synthetic" and replay["finetune"]["replay"] == 0.3
    assert not (study / "perturb").exists() and not (study / "curvature").exists()


def test_the_claims_compare_every_arm_with_the_baseline_paired_by_series(study):
    report = json.loads((study / "claims.json").read_text())
    rows = {c["claim"]: c for c in report["claims"]}
    assert sorted(rows) == sorted(["k"] + [f"k:{arm}" for arm in ARMS])
    for arm in ARMS:
        row = rows[f"k:{arm}"]
        assert row["verdict"] in ("PASS", "FAIL", "INCONCLUSIVE") and row["n_series"] == 2, row
    assert rows["k:replay=0.3"]["base_cost"]["value"] == 0.0  # the baseline's own checkpoints
    curves = report["curves"]["tiny"]
    assert sorted(curves) == sorted(["baseline", *ARMS]) and all(len(c["tokens"]) == 3 for c in curves.values())
    text = (study / "claims.md").read_text()
    assert all(f"| {arm} |" in text for arm in ARMS)
    assert (study / "figures" / "study_mitigations.png").is_file()
    assert json.loads((study / "study.json").read_text())["status"] == "complete"


def test_a_rerun_resumes_to_the_same_claims(study, capsys):

    before = (study / "claims.json").read_text()
    run_study("tiny-mitigations", TINY, study)
    assert (study / "claims.json").read_text() == before


def test_the_preset_has_the_series_its_pilot_asks_for_and_a_row_per_arm():
    """The smallest n whose Bonferroni half-width (over every arm) is <= 15% of the pilot's forgetting."""
    preset = llm_study.STUDIES["mitigations"]
    arms = len(preset.arms) + 1 + len(preset.replays) + len(preset.regs)  # + the trunk (no anneal)
    assert arms == MITIGATION_POWER["arms"]
    target = MITIGATION_POWER["share"] * MITIGATION_POWER["forgetting"]

    def h(n):
        return half_width(MITIGATION_POWER["sd"] ** 2, 0.0, n, 1, level=1 - 0.05 / arms)

    n = next(n for n in range(2, 100) if h(n) <= target)
    assert len(preset.seeds) == n == 10 and h(n) == pytest.approx(0.1947, abs=1e-4)
    assert dict(preset.trunk_seeds)["5k"] == preset.seeds and preset.reg_lr in preset.trunk_lrs == preset.lrs
    assert max(preset.lrs) <= preset.lr / 10 and preset.warmup_steps > 0
