"""The finite-sample tuned lr (preset ``tuned_finite``): fine-tuning on 64 noisy samples of B, the
lr of each T chosen on the held-out (population) L_B."""

import numpy as np
import pandas as pd
import pytest

from experiments.sweep import config, overrides, presets
from experiments.sweep.runner import run_theory


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return run_theory(presets.get("tuned_finite"), "tuned_finite", tmp_path_factory.mktemp("tf"), quiet=True)


def test_the_tuned_lr_is_interior_at_every_t_and_falls_with_t(table):
    fixed = table[(table.lr_policy == "fixed") & (table.metric == "finetune_loss") & (table.checkpoint != "inflection")]
    held_out = fixed.pivot_table(index="pretrain_time", columns="lr", values="value")
    best = held_out.idxmin(axis=1).to_numpy()
    grid = held_out.columns.to_numpy()
    assert ((best > grid.min()) & (best < grid.max())).all(), best  # neither end of the grid, at every T
    assert (np.diff(best) <= 0).all() and best[0] > best[-1]  # it falls with T (measured: 0.08 -> 0.01)
    tuned = table[(table.lr_policy == "tuned") & (table.metric == "finetune_loss")].set_index("pretrain_time")
    np.testing.assert_allclose(tuned.value.loc[held_out.index], held_out.min(axis=1))


def test_l_a_still_rises_after_fine_tuning_at_the_tuned_lr(table):
    infl = table[(table.checkpoint == "inflection") & (table.modification == "finetune") & (table.lr_policy == "tuned")]
    assert len(infl) == 1 and infl.t_star_kind.iloc[0] == "interior"
    curve = table[(table.lr_policy == "tuned") & (table.metric == "pretrain_loss") & (table.checkpoint != "inflection")]
    curve = curve.sort_values("pretrain_time")
    i = int(np.argmin(curve.value.to_numpy()))
    assert 0 < i < len(curve) - 1 and curve.value.iloc[i:].max() > curve.value.iloc[i] * 1.005


def test_finite_samples_need_a_simulated_path():
    with pytest.raises(ValueError, match="finetune_samples=64 needs method=flow or series"):
        overrides.apply_overrides(presets.get("finetune"), {"finetune_samples": "64"})
    assert isinstance(presets.get("tuned_finite", quick=True), config.TheoryConfig)
    assert pd.api.types.is_integer_dtype(pd.Series([presets.get("tuned_finite").finetune_samples]))
