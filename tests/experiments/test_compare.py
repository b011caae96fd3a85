"""``ovt compare``: recovery of known power laws within bootstrap intervals, held-out T* on theory data,
and the CLI contract (exit 2 with one line, nothing written)."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from analysis.phenomenology import Decomposition
from experiments import compare
from experiments.sweep import presets
from experiments.sweep.runner import run_theory
from rundir import store
from tests.experiments.conftest import ovt

TRUE = Decomposition(E=2.5, A=474.0, alpha=0.5, C=9.5e-5, p=2.0, beta=0.5)
TOKENS = np.geomspace(1e5, 1e7, 12)
GAMMAS = (0.5, 1.0, 2.0)


def _rows(T, modification, values, gamma=np.nan, seed=0, metric="perplexity", source="llm"):
    n = len(T)
    return pd.DataFrame(
        {
            "source": source,
            "setup": "synthetic",
            "checkpoint": [f"tokens{t:.0f}" for t in T],
            "pretrain_time": T,
            "modification": modification,
            "gamma": gamma,
            "lr": np.nan,
            "steps": np.nan,
            "reg": np.nan,
            "seed": seed,
            "metric": metric,
            "value": values if np.ndim(values) else np.full(n, values),
        }
    )


def write_store(path, frame, command="llm perturb"):
    store.write_table(path / store.METRICS, frame)
    store.write_json(path / store.MANIFEST, {"command": command})
    return path


def synthetic_perturb_store(path, draws=16, seed=1):
    """An LLM perturb store from known power laws: log perplexity = L(T) + S(T, gamma), the base with
    0.3% noise, each draw's excess with 10% log-normal noise."""
    rng = np.random.default_rng(seed)
    base = TRUE.base(TOKENS) * np.exp(0.003 * rng.standard_normal(TOKENS.size))
    frames = [_rows(TOKENS, "none", np.exp(base))]
    for gamma in GAMMAS:
        for k in range(draws):
            noisy = TRUE.excess(TOKENS, gamma) * np.exp(0.1 * rng.standard_normal(TOKENS.size))
            frames.append(_rows(TOKENS, "gaussian", np.exp(base + noisy), gamma=gamma, seed=k))
    return write_store(path, pd.concat(frames, ignore_index=True))


def test_known_power_laws_are_recovered_within_their_intervals(tmp_path):
    """95% intervals: over generator seeds 0..11, 9 cover all six parameters and T*; the store uses seed 1."""
    run = synthetic_perturb_store(tmp_path / "run")
    families, skipped = compare.families(store.load([run]), "synthetic")
    assert not skipped and len(families) == 1
    fam = families[0]
    fam.mask = compare.fit_window(fam.T, fam.base[:, 0], None)
    assert fam.mask.all()  # an LLM curve keeps every checkpoint
    entry = compare.fit_family(fam, n_boot=100, seed=0, window=None, rank=32)
    assert entry["bootstrap"]["excess"] == "seeds" and entry["bootstrap"]["base"] == "log residuals"
    for name, true in dataclasses.asdict(TRUE).items():
        lo, hi = entry["decomposition"][name]["interval"]
        assert lo <= true <= hi, (name, true, lo, hi)
        assert entry["decomposition"][name]["value"] == pytest.approx(true, rel=0.3, abs=0.05)
    # In range, the closed-form T* of the fit is the true one within its interval, and the held-out
    # prediction of the middle gamma lands within 20%.
    middle = entry["t_star"][1]
    lo, hi = middle["fit"]["interval"]
    assert lo <= TRUE.t_star(1.0) <= hi
    held = {row["size"]: row for row in entry["held_out"]["per_size"]}
    assert held[1.0]["predicted"]["value"] == pytest.approx(TRUE.t_star(1.0), rel=0.2)


@pytest.fixture(scope="module")
def theory_store(tmp_path_factory):
    """The quick ``gaussian`` preset at three gammas, run by the real sweep."""
    out = tmp_path_factory.mktemp("theory") / "gaussian"
    cfg = dataclasses.replace(presets.get("gaussian", quick=True), n_t=31)
    run_theory(cfg, "gaussian", out, quiet=True)
    return out


def test_held_out_t_star_on_theory_data(capsys, tmp_path, theory_store):
    out = tmp_path / "compare"
    code, stdout, _ = ovt(
        capsys, "compare", "--results", str(theory_store), "--out", str(out), "--bootstrap", "20", "--quiet"
    )
    assert code == 0 and stdout == ""
    fits = json.loads((out / "fits.json").read_text())
    (entry,) = [e for e in fits["families"] if e["modification"] == "gaussian"]
    held = entry["held_out"]
    assert held["n_compared"] == 3
    for row in held["per_size"]:  # every held-out gamma's T* within a factor 1.5 of the observed one
        assert abs(np.log(row["predicted"]["value"] / row["observed"]["value"])) < np.log(1.5), row
    lin = entry["linear_model"]
    assert lin["params"]["alpha_s"] == pytest.approx(1.0, rel=0.05)  # the preset's spectrum s_i = 1/i
    assert lin["median_abs_log_t_star_error"] < 0.2
    assert any("one modification size" in reason for reason in fits["skipped"])  # finetune: one lr
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["compare_gaussian_gaussian.png"] and (out / "compare_gaussian_gaussian.png").stat().st_size > 0


def _base_only(T):
    return _rows(T, "none", np.exp(TRUE.base(T)))


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda: _rows(TOKENS, "none", 1.0, metric="accuracy"), "no empirical rows"),
        (
            lambda: pd.concat(
                [
                    _base_only(TOKENS[:1]),
                    _rows(TOKENS[:1], "gaussian", 50.0, gamma=1.0),
                    _rows(TOKENS[:1], "gaussian", 60.0, gamma=2.0),
                ]
            ),
            "1 checkpoint(s)",
        ),
        (lambda: _base_only(TOKENS), "no modification rows"),
        (lambda: pd.concat([_base_only(TOKENS), _rows(TOKENS, "gaussian", 60.0, gamma=1.0)]), "one modification size"),
    ],
)
def test_bad_stores_exit_2_with_one_line_and_write_nothing(capsys, tmp_path, make, needle):
    run = write_store(tmp_path / "run", make().reset_index(drop=True))
    out = tmp_path / "out"
    code, _, err = ovt(capsys, "compare", "--results", str(run), "--out", str(out))
    assert code == 2 and err.count("\n") == 1 and needle in err, err
    assert not out.exists()


def test_bad_arguments_exit_2(capsys, tmp_path):
    run = synthetic_perturb_store(tmp_path / "run", draws=2)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for argv, needle in [
        (["--results", str(tmp_path / "missing")], "does not exist"),
        (["--results", str(run), "--out", str(blocker / "out")], "not writable"),
        (["--results", str(run), "--window", "5,1"], "0 < TMIN < TMAX"),
        (["--results", str(run), "--bootstrap", "-1"], "must be >= 0"),
    ]:
        code, _, err = ovt(capsys, "compare", *argv)
        assert code == 2 and err.count("\n") == 1 and needle in err, err
    assert not (run / "compare").exists()


def test_compare_writes_the_verdicts_of_every_llm_model(tmp_path):
    """``claims.json`` / ``claims.md`` from the committed CPU reference stores: one model ("series"),
    one pre-training series, three draws; sensitivity rises at every gamma with rank correlation 1."""
    from pathlib import Path

    reference = Path(__file__).resolve().parents[2] / "paper_figures" / "reference" / "llm"
    paths = compare.write_claims(store.find_runs(reference), tmp_path)
    assert [p.name for p in paths] == ["claims.json", "claims.md"]
    claims = json.loads((tmp_path / "claims.json").read_text())["claims"]
    assert [c["claim"] for c in claims] == ["a", "a'", *"bcdefgh"] and {c["setup"] for c in claims} == {"series"}
    by = {c["claim"]: c for c in claims}
    assert by["a"]["value"] == pytest.approx(1.0) and by["a"]["n_series"] == 1 and by["a"]["n_draws"] == 3
    assert by["h"]["verdict"] == "INCONCLUSIVE" and by["h"]["rule"].startswith("no data")
    assert "| a |" in (tmp_path / "claims.md").read_text()
    assert compare.write_claims([], tmp_path / "none") == []


def test_fields_that_do_not_apply_to_a_family_stay_out_of_its_label(tmp_path):
    """A store with quantization rows carries ``bits`` (NaN) and ``rounding`` ("") on its Gaussian rows:
    the Gaussian family is the same one, and its label names neither."""
    frame = store.load([synthetic_perturb_store(tmp_path / "run")])
    quantized = frame[frame.modification == "none"].assign(modification="quantization", bits=4.0, rounding="nearest")
    mixed = pd.concat([frame.assign(bits=np.nan, rounding=""), quantized], ignore_index=True)
    plain, _ = compare.families(frame, "synthetic")
    families, skipped = compare.families(mixed, "synthetic")
    assert [f.name for f in families] == [f.name for f in plain] == ["synthetic / gaussian"]
    assert np.array_equal(families[0].modified, plain[0].modified, equal_nan=True)
