"""``ovt llm revisions``: the checkpoint table of a folder series and of an offline hub cache."""

from __future__ import annotations

import pytest

from llm_validation.checkpoints import load_checkpoint
from llm_validation.models import count_parameters
from rundir.tokens import human_tokens
from tests.experiments.conftest import ovt
from tests.llm_validation.test_suites import PYTHIA, REVISIONS, SMOLLM2, suite_cache, suite_hub  # noqa: F401

pytestmark = pytest.mark.usefixtures("empty_offline_cache")


def test_revisions_table_of_a_folder_series(capsys, folder_series):
    root, seeds = folder_series
    code, out, err = ovt(capsys, "llm", "revisions", root)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["revision", "step", "tokens", "tokens/param"]
    n_params = count_parameters(load_checkpoint(root, "step40-tokens5K")[0])
    assert [line.split() for line in lines[1:4]] == [
        ["step10-tokens1K", "10", "1K", human_tokens(1000 / n_params)],
        ["step20-tokens2K", "20", "2K", human_tokens(2000 / n_params)],
        ["step40-tokens5K", "40", "5K", human_tokens(5000 / n_params)],
    ]
    assert lines[4] == f"3 revisions; {n_params:,} parameters (config of step40-tokens5K)" and len(lines) == 5


def test_revisions_table_of_an_offline_hub_cache(capsys, hub_cache):
    code, out, err = ovt(capsys, "llm", "revisions", hub_cache)
    assert code == 0, err
    assert [line.split()[0] for line in out.splitlines()[1:-1]] == [
        "step10-tokens1K",
        "step20-tokens2K",
        "step40-tokens5K",
    ]
    assert "main" not in out


def test_revisions_of_an_unknown_model_exits_2(capsys, tmp_path):
    code, _, err = ovt(capsys, "llm", "revisions", "nonexistent-org/none")
    assert code == 2 and err.count("\n") == 1 and "nonexistent-org/none" in err
    (tmp_path / "empty").mkdir()
    code, _, err = ovt(capsys, "llm", "revisions", tmp_path / "empty")
    assert code == 2 and "has no checkpoint revisions" in err


@pytest.mark.parametrize("repo", [PYTHIA, SMOLLM2])
def test_revisions_of_a_suite_state_tokens_from_the_step(capsys, suite_cache, repo):
    """Pythia's step{N} and SmolLM2's step-{N} carry no tokens: step x the suite's batch in tokens."""
    code, out, err = ovt(capsys, "llm", "revisions", repo)
    assert code == 0, err
    lines = out.splitlines()
    model, _ = load_checkpoint(repo, REVISIONS[repo][-1])
    n_params, per_step = count_parameters(model), {PYTHIA: 2_097_152, SMOLLM2: 1_048_576}[repo]
    rows = [line.split() for line in lines[1:-1]]
    assert [row[0] for row in rows] == list(REVISIONS[repo])  # listed in token order, `main` left out
    for name, step, tokens, per_param in rows:
        assert int(step) == int(name.removeprefix("step").removeprefix("-"))
        assert (tokens, per_param) == (
            human_tokens(int(step) * per_step),
            human_tokens(int(step) * per_step / n_params),
        )
    family = "pythia" if repo == PYTHIA else "smollm2"
    assert (
        lines[-1] == f"{len(rows)} revisions; {n_params:,} parameters (config of {rows[-1][0]}); suite family {family}"
    )
