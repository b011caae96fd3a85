"""``ovt llm revisions``: the checkpoint table of a folder series and of an offline hub cache."""

from __future__ import annotations

import pytest

from tests.experiments.conftest import ovt

pytestmark = pytest.mark.usefixtures("empty_offline_cache")


def test_revisions_table_of_a_folder_series(capsys, folder_series):
    root, seeds = folder_series
    code, out, err = ovt(capsys, "llm", "revisions", root)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["revision", "step", "tokens"]
    assert [line.split() for line in lines[1:]] == [
        ["step10-tokens1K", "10", "1K"],
        ["step20-tokens2K", "20", "2K"],
        ["step40-tokens5K", "40", "5K"],
    ]


def test_revisions_table_of_an_offline_hub_cache(capsys, hub_cache):
    code, out, err = ovt(capsys, "llm", "revisions", hub_cache)
    assert code == 0, err
    assert [line.split()[0] for line in out.splitlines()[1:]] == [
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
