"""``ovt llm curvature``: the curvature rows of every checkpoint equal the library's estimates, and the
excess rows are antithetic pairs of perturb's draws."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from llm_validation.checkpoints import load_checkpoint
from llm_validation.curvature import top_hessian_eigenvalue, weighted_hessian_trace
from llm_validation.evaluate import load_token_blocks, perplexity
from llm_validation.perturb import Perturbation
from rundir import store
from tests.experiments.conftest import ovt
from tests.experiments.test_llm_perturb_cli import eval_text as eval_text  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread", "empty_offline_cache")


def curvature_args(model, text, out, *extra):
    return ("llm", "curvature", "--model", model, "--eval-text", text, "--out", out, "--seq-len", "32",
            "--max-blocks", "6", "--gammas", "0.5,1", "--draws", "2", "--probes", "4", "--iterations", "5",
            "--quiet", *extra)  # fmt: skip


def test_rows_are_the_library_estimates_and_antithetic_pairs(capsys, tmp_path, folder_series, eval_text):  # noqa: F811
    root = folder_series[0]
    code, _, err = ovt(capsys, *curvature_args(root, eval_text, tmp_path / "run"))
    assert code == 0, err
    table = pd.read_parquet(tmp_path / "run" / store.METRICS)
    revision = sorted(folder_series[1])[0]
    rows = table[table.checkpoint == revision]
    assert sorted(set(rows.metric)) == ["delta_nll", "hessian_trace", "hessian_trace_se", "top_eigenvalue"]
    model, tokenizer = load_checkpoint(root, revision)
    blocks = load_token_blocks(eval_text, tokenizer, 32, 6)
    perturbation = Perturbation(model, "init")
    trace = weighted_hessian_trace(model, blocks, perturbation.sigmas, probes=4, batch_size=8)
    eigen = top_hessian_eigenvalue(model, blocks, iterations=5, batch_size=8)
    value = rows.set_index("metric")["value"]
    assert value["hessian_trace"] == trace.trace and value["hessian_trace_se"] == trace.stderr
    assert value["top_eigenvalue"] == eigen.eigenvalue
    base = perplexity(model, blocks, 8).mean_nll
    with perturbation.draw(1.0, 1):
        plus = perplexity(model, blocks, 8).mean_nll
        perturbation.reflect()
        minus = perplexity(model, blocks, 8).mean_nll
    pair = rows[(rows.metric == "delta_nll") & (rows.gamma == 1.0) & (rows.seed == 1)].value.item()
    assert pair == pytest.approx((plus + minus) / 2 - base, rel=1e-12, abs=1e-12)
    assert len(rows[rows.metric == "delta_nll"]) == 2 * 2 and rows.modification.isin(["none", "gaussian"]).all()


def test_reflect_is_the_mirror_image_and_restore_is_exact(folder_series):
    model, _ = load_checkpoint(folder_series[0], sorted(folder_series[1])[0])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    perturbation = Perturbation(model, "init")
    name, param = next(iter(perturbation.params.items()))
    with perturbation.draw(2.0, 3):
        plus = param.detach().clone()
        perturbation.reflect()
        minus = param.detach().clone()
    original = before[name]
    torch.testing.assert_close(plus + minus, 2 * original, rtol=0, atol=1e-6)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bad_curvature_input_exits_2(capsys, tmp_path, folder_series, eval_text):  # noqa: F811
    code, _, err = ovt(capsys, *curvature_args(folder_series[0], eval_text, tmp_path / "run", "--probes", "0"))
    assert code == 2 and "--probes 0" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()
