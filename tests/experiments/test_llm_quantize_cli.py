"""``ovt llm quantize``: the store it writes (the library's numbers), a trained checkpoint's 8-bit
and 3-bit perplexity, a hub suite, resume after SIGKILL, and Python arguments refused like flags."""

from __future__ import annotations

import hashlib
import math

import pandas as pd
import pytest

from experiments import cli
from experiments.llm.batch import run_config
from experiments.llm.config_measures import QuantizeRun
from experiments.llm.kinds import quantize as llm_quantize
from llm_validation.evaluate import load_token_blocks, perplexity
from llm_validation.quantize import quantized
from rundir import store
from rundir.lifecycle import UsageError
from tests.experiments.conftest import ovt
from tests.experiments.test_llm_perturb_cli import eval_text as eval_text  # noqa: F401 (a fixture)
from tests.experiments.test_llm_perturb_cli import loads as loads  # noqa: F401 (a fixture)
from tests.experiments.test_llm_pretrain_cli import pretrain_args
from tests.experiments.test_llm_workers import _kill_when, _ovt_process, same_tables
from tests.llm_validation.conftest import HUB_REPO

pytestmark = pytest.mark.usefixtures("one_torch_thread", "empty_offline_cache")
COLUMNS = ["bits", "rounding", "mean_nll", "n_tokens", "diverged", "t_star_kind"]


def quantize_args(model, text, out, *extra, bits="8,3", rounding="nearest,stochastic", seeds=2, blocks=4):
    return ("llm", "quantize", "--model", model, "--eval-text", text, "--bits", bits, "--rounding", rounding,
            "--seeds", seeds, "--out", out, "--seq-len", 32, "--max-blocks", blocks, "--batch-size", 3,
            "--threads", 1, "--quiet", *extra)  # fmt: skip


def test_quantize_writes_the_librarys_numbers_and_restores(capsys, tmp_path, folder_series, eval_text, loads):  # noqa: F811
    root, seeds = folder_series
    out = tmp_path / "run"
    code, _, err = ovt(capsys, *quantize_args(root, eval_text, out))
    assert code == 0, err
    table = pd.read_parquet(out / store.METRICS)
    assert list(table.columns) == [*store.REQUIRED_COLUMNS, *COLUMNS]
    infl = table[table.checkpoint == "inflection"]  # one per (bits, rounding), from the mean over draws
    assert sorted(zip(infl.bits, infl.rounding)) == [
        (3, "nearest"),
        (3, "stochastic"),
        (8, "nearest"),
        (8, "stochastic"),
    ]
    assert set(infl.seed) == {-1} and set(infl.modification) == {"quantization"} and infl.t_star_kind.ne("").all()
    rows = table[table.checkpoint != "inflection"]
    assert len(rows) == 3 * (1 + 2 * (1 + 2)) and set(rows.metric) == {"perplexity"} and not rows.diverged.any()
    assert rows[["gamma", "lr", "steps", "reg"]].isna().all().all() and (rows.n_tokens == 4 * 31).all()
    assert all(math.isclose(math.exp(n), v) for n, v in zip(rows.mean_nll, rows.value))
    base = rows[rows.modification == "none"]
    assert len(base) == 3 and base.bits.isna().all() and set(base.rounding) == {""} and set(base.seed) == {0}
    quant = rows[rows.modification == "quantization"]
    assert sorted(set(zip(quant.bits, quant.rounding, quant.seed))) == [
        (3.0, "nearest", 0), (3.0, "stochastic", 0), (3.0, "stochastic", 1),
        (8.0, "nearest", 0), (8.0, "stochastic", 0), (8.0, "stochastic", 1),
    ]  # fmt: skip

    manifest = store.read_manifest(out)
    config = manifest["config"]
    assert (config["bits"], config["rounding"], config["seeds"]) == ([8, 3], ["nearest", "stochastic"], 2)
    record = manifest["quantization"]
    assert record["checkpoint"] == "step10-tokens1K" and record["n_tensors"] == 15 and record["embedding_quantized"]
    assert record["also_named"] == {"lm_head.weight": ["model.embed_tokens.weight"]} and "Delta_r" in record["grid"]
    assert manifest["status"] == "complete" and manifest["command"] == "llm quantize"

    # Every row is the library's number, and every model the run quantized is restored after it.
    assert [name for name, *_ in loads] == list(seeds)
    blocks = load_token_blocks(eval_text, loads[0][2], 32, 4)
    for name, model, _ in loads:
        at = rows[rows.checkpoint == name].set_index(["bits", "rounding", "seed"]).value
        assert perplexity(model, blocks, 3).perplexity == base[base.checkpoint == name].value.item()
        with quantized(model, 3, "stochastic", 1):
            assert perplexity(model, blocks, 3).perplexity == at[(3.0, "stochastic", 1)]
        with quantized(model, 8, "nearest"):
            assert perplexity(model, blocks, 3).perplexity == at[(8.0, "nearest", 0)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One checkpoint of the 20k model trained on 64K tokens (500 steps): a model whose weights carry
    what it learned, unlike the random ones of the folder series."""
    out = tmp_path_factory.mktemp("trained") / "series"
    assert cli.main([str(a) for a in pretrain_args(out, "64K", "--lr", "1e-2", "--workers", "1")]) == 0
    return out


def test_a_trained_checkpoint_is_its_own_at_8_bits_and_worse_at_3(capsys, tmp_path, trained):
    out = tmp_path / "run"
    code, _, err = ovt(
        capsys, *quantize_args(trained, trained / "heldout.txt", out, bits="8,4,3,2", seeds=3, blocks=16)
    )
    assert code == 0, err
    rows = pd.read_parquet(out / store.METRICS)
    rows = rows[rows.checkpoint != "inflection"]
    base = rows[rows.modification == "none"].value.item()
    at = rows[rows.modification == "quantization"].groupby(["rounding", "bits"]).value
    assert (rows[rows.bits == 8].value / base - 1).abs().max() < 1e-3  # 8 bits: within 0.1% of the checkpoint
    worse = at.min() / base - 1  # the best draw of each (rounding, bits), relative to the checkpoint
    assert worse[("nearest", 3.0)] > 0.01 and worse[("stochastic", 3.0)] > 0.03
    nearest = at.mean().loc["nearest"]
    assert nearest[8.0] < nearest[4.0] < nearest[3.0] < nearest[2.0]  # fewer bits, a worse model


def test_a_hub_suite_from_the_offline_cache_gives_the_folders_numbers(
    capsys, tmp_path, folder_series, eval_text, hub_cache
):  # noqa: F811, E501
    revisions = ("--revisions", "step10-tokens1K,step40-tokens5K")
    tables = {}
    for name, model in (("hub", hub_cache), ("folder", folder_series[0])):
        code, _, err = ovt(capsys, *quantize_args(model, eval_text, tmp_path / name, *revisions, bits="4", seeds=1))
        assert code == 0, err
        tables[name] = pd.read_parquet(tmp_path / name / store.METRICS).drop(columns="setup")
    pd.testing.assert_frame_equal(tables["hub"], tables["folder"], check_exact=True)
    manifest = store.read_manifest(tmp_path / "hub")
    assert manifest["setup"] == HUB_REPO and manifest["model_kind"] == "hub"
    assert manifest["revisions"][1]["commit"] == hashlib.sha1(b"step40-tokens5K").hexdigest()


def test_a_killed_quantize_run_resumes_to_the_uninterrupted_table(capsys, tmp_path, folder_series, eval_text, loads):  # noqa: F811
    args = lambda out: quantize_args(folder_series[0], eval_text, out, "--workers", 1, bits="8,4,3", seeds=16)  # noqa: E731
    killed = tmp_path / "killed"
    proc = _ovt_process(*args(killed))
    _kill_when(proc, lambda: len(store.stored_chunks(killed)) >= 1)
    stored = store.stored_chunks(killed)
    assert not (killed / store.METRICS).exists() and len(stored) < 3
    assert store.read_manifest(killed)["status"] == "running"  # SIGKILL: no chance to say more
    code, _, err = ovt(capsys, *args(killed))
    assert code == 0, err
    assert len(loads) == 3 - len(stored)  # only the checkpoints not stored ran again
    code, _, err = ovt(capsys, *args(tmp_path / "whole"))
    assert code == 0, err
    same_tables(killed, tmp_path / "whole")
    table = pd.read_parquet(killed / store.METRICS)
    assert len(table) == 3 * (1 + 3 * (1 + 16)) + 3 * 2 and store.read_manifest(killed)["resumed"]


@pytest.mark.parametrize(
    "changes, needle",
    [
        (dict(bits=(1,)), "bits=1 must be >= 2 and <= 16"),
        (dict(bits=(8, 17)), "bits=17 must be >= 2 and <= 16"),
        (dict(bits=8), "bits=8 is not allowed; give (8,)"),
        (dict(bits=(8.0,)), "bits='8.0' is not an integer"),
        (dict(rounding=("bogus",)), "rounding='bogus' is not allowed; choose one of: nearest, stochastic"),
        (dict(rounding="nearest"), "rounding='nearest' is not allowed; give ('nearest',)"),
        (dict(seeds=0), "seeds=0 must be >= 1 and <= 10,000"),
        (dict(seeds=True), "seeds='True' is not an integer"),
    ],
)
def test_python_arguments_are_refused_as_flags_are_and_nothing_is_written(
    tmp_path, folder_series, eval_text, changes, needle
):  # noqa: F811, E501
    cfg = QuantizeRun(model=str(folder_series[0]), eval_text=str(eval_text), seq_len=32, max_blocks=2, **changes)
    with pytest.raises(UsageError) as refused:
        run_config(cfg, tmp_path / "out", quiet=True, workers=1)
    assert needle in str(refused.value) and "\n" not in str(refused.value)
    assert not (tmp_path / "out").exists()


def test_the_summary_lists_checkpoints_then_each_settings_t_star():
    rows = [
        dict(setup="x", checkpoint=c, pretrain_time=t, modification=m, bits=b, rounding=r, seed=s, value=v)
        for c, t, base in (("a", 1e3, 10.0), ("b", 2e3, 8.0), ("c", 4e3, 9.0))
        for m, b, r, s, v in (
            ("none", math.nan, "", 0, base),
            ("quantization", 8.0, "nearest", 0, base + 0.01),
            ("quantization", 3.0, "stochastic", 0, base + 1),
            ("quantization", 3.0, "stochastic", 1, base + 2),
        )
    ]
    table = pd.DataFrame(rows)
    table = pd.concat([table, llm_quantize.KIND.derive(table.assign(metric="perplexity"))], ignore_index=True)
    lines = llm_quantize.summary(table).splitlines()
    assert lines[0].split() == ["tokens", "none", "8-bit", "nearest", "3-bit", "stochastic"]
    assert lines[2].split() == ["a", "1K", "10", "10.01", "11.5"] and lines[3].split() == [
        "b",
        "2K",
        "8",
        "8.01",
        "9.5",
    ]
    assert lines[-1].startswith("inflection T* (tokens) - 3-bit stochastic: ") and "8-bit nearest: " in lines[-1]
    t_star = table[table.checkpoint == "inflection"].set_index("bits").value
    assert 1e3 < t_star[3.0] < 4e3 and 1e3 < t_star[8.0] < 4e3  # the minimum at 2K: an interior T*
