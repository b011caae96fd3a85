"""Typed LLM configs: presets, flags and ``field=value`` overrides build one config; sweeps; the
validation presets ``ovt reproduce`` composes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from experiments import cli
from experiments.llm import cli as llm_cli
from experiments.llm import config as llm_config
from experiments.llm import config_measures
from experiments.llm import presets as llm_presets
from experiments.llm import reproduce as llm_reproduce
from experiments.llm.config import FinetuneRun, PerturbRun, PretrainRun
from experiments.llm.config_measures import QuantizeRun
from experiments.llm.config_multimodal import MultimodalRun
from rundir import store
from rundir.lifecycle import UsageError
from tests.llm_validation.conftest import tiny_corpus

pytestmark = pytest.mark.usefixtures("one_torch_thread", "empty_offline_cache")


def configured(*argv: str) -> list[tuple[llm_config.RunConfig, Path]]:
    args = cli._parse(["llm", *argv])
    return llm_cli.configured(args.llm_command, args)


def test_a_flag_and_its_override_build_the_same_config():
    by_flags = configured("perturb", "--model", "m/n", "--tokens", "1e9,2.3T", "--gammas", "1,2", "--seeds", "3",
                          "--eval-text", "e.txt", "--seq-len", "64", "--out", "o")  # fmt: skip
    by_fields = configured("perturb", "model=m/n", "tokens=1e9,2.3T", "gammas=1,2", "seeds=3", "eval_text=e.txt",
                           "seq_len=64", "--out", "o")  # fmt: skip
    assert by_flags == by_fields == [
        (PerturbRun(model="m/n", tokens=(1e9, 2.3e12), gammas=(1.0, 2.0), seeds=3, eval_text="e.txt", seq_len=64),
         Path("o"))
    ]  # fmt: skip


@pytest.mark.parametrize(
    "flag, by_flag, field, by_field",
    [
        (["--seeds", "0"], "--seeds 0 must be >= 1", "seeds=0", "seeds=0 must be >= 1"),
        (["--seq-len", "abc"], "--seq-len 'abc' is not an integer", "seq_len=abc", "seq_len='abc' is not an integer"),
        (["--gammas", "1,inf"], "--gammas 'inf' must be a finite", "gammas=1,inf", "gammas='inf' must be a finite"),
        (["--tokens", "x"], "--tokens 'x' is not a token count", "tokens=x", "tokens='x' is not a token count"),
        (["--device", "xpu"], "invalid choice: 'xpu'", "device=xpu", "device='xpu' is not allowed; choose one of"),
    ],
)
def test_a_flag_and_its_override_are_read_by_one_reader(flag, by_flag, field, by_field):
    base = ["perturb", "--model", "m/n", "--out", "o"]
    with pytest.raises(UsageError, match=by_flag):
        configured(*base, *flag)
    with pytest.raises(UsageError, match=by_field):
        configured(*base, field)


def test_preset_then_flags_then_overrides_and_a_field_given_twice_is_refused():
    [(cfg, out)] = configured("pretrain", "--preset", "validation", "--quick", "--seq-len", "32", "seed=3")
    quick = llm_presets.get("pretrain", "validation", quick=True)
    assert cfg == dataclasses.replace(quick, seq_len=32, seed=3)
    assert quick.budgets == (65_536, 262_144, 1_048_576, 2_097_152) and quick.size == "20k"
    assert out == Path("results/llm/series-quick_seed=3_seq_len=32")
    assert configured("pretrain", "--preset", "validation")[0][1] == Path("results/llm/series")
    with pytest.raises(UsageError, match="seed is given twice"):
        configured("pretrain", "--preset", "tiny", "--seed", "1", "seed=2")
    with pytest.raises(UsageError, match="override key 'sede' is unknown; allowed: .*seed"):
        configured("pretrain", "--preset", "tiny", "sede=2")
    with pytest.raises(UsageError, match="give --out DIR"):
        configured("pretrain", "budgets=1K")


def test_a_comma_list_sweeps_a_scalar_field_but_fills_a_list_field():
    runs = configured("finetune", "--out", "sw", "lrs=1e-3,3e-3", "reg=0,0.5", "seed=1,2")
    assert [out for _, out in runs] == [
        Path("sw/reg=0_seed=1"), Path("sw/reg=0_seed=2"), Path("sw/reg=0.5_seed=1"), Path("sw/reg=0.5_seed=2")
    ]  # fmt: skip
    assert {cfg.lrs for cfg, _ in runs} == {(1e-3, 3e-3)}
    assert [(cfg.reg, cfg.seed) for cfg, _ in runs] == [(0.0, 1), (0.0, 2), (0.5, 1), (0.5, 2)]


def test_required_fields_and_exclusive_pairs_are_named(tmp_path, capsys):
    code = cli.main(["llm", "finetune", "--out", str(tmp_path / "o"), "model=m/n", "revisions=a"])
    assert code == 2 and "eval_text is required: give --eval-text or eval_text=VALUE" in capsys.readouterr().err
    with pytest.raises(UsageError, match="revisions and tokens exclude each other"):
        FinetuneRun(revisions=("a",), tokens=(1.0,))
    assert not (tmp_path / "o").exists()


def test_list_names_every_preset_and_what_it_sets(capsys):
    assert cli.main(["llm", "pretrain", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(llm_presets.PRESETS["pretrain"])
    assert "size=20k budgets=319488,638976" in lines[-1] and "(--quick: budgets=65536" in lines[-1]
    assert cli.main(["llm", "finetune", "--list", "--preset", "validation"]) == 2


def test_reproduce_composes_the_validation_presets_on_its_own_series(monkeypatch, tmp_path):
    ran = []
    monkeypatch.setattr(llm_reproduce, "run_config", lambda cfg, out, quiet: ran.append((cfg, out)))
    assert llm_reproduce.run(tmp_path, quick=True) == [tmp_path / "perturb", tmp_path / "finetune"]
    series = tmp_path / "series"
    on_series = dict(model=str(series), eval_text=str(series / "heldout.txt"))
    assert ran == [
        (llm_presets.get("pretrain", "validation", True), series),
        (dataclasses.replace(llm_presets.get("perturb", "validation", True), **on_series), tmp_path / "perturb"),
        (dataclasses.replace(llm_presets.get("finetune", "validation", True), **on_series), tmp_path / "finetune"),
    ]
    # The three steps score one token set: the series' held-out text, cut to the same blocks.
    assert {(cfg.seq_len, cfg.max_blocks) for cfg, _ in ran} == {(64, 32)}


def test_a_sweep_plans_every_run_before_the_first_starts_then_stores_each(tmp_path, folder_series, capsys):
    eval_text = tmp_path / "eval.txt"
    eval_text.write_text("\n".join(tiny_corpus(40, seed=3)))
    out = tmp_path / "sweep"
    base = ["llm", "perturb", "--model", str(folder_series[0]), "--eval-text", str(eval_text), "gammas=1",
            "seeds=1", "--max-blocks", "2", "--out", str(out), "--quiet"]  # fmt: skip
    # The second cell is bad input (seq_len 4096 exceeds the positions): nothing at all is written.
    assert cli.main([*base, "seq_len=32,4096"]) == 2
    assert "seq_len=4096 exceeds the 128 positions" in capsys.readouterr().err
    assert not out.exists()
    assert cli.main([*base, "--seq-len", "32", "scale=init,absolute"]) == 0
    tables = {scale: store.load(out / f"scale={scale}") for scale in ("init", "absolute")}
    for scale in tables:
        manifest = store.read_manifest(out / f"scale={scale}")
        assert manifest["config"]["scale"] == scale and manifest["status"] == "complete"
    base_rows = [t[t.modification == "none"].value.reset_index(drop=True) for t in tables.values()]
    pd.testing.assert_series_equal(*base_rows)  # the same checkpoints, unperturbed: the same perplexity
    noisy = [t[t.modification == "gaussian"].value.to_numpy() for t in tables.values()]
    assert (noisy[0] != noisy[1]).all()  # sigma = init std vs sigma = 1: different noise


def test_presets_are_valid_configs_of_their_type():
    kinds = {"pretrain": PretrainRun, "perturb": PerturbRun, "finetune": FinetuneRun, "quantize": QuantizeRun}
    kinds["multimodal"] = MultimodalRun
    for kind, presets in llm_presets.PRESETS.items():
        for name in presets:
            for quick in (False, True):
                assert type(llm_presets.get(kind, name, quick)) is kinds[kind]
    with pytest.raises(ValueError, match="preset 'nope' is unknown for llm perturb; allowed: validation"):
        llm_presets.get("perturb", "nope")


def test_a_wsd_series_is_planned_with_its_decay_fraction(tmp_path):
    from experiments.llm.kinds import pretrain as llm_pretrain_cli

    [(cfg, out)] = configured("pretrain", "--preset", "tiny", "--mode", "wsd", "decay_fraction=0.3", "budgets=1K,4K",
                              "--out", str(tmp_path / "s"))  # fmt: skip
    plan = llm_pretrain_cli.plan(cfg, out)
    assert (plan.config.mode, plan.config.decay_fraction) == ("wsd", 0.3) and not out.exists()
    with pytest.raises(UsageError, match="decay_fraction=0.95 must be <= 0.9"):
        configured("pretrain", "--preset", "tiny", "decay_fraction=0.95", "budgets=1K", "--out", str(tmp_path / "t"))
    [(cfg, out)] = configured("pretrain", "--preset", "tiny", "--mode", "wsd", "--trunk-checkpoints", "2",
                              "budgets=1K,4K", "--out", str(tmp_path / "s"))  # fmt: skip
    plan = llm_pretrain_cli.plan(cfg, out)
    assert plan.config.trunk_checkpoints == 2 and [t.revision for t in plan.config.trunk_targets()] == [
        "trunk-step1-tokens1024",  # 1K and 4K tokens at 1,024 a step (the tiny size's defaults)
        "trunk-step4-tokens4096",
    ]


def test_quantize_reads_its_lists_as_the_library_bounds_them_and_its_preset_mirrors_perturbs(capsys):
    from llm_validation import quantize

    assert config_measures.ROUNDINGS == quantize.ROUNDINGS
    assert config_measures.BIT_RANGE == (quantize.MIN_BITS, quantize.MAX_BITS)
    by_flags = configured("quantize", "--model", "m/n", "--bits", "8,4,8", "--rounding", "stochastic,nearest",
                          "--out", "o")  # fmt: skip
    by_fields = configured("quantize", "model=m/n", "bits=8,4,8", "rounding=stochastic,nearest", "--out", "o")
    assert (
        by_flags
        == by_fields
        == [(QuantizeRun(model="m/n", bits=(8, 4), rounding=("stochastic", "nearest")), Path("o"))]
    )
    quick, perturb = (llm_presets.get(kind, "validation", quick=True) for kind in ("quantize", "perturb"))
    shared = ("model", "eval_text", "seq_len", "max_blocks", "batch_size")
    assert [getattr(quick, f) for f in shared] == [getattr(perturb, f) for f in shared]
    assert (quick.bits, quick.rounding, quick.seeds) == ((8, 3), ("nearest", "stochastic"), 2)
    assert llm_presets.get("quantize", "validation").bits == (8, 4, 3, 2)
    assert llm_presets.default_out("quantize", "validation") == Path("results/llm/quantize")
    assert cli.main(["llm", "quantize", "--list"]) == 0
    assert "bits=8,4,3,2 rounding=nearest,stochastic seeds=3" in capsys.readouterr().out
