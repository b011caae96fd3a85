"""Sweep rows of multimodal adaptation (``multimodal``): each stage's L_A, L_B and excess equal their direct
computation, every overlap gets its T* row, the preset's stage-1 closed form equals GD, bad settings are
refused by name."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from analysis.inflection import KINDS
from experiments.sweep import config, overrides, presets
from experiments.sweep.runner import run_theory
from theory import multimodal, network, protocol, simulate, tasks
from theory.finetune import finetune_gd

TINY = dict(
    d_in=4,
    h=4,
    d_out=8,
    rank=4,
    n_t=7,
    t_max=300.0,
    init_std=0.5,
    multimodal=True,
    d_z=5,
    projector_lr=0.5,
    projector_steps=10,
    lr=0.05,
    steps=20,
    grid=(("overlap", (0.5, 1.0)),),
)


def _curve(table, modification, metric, **equal):
    keep = (table.modification == modification) & (table.metric == metric) & (table.checkpoint != "inflection")
    for column, value in equal.items():
        keep &= table[column] == value
    return table[keep].sort_values("pretrain_time")


def _weights(cfg, T):
    """(W(T) with a leading T axis, the teacher, B's spectrum), computed here: the closed form's strengths in
    the teacher's bases, or matrix gradient flow from the aligned init."""
    s = tasks.power_law_spectrum(cfg.rank, cfg.s1, cfg.alpha)
    task = tasks.teacher(jax.random.PRNGKey(cfg.task_seed), s, cfg.d_out, cfg.d_in)
    T = jnp.asarray(T, s.dtype)
    if cfg.method == "closed_form":
        return protocol.closed_form_weights(s, cfg.u0, T, task.U, task.V, h=cfg.h), task, s[::-1]
    Ws0 = network.init_aligned_balanced(task.U, task.V, cfg.u0, cfg.h)
    return simulate.gradient_flow(lambda W: network.task_loss(W, task.matrix), Ws0, T, cfg.dt_max), task, s[::-1]


@pytest.fixture(scope="module", params=["closed_form", "flow"])
def multimodal_run(request, tmp_path_factory):
    cfg = config.TheoryConfig(**TINY, method=request.param, dt_max=0.05)
    return cfg, run_theory(cfg, "multimodal", tmp_path_factory.mktemp(request.param), quiet=True)


def test_multimodal_rows_equal_direct_computation(multimodal_run):
    """Each overlap's rows of both stages are ``multimodal.multimodal_curves`` of W(T), recomputed here
    with B from ``modality_task`` (A's U, the reversed spectrum, the teacher's key); stage 1's excess is
    exactly 0 and its L_A the clean L_A."""
    cfg, table = multimodal_run
    T = _curve(table, "none", "pretrain_loss").pretrain_time.to_numpy()
    Ws_T, task, b = _weights(cfg, T)
    clean = _curve(table, "none", "pretrain_loss").value.to_numpy()
    for c in (0.5, 1.0):
        B = multimodal.modality_task(task.U, b, c, jax.random.PRNGKey(cfg.task_seed), cfg.d_z)
        direct = multimodal.multimodal_curves(
            Ws_T, task.matrix, B, projector_lr=0.5, projector_steps=10, lr=0.05, steps=20
        )
        for stage in ("projector", "joint"):
            for metric in ("pretrain_loss", "finetune_loss", "excess"):
                rows = _curve(table, "multimodal", metric, stage=stage, overlap=c).value.to_numpy()
                expected = np.asarray(getattr(direct, f"{stage}_{metric}"), float)
                np.testing.assert_allclose(rows, expected, rtol=1e-4, atol=1e-7)
        assert (_curve(table, "multimodal", "excess", stage="projector", overlap=c).value == 0).all()
        # The clean rows of the closed form come from the mode strengths, these from the weights: float32 apart.
        stage_1 = _curve(table, "multimodal", "pretrain_loss", stage="projector", overlap=c).value
        np.testing.assert_allclose(stage_1, clean, rtol=1e-5, atol=1e-7)


def test_every_overlap_has_its_t_star_row_and_its_own_columns(multimodal_run):
    """One inflection row per overlap (stage ``joint``, the stage-2 lr), finite exactly where interior;
    the multimodal columns are set on multimodal rows only, stage 2's lr, steps, reg on its own rows
    (the projector stage does not read them), and the other modifications' rows are stored once, not
    per overlap."""
    cfg, table = multimodal_run
    rows = table[(table.checkpoint == "inflection") & (table.modification == "multimodal")]
    assert sorted(rows.overlap) == [0.5, 1.0] and set(rows.stage) == {"joint"} and set(rows.lr) == {0.05}
    assert set(rows.t_star_kind) <= set(KINDS)
    assert (np.isfinite(rows.value) == (rows.t_star_kind == "interior")).all()
    mm = table[table.modification == "multimodal"]
    assert (mm.projector_steps == 10).all() and (mm.projector_lr == 0.5).all() and (mm.d_z == 5).all()
    others = table[table.modification != "multimodal"]
    assert others[list(config.MULTIMODAL)].isna().all().all() and (others.stage == "").all()
    projector = mm[mm.stage == "projector"]
    assert projector[["lr", "steps", "reg"]].isna().all().all() and (projector.lr_policy == "").all()
    joint = mm[(mm.stage == "joint") & (mm.checkpoint != "inflection")]
    assert (joint.lr == 0.05).all() and (joint.steps == 20).all() and (joint.lr_policy == "fixed").all()
    assert len(_curve(table, "finetune", "pretrain_loss")) == cfg.n_t


def test_the_presets_stage_1_closed_form_is_gd(tmp_path):
    """The acceptance check: the ``multimodal`` preset's stage-1 rows (closed form on W(T)'s singular
    basis) equal ``projector_steps`` explicit GD steps on P at ``projector_lr`` to 1e-3 relative, at
    five T across the modes' learning and two overlaps (the preset's setup, a shorter T grid); the
    stage-2 rows equal stage 2 run from that GD projector."""
    cfg = dataclasses.replace(presets.get("multimodal"), n_t=5, t_min=3.0, t_max=3e3, grid=(("overlap", (0.5, 1.0)),))
    table = run_theory(cfg, "multimodal", tmp_path, quiet=True)
    T = _curve(table, "none", "pretrain_loss").pretrain_time.to_numpy()
    Ws_T, task, b = _weights(cfg, T)
    for c in (0.5, 1.0):
        B = multimodal.modality_task(task.U, b, c, jax.random.PRNGKey(cfg.task_seed), cfg.d_z)

        def stages(*Ws, B=B):
            M = network.end_to_end(Ws)
            step = lambda P, _: (P - cfg.projector_lr * M.T @ (M @ P - B), None)  # noqa: E731
            P, _ = jax.lax.scan(step, jnp.zeros((cfg.d_in, cfg.d_z)), None, length=cfg.projector_steps)
            joint = finetune_gd((P, *Ws), B, cfg.lr, cfg.steps)
            return (
                network.task_loss((P, *Ws), B),
                network.task_loss(joint, B),
                network.task_loss(joint[1:], task.matrix),
            )

        gd_first, gd_second, gd_forgot = (np.asarray(x, float) for x in jax.jit(jax.vmap(stages))(*Ws_T))
        first = _curve(table, "multimodal", "finetune_loss", stage="projector", overlap=c).value.to_numpy()
        np.testing.assert_allclose(first, gd_first, rtol=1e-3)
        second = _curve(table, "multimodal", "finetune_loss", stage="joint", overlap=c).value.to_numpy()
        np.testing.assert_allclose(second, gd_second, rtol=1e-3)
        forgot = _curve(table, "multimodal", "pretrain_loss", stage="joint", overlap=c).value.to_numpy()
        np.testing.assert_allclose(forgot, gd_forgot, rtol=1e-3, atol=1e-8)


@pytest.mark.parametrize(
    "fields, match",
    [
        (dict(multimodal=True, overlap=1.5), r"overlap=1.5 must lie in \[0, 1\]"),
        (dict(overlap=0.5), r"overlap=0.5 is read only with multimodal=true"),
        (dict(projector_steps=5), r"projector_steps=5 is read only with multimodal=true"),
        (dict(multimodal=True, overlap=0.5), r"overlap=0.5 needs d_out >= 2 x rank = 64"),
        (dict(multimodal=True, d_z=8), r"d_z=8 must be >= the task rank 32"),
        (dict(multimodal=True, projector_lr=0.0), r"projector_lr=0.0 must be > 0"),
        (dict(multimodal=True, projector_steps=-1), r"projector_steps=-1 must be >= 0"),
        (dict(multimodal=True, overlap=True), r"overlap=True must be a number"),
        (dict(multimodal=True, method="flow", finetune_samples=8), r"finetune_samples=8 is not read by multimodal"),
    ],
)
def test_bad_multimodal_settings_are_refused_by_name(fields, match):
    with pytest.raises(ValueError, match=match):
        config.TheoryConfig(**fields)


def test_a_bad_overlap_in_a_sweep_is_refused_by_name():
    with pytest.raises(ValueError, match=r"overlap=2.0 must lie in \[0, 1\]"):
        overrides.apply_overrides(presets.get("multimodal"), overrides.read_overrides(["overlap=0.5,2"]))
