"""A new run kind is a config, a preset and one module of plan/measure/report: the steps of
docs/ARCHITECTURE.md "Adding a run kind", followed for a toy kind (the p-norm of every checkpoint's
weights) written into a temporary module, registered, and run through the CLI: flags and overrides
from its config, its preset, a failure mid-run that the same command resumes, and worker processes
that import the kind by its module's name."""

from __future__ import annotations

import importlib
import sys
import textwrap

import pandas as pd
import pytest

from experiments.llm import batch
from experiments.llm import presets as llm_presets
from llm_validation.checkpoints import load_checkpoint
from rundir import store
from tests.experiments.conftest import ovt
from tests.experiments.test_llm_perturb_cli import eval_text as eval_text  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread", "empty_offline_cache")

TOY = '''
"""``ovt llm norm``: the p-norm of every checkpoint's weights."""

import dataclasses
import os
from typing import ClassVar

import pandas as pd

from experiments.arguments import real
from experiments.llm.batch import register
from experiments.llm.config import SeriesRun, knob
from experiments.llm.kinds.base import CheckpointKind
from rundir import store


@dataclasses.dataclass(frozen=True)
class NormRun(SeriesRun):
    REQUIRED: ClassVar[tuple[str, ...]] = SeriesRun.REQUIRED

    power: float = knob(2.0, "p of the weights' p-norm", lambda name: real(name, above=0))


class Norm(CheckpointKind):
    name = "norm"
    CONFIG = NormRun
    HELP = "the p-norm of every checkpoint's weights"

    def measure(self, plan, index, revision, progress):
        import torch

        from llm_validation.checkpoints import load_checkpoint

        with open(os.environ["TOY_LOG"], "a") as log:  # which checkpoints this run measured
            log.write(revision.name + "\\n")
        if os.environ.get("TOY_FAIL_AT") == revision.name:
            raise ValueError("the toy kind fails here")
        model, _ = load_checkpoint(plan.source, revision.name, torch.float32, plan.cfg.device)
        p = plan.cfg.power
        norm = sum(w.detach().abs().pow(p).sum().item() for w in model.parameters()) ** (1 / p)
        progress.update()
        rows = store.block(source="llm", setup=plan.setup, checkpoint=revision.name,
                           pretrain_time=float(revision.tokens), modification="none", seed=0,
                           metric=["weight_norm"], value=norm)
        return rows, model, {"power": p}

    def report(self, plan, table):
        return f"norm of {len(plan.revisions)} checkpoint(s) -> {plan.out}"


KIND = Norm()
register(KIND, {"manhattan": NormRun(power=1.0)})
'''


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """The toy kind's module, written to a temporary folder on the path and imported (registered);
    unregistered after the test."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "toy_norm_kind.py").write_text(textwrap.dedent(TOY))
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("TOY_LOG", str(tmp_path / "measured.txt"))
    module = importlib.import_module("toy_norm_kind")
    yield module
    batch.RUNS.pop("norm"), batch.BY_CONFIG.pop(module.NormRun), llm_presets.PRESETS.pop("norm")
    sys.modules.pop("toy_norm_kind")


def measured(tmp_path) -> list[str]:
    path = tmp_path / "measured.txt"
    names = path.read_text().split() if path.is_file() else []
    path.unlink(missing_ok=True)
    return names


def norm_args(series, eval_text, out, *extra):
    return ("llm", "norm", "--model", series, "--eval-text", eval_text, "--seq-len", "32", "--out", out, *extra)


def test_a_registered_kind_runs_through_the_cli_and_resumes(capsys, tmp_path, toy, folder_series, eval_text):  # noqa: F811
    series, seeds = folder_series
    names = list(seeds)
    args = norm_args(series, eval_text, tmp_path / "run", "power=3", "--workers", "1")

    # Its config's field is a flag and an override, read by the field's one reader.
    for bad in (("--power", "0"), ("power=-1",)):
        code, _, err = ovt(capsys, *norm_args(series, eval_text, tmp_path / "bad", *bad))
        assert code == 2 and "must be > 0" in err and err.count("\n") == 1 and not (tmp_path / "bad").exists()

    # A failure while running: exit 1, the manifest failed, the first checkpoint kept.
    failing = pytest.MonkeyPatch.context()
    with failing as patch:
        patch.setenv("TOY_FAIL_AT", names[1])
        code, _, err = ovt(capsys, *args)
    assert code == 1 and "the toy kind fails here" in err and "rerun to resume" in err, err.splitlines()[-1]
    manifest = store.read_manifest(tmp_path / "run")
    assert manifest["status"] == "failed" and manifest["command"] == "llm norm"
    assert store.stored_chunks(tmp_path / "run") == {0} and measured(tmp_path) == names[:2]

    # The same command resumes after the stored checkpoint.
    code, out, err = ovt(capsys, *args)
    assert code == 0 and f"norm of {len(names)} checkpoint(s)" in out, err
    assert measured(tmp_path) == names[1:]
    manifest = store.read_manifest(tmp_path / "run")
    assert manifest["status"] == "complete" and manifest["config"]["power"] == 3.0
    assert [r["power"] for r in manifest["revisions"]] == [3.0] * len(names)

    # Its numbers: the 3-norm of every checkpoint's weights, as computed here.
    table = pd.read_parquet(tmp_path / "run" / store.METRICS)
    for name, value in zip(table.checkpoint, table.value):
        model, _ = load_checkpoint(series, name)
        expected = sum(w.detach().abs().pow(3).sum().item() for w in model.parameters()) ** (1 / 3)
        assert value == pytest.approx(expected, rel=1e-12)
    assert list(table.checkpoint) == names

    # Two worker processes (which import the kind from its module) write the same table.
    code, _, err = ovt(capsys, *norm_args(series, eval_text, tmp_path / "two", "power=3", "--workers", "2"))
    assert code == 0, err
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "two" / store.METRICS), table, check_exact=True)


def test_a_registered_kind_has_its_presets_and_a_taken_name_is_refused(capsys, tmp_path, toy, folder_series, eval_text):  # noqa: F811
    code, out, _ = ovt(capsys, "llm", "norm", "--list")
    assert code == 0 and out.startswith("manhattan") and "power=1" in out
    series, _ = folder_series
    code, _, err = ovt(capsys, *norm_args(series, eval_text, tmp_path / "run", "--preset", "manhattan", "--quiet"))
    assert code == 0, err
    assert store.read_manifest(tmp_path / "run")["config"]["power"] == 1.0
    with pytest.raises(ValueError, match="run kind 'norm' .* is registered already"):
        batch.register(toy.KIND)
