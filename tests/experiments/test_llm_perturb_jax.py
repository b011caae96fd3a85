"""``ovt llm perturb --backend jax``: the torch run's store and manifest, its base perplexities, and
the same table on four (forced host) devices as on one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from rundir import store
from tests.experiments.conftest import ovt
from tests.llm_validation.conftest import tiny_corpus

pytestmark = pytest.mark.usefixtures("one_torch_thread", "empty_offline_cache")

ROOT = Path(__file__).resolve().parents[2]
SMALL = ("--seq-len", 32, "--max-blocks", 4, "--batch-size", 3, "--quiet")


def argv(model, eval_text, out, backend, *extra):
    return (
        "llm", "perturb", "--model", model, "--eval-text", eval_text, "--gammas", "0.5,2", "--seeds", 3,
        "--out", out, "--backend", backend, *SMALL, *extra,
    )  # fmt: skip


@pytest.fixture(scope="module")
def eval_text(tmp_path_factory):
    path = tmp_path_factory.mktemp("eval") / "held_out.txt"
    path.write_text("\n".join(tiny_corpus(60, seed=9)))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory, folder_series, eval_text):
    """{backend: run directory} of the same perturb run on every checkpoint of the folder series."""
    import huggingface_hub.constants

    root = tmp_path_factory.mktemp("runs")
    offline, huggingface_hub.constants.HF_HUB_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE, True
    try:
        for backend in ("torch", "jax"):
            from experiments import cli

            assert cli.main([str(a) for a in argv(folder_series[0], eval_text, root / backend, backend)]) == 0
    finally:
        huggingface_hub.constants.HF_HUB_OFFLINE = offline
    return {backend: root / backend for backend in ("torch", "jax")}


def test_the_jax_run_writes_the_torch_runs_store_and_records_backend_devices_dtype(runs):
    torch_table = pd.read_parquet(runs["torch"] / store.METRICS)
    jax_table = pd.read_parquet(runs["jax"] / store.METRICS)
    keys = ["checkpoint", "modification", "gamma", "seed", "metric"]
    assert list(jax_table.columns) == list(torch_table.columns) and (jax_table.dtypes == torch_table.dtypes).all()
    assert jax_table[keys].equals(torch_table[keys])
    base = (jax_table.modification == "none").to_numpy()
    relative = (jax_table.value[base] / torch_table.value[base] - 1).abs()
    assert len(relative) == 3 and relative.max() < 1e-6, relative
    noisy = jax_table[(jax_table.modification == "gaussian") & (jax_table.checkpoint != "inflection")]
    assert noisy.value.nunique() == len(noisy)  # every draw its own noise
    manifest = json.loads((runs["jax"] / store.MANIFEST).read_text())
    assert manifest["status"] == "complete"
    assert (manifest["config"]["backend"], manifest["devices"], manifest["config"]["dtype"]) == (
        "jax",
        ["cpu:0"],
        "float32",
    )
    assert manifest["jax"]["mesh"] == {"draws": 1, "batch": 1}
    torch_manifest = json.loads((runs["torch"] / store.MANIFEST).read_text())
    assert (torch_manifest["config"]["backend"], torch_manifest["devices"]) == ("torch", ["cpu"])
    assert manifest["sigma"]["by_parameter"] == torch_manifest["sigma"]["by_parameter"]
    for field in ("family", "init_scheme", "rule_by_parameter", "policy"):  # the per-tensor rule, as torch records it
        assert manifest["sigma"][field] == torch_manifest["sigma"][field], field


def test_a_rerun_resumes_and_a_fresh_run_repeats_the_numbers(capsys, tmp_path, runs, folder_series, eval_text):
    code, _, err = ovt(capsys, *argv(folder_series[0], eval_text, runs["jax"], "jax"))
    assert code == 0, err
    code, _, err = ovt(capsys, *argv(folder_series[0], eval_text, tmp_path / "again", "jax"))
    assert code == 0, err
    first, again = (pd.read_parquet(d / store.METRICS) for d in (runs["jax"], tmp_path / "again"))
    assert first.equals(again)


SHARDED = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    from experiments import cli
    from llm_validation.jax_backend.evaluate import DrawEvaluator, make_mesh
    from llm_validation.jax_backend.model import OlmoForCausalLM, random_weights
    from llm_validation.jax_backend.spec import spec_of_preset
    from llm_validation.models import PRESETS
    import dataclasses

    argv, out = json.loads(sys.argv[1]), sys.argv[2]
    code = cli.main(argv)
    spec = spec_of_preset(dataclasses.asdict(PRESETS["tiny"]))
    model = OlmoForCausalLM(spec, random_weights(spec, seed=1))
    blocks = np.random.default_rng(0).integers(0, spec.vocab_size, (5, 16))
    draws = [(0.0, 0)] + [(3.0, seed) for seed in range(6)]
    tables = {
        shape: DrawEvaluator(model, spec, blocks, 3, mesh=make_mesh(jax.devices()[: shape[0] * shape[1]], shape[1]),
                             draws_per_call=4).mean_nlls(draws).tolist()
        for shape in [(1, 1), (4, 1), (2, 2)]
    }
    print(json.dumps({"code": code, "devices": jax.device_count(), "tables": {str(k): v for k, v in tables.items()}}))
    """
)


def test_four_devices_give_the_one_device_table(tmp_path, runs, folder_series, eval_text):
    """Draws split over 4 devices (the CLI run), and batches split over 2 and 4 (the evaluator)."""
    out = tmp_path / "sharded"
    args = [str(a) for a in argv(folder_series[0], eval_text, out, "jax")]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", SHARDED, json.dumps(args), str(out)],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["code"] == 0 and result["devices"] == 4
    manifest = json.loads((out / store.MANIFEST).read_text())
    assert len(manifest["devices"]) == 4 and manifest["jax"]["mesh"] == {"draws": 4, "batch": 1}
    sharded, single = (pd.read_parquet(d / store.METRICS) for d in (out, runs["jax"]))
    pd.testing.assert_frame_equal(sharded, single, check_exact=False, rtol=1e-6)
    tables = result["tables"]
    one = tables["(1, 1)"]
    for shape, values in tables.items():
        assert values == pytest.approx(one, rel=1e-6), shape
