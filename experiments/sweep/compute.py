"""Run a theory config: expand the grid, compute fixed-size chunks of cells under jit + vmap, store.

Cells that share every shape-determining field form a group and share one compiled function; the
numeric fields in ``TRACED`` are vmapped. The last chunk of a group is padded (with its last cell)
so every chunk has one shape. Each finished chunk is written atomically to ``chunks/``; a rerun
skips stored chunks, and ``metrics.parquet`` is rebuilt from the chunks at the end, so a killed and
resumed sweep ends with exactly the table of an uninterrupted one.

Every cell stores the inflection T* of its perturbed L_A and of its L_A after fine-tuning (and, with
``bits``, of its L_A after each rounding; with ``multimodal``, of its L_A after the joint stage), with
its kind (``analysis.inflection.KINDS``). On the grid T* is the argmin refined by a parabola in log T;
for ``method=closed_form`` each interior minimum is then refined again on the same closed-form curves,
evaluated on ``REFINE_POINTS`` log-spaced times inside the bracket [T_{i-1}, T_{i+1}] of the grid's
argmin T_i (one more jit + vmap call per chunk, of fixed shape): T* to well under 0.1%.
``flow`` and ``series`` runs keep the grid estimate (a trajectory is computed once, on its grid).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from analysis.inflection import vertex_minimum
from experiments.sweep.config import FIELDS, TheoryConfig, cells
from experiments.sweep.rows import cell_rows, float_dtype
from theory import finetune, measure, mitigation, multimodal, network, protocol, quantization, simulate, tasks

# Traced fields whose 0 stays a Python 0 (chunks never mix 0 with > 0): the closed form keeps the
# logistic law without a pull, and no run pays for a decay, a replay term or SAM's second gradient.
ZERO_STATIC = ("reg", "weight_decay", "replay", "sam_rho")
TRACED = ("gamma", "lr", "seed", "theta", "rho", "u0", "overlap", "projector_lr", *ZERO_STATIC)
# The curves whose inflection every cell stores: (modification, ``Curves`` field).
INFLECTIONS = (("gaussian", "perturbed_pretrain_loss"), ("finetune", "finetuned_pretrain_loss"))
# And with ``bits``: (rounding, ``QuantizedCurves`` field), modification "quantization".
QUANTIZED = (("nearest", "nearest_loss"), ("stochastic", "stochastic_loss"))
# And with ``multimodal``: L_A after stage 2 (``MultimodalCurves``), modification "multimodal", stage "joint".
MULTIMODAL = ("joint", "joint_pretrain_loss")
REFINE_POINTS = 65  # closed form: times per bracket [T_{i-1}, T_{i+1}] that refine an interior minimum


@dataclasses.dataclass(frozen=True)
class Chunk:
    index: int
    cells: tuple[TheoryConfig, ...]  # padded to the chunk size
    n_real: int


def plan(cfg: TheoryConfig, n_devices: int = 1) -> list[Chunk]:
    """Split the cells into groups by static fields, then into chunks of ``chunk_size`` cells, or of the
    largest group's where that is smaller (padding past it only costs memory: a ``series`` cell holds
    its whole minibatch stream), rounded up to a multiple of the device count so the cell axis shards
    evenly."""
    groups: dict[tuple, list[TheoryConfig]] = {}
    for cell in cells(cfg):
        groups.setdefault((static_part(cell), *(getattr(cell, n) == 0 for n in ZERO_STATIC)), []).append(cell)
    largest = max(len(members) for members in groups.values())
    size = math.ceil(min(cfg.chunk_size, largest) / n_devices) * n_devices
    chunks = []
    for members in groups.values():
        for start in range(0, len(members), size):
            part = members[start : start + size]
            chunks.append(Chunk(len(chunks), tuple(part + [part[-1]] * (size - len(part))), len(part)))
    return chunks


def static_part(cell: TheoryConfig) -> TheoryConfig:
    """The cell with its traced fields blanked (to values every config allows): equal static parts
    share one compiled function."""
    blank = {name: type(getattr(cell, name))(0) for name in TRACED}
    blank.update(u0=1.0, lr=1.0, overlap=FIELDS["overlap"].default, projector_lr=FIELDS["projector_lr"].default)
    return dataclasses.replace(cell, **blank, chunk_size=1)


def _item(a, i: int):
    """Cell ``i`` of a chunk's stacked output leaf."""
    return a[i]


def t_grid(cfg: TheoryConfig) -> np.ndarray:
    """Pre-training times: a log grid, or for a budget series the flow time sum_t lr(t) of each checkpoint."""
    if cfg.method != "series":
        return np.logspace(np.log10(cfg.t_min), np.log10(cfg.t_max), cfg.n_t)
    budgets = np.asarray(cfg.budgets, float)
    steps = jnp.arange(int(budgets[-1]))

    @jax.jit
    def area(budget, stop):
        lr = simulate.schedule(cfg.schedule, cfg.pretrain_lr, budget, decay_fraction=cfg.anneal_fraction)
        return jnp.sum(jnp.where(steps < stop, lr(steps), 0.0))

    horizon = budgets if cfg.series_mode == "separate" else np.full_like(budgets, budgets[-1])
    return np.asarray(jax.vmap(area)(horizon, budgets), float)


def mode_permutation(cfg: TheoryConfig) -> np.ndarray:
    """B's spectrum as an index into A's, b = s[perm]: a permutation seeded by ``task_seed`` for the
    ``permuted`` task, the identity for ``same``, else reversed (``reversed``, and B's spectrum of the
    misaligned tasks)."""
    r = cfg.rank if cfg.spectrum != "explicit" else len(cfg.spectrum_values)
    if cfg.finetune_task == "permuted":
        return np.random.default_rng(cfg.task_seed).permutation(r)
    return np.arange(r) if cfg.finetune_task == "same" else np.arange(r)[::-1].copy()


def spectra(cfg: TheoryConfig):
    """(s, b): the pre-training spectrum and B's, b = s[``mode_permutation(cfg)``]."""
    if cfg.spectrum == "power_law":
        s = tasks.power_law_spectrum(cfg.rank, cfg.s1, cfg.alpha)
    elif cfg.spectrum == "exponential":
        s = tasks.exponential_spectrum(cfg.rank, cfg.s1, cfg.rate)
    else:
        s = tasks.explicit_spectrum(cfg.spectrum_values)
    return s, tasks.permuted_spectrum(s, mode_permutation(cfg))


def _noise_sigmas(cfg: TheoryConfig):
    sigma = cfg.init_std if cfg.noise_scale == "init" else cfg.noise_sigma
    return (sigma,) * cfg.depth


def targets(static: TheoryConfig) -> tuple[tuple[tuple[str, str], str, str], ...]:
    """The curves whose inflection a cell stores: ((modification, variant), ``cell_curves`` output
    key, field), the variant a quantization's rounding or a multimodal stage, else ""."""
    stored = tuple(((m, ""), "curves", field) for m, field in INFLECTIONS)
    stored += tuple((("quantization", r), "quantized", field) for r, field in QUANTIZED if static.bits)
    if static.multimodal:
        stored += ((("multimodal", MULTIMODAL[0]), "multimodal", MULTIMODAL[1]),)
    return stored


def train_steps(cfg: TheoryConfig) -> np.ndarray | None:
    """The optimizer steps of each checkpoint of a budget series (its budgets); None for flow time."""
    return np.asarray(cfg.budgets, float) if cfg.method == "series" else None


def _lr_of_T(cfg: TheoryConfig, lr, T):
    if cfg.lr_policy == "shrinking":
        return finetune.shrinking_lr(lr, T, cfg.shrink_t_ref, cfg.shrink_power)
    return jnp.broadcast_to(lr, T.shape)


def _teacher(static: TheoryConfig, s) -> tasks.Task:
    return tasks.teacher(jax.random.PRNGKey(static.task_seed), s, static.d_out, static.d_in)


def _on_weights(static: TheoryConfig, p: dict, Ws_T, task: tasks.Task, b, lr_T, sigmas) -> dict:
    """What a cell measures on the weights W(T) themselves: quantized L_A (``bits``), curvature, and
    multimodal adaptation (``multimodal``: B of A's output modes U, B's spectrum b and ``overlap``;
    stage 2 at the fine-tuning lr(T), steps and reg)."""
    out = {}
    A = task.matrix
    if static.bits:
        out["quantized"] = quantization.quantized_curves(Ws_T, A, static.bits)
    if static.curvature:
        out["curvature"] = measure.curvature_curves(Ws_T, A, sigmas)
    if static.multimodal:
        key = jax.random.PRNGKey(static.task_seed)
        B = multimodal.modality_task(task.U, b, p["overlap"], key, static.d_z)
        out["multimodal"] = multimodal.multimodal_curves(
            Ws_T,
            A,
            B,
            projector_lr=p["projector_lr"],
            projector_steps=static.projector_steps,
            lr=lr_T,
            steps=static.steps,
            reg=p.get("reg", 0.0),
        )
    return out


def cell_curves(static: TheoryConfig, p: dict, T: np.ndarray) -> dict:
    """Curves and lr(T) for one cell on the grid ``T``, and with ``bits``, ``curvature`` or
    ``multimodal`` what ``_on_weights`` measures; ``p`` holds its traced fields. Pure: jit and vmap apply."""
    T = jnp.asarray(T)
    s, b = spectra(static)
    lr_T = _lr_of_T(static, p["lr"], T)
    # Absent (``ZERO_STATIC``): exactly 0, so the closed form keeps the logistic law and no term is added.
    reg, weight_decay, replay, sam_rho = (p.get(name, 0.0) for name in ZERO_STATIC)
    sigmas = _noise_sigmas(static)
    key = jax.random.PRNGKey(p["seed"])
    if static.method == "closed_form":
        c = protocol.closed_form_curves(
            s,
            b,
            p["u0"],
            T,
            gamma=p["gamma"],
            sigma1=sigmas[0],
            sigma2=sigmas[-1],
            d_in=static.d_in,
            h=static.h,
            d_out=static.d_out,
            tau=(lr_T * static.steps)[:, None],
            reg=reg,
            depth=static.depth,
            dt_max=static.dt_max,
            weight_decay=weight_decay,
            replay=replay,
        )
        if not (static.bits or static.curvature or static.multimodal):
            return {"curves": c, "lr": lr_T}
        task = _teacher(static, s)
        Ws_T = protocol.closed_form_weights(
            s,
            p["u0"],
            T,
            task.U,
            task.V,
            h=static.h,
            depth=static.depth,
            dt_max=static.dt_max,
            weight_decay=weight_decay,
        )
        return {"curves": c, "lr": lr_T, **_on_weights(static, p, Ws_T, task, b, lr_T, sigmas)}
    task = _teacher(static, s)
    task_key = jax.random.fold_in(jax.random.PRNGKey(static.task_seed), 7)
    if static.finetune_task == "rotated":
        B = tasks.rotated(task, p["theta"], task_key, b).matrix
    elif static.finetune_task == "correlated":
        B = tasks.correlated_matrix(task, p["rho"], task_key)
    else:
        B = tasks.with_spectrum(task, b).matrix
    widths = network.widths(static.d_in, static.h, static.d_out, static.depth)
    if static.init == "aligned":
        Ws0 = network.init_aligned_balanced(task.U, task.V, p["u0"], static.h, static.depth, static.imbalance)
    else:
        Ws0 = network.init_gaussian(jax.random.fold_in(key, 1), widths, static.init_std)
    if static.method == "flow":
        loss = mitigation.with_weight_decay(lambda W: network.task_loss(W, task.matrix), weight_decay)
        Ws_T = simulate.gradient_flow(loss, Ws0, T, static.dt_max)
    else:
        objective = simulate.minibatch_objective(task.matrix, static.batch_size, static.label_noise)
        Ws_T = simulate.budget_series(
            objective,
            Ws0,
            static.budgets,
            static.series_mode,
            static.optimizer,
            static.pretrain_lr,
            static.schedule,
            key=jax.random.fold_in(key, 2),
            weight_decay=weight_decay,
            sam_rho=sam_rho,
            decay_fraction=static.anneal_fraction,
        )
    data = None
    if static.finetune_samples:  # n noisy samples of B, drawn per seed; L_B after fine-tuning stays the population loss
        data = tasks.sample_dataset(jax.random.fold_in(key, 4), B, static.finetune_samples, static.finetune_label_noise)
    c = protocol.simulated_curves(
        Ws_T,
        task.matrix,
        B,
        gamma=p["gamma"],
        sigmas=sigmas,
        lr=lr_T,
        steps=static.steps,
        reg=reg,
        finetune_data=data,
        replay=replay,
    )
    return {"curves": c, "lr": lr_T, **_on_weights(static, p, Ws_T, task, b, lr_T, sigmas)}


@functools.cache
def _compiled(static: TheoryConfig, traced: tuple[str, ...]):
    T = t_grid(static)  # concrete, outside the trace

    def one(values):
        return cell_curves(static, dict(zip(traced, values)), T)

    return jax.jit(jax.vmap(one))


@functools.cache
def _compiled_local(static: TheoryConfig, traced: tuple[str, ...]):
    """Like ``_compiled``, on times of each cell's own: (cells, len(targets), P) times -> the values
    there of the matching ``targets`` curve, same shape (unused curves compile away)."""
    measured = dataclasses.replace(static, curvature=False)  # no inflection reads the curvature

    def one(values, local):
        p = dict(zip(traced, values))
        return jnp.stack(
            [getattr(cell_curves(measured, p, T)[key], name) for T, (_, key, name) in zip(local, targets(static))]
        )

    return jax.jit(jax.vmap(one))


def inflections(static: TheoryConfig, traced, values, T: np.ndarray, out: dict, mesh=None):
    """(T*, kind) of every cell's ``targets`` curves (``out``: the chunk's ``cell_curves``), each of
    shape (cells, len(targets)).

    The grid estimate (``measure.inflection`` and ``measure.inflection_kind``); for the closed form,
    every interior T* is replaced by the minimum of the same curve on ``REFINE_POINTS`` log-spaced
    times from T_{i-1} to T_{i+1} around the grid's argmin T_i (argmin refined by the parabola through
    it and its neighbours, ``analysis.inflection.vertex_minimum``). The kind stays the grid's."""
    y = np.stack([np.asarray(getattr(out[key], name)) for _, key, name in targets(static)], axis=1)
    t_star = np.array(measure.inflection(T, y), float)  # a writable copy
    kind = measure.inflection_kind(T, y)
    if static.method != "closed_form" or not (kind == "interior").any():
        return t_star, kind
    i = np.argmin(np.where(np.isfinite(y), y, np.inf), axis=-1)
    j = np.clip(i, 1, len(T) - 2)
    dtype = float_dtype()
    local = np.exp(np.linspace(np.log(T[j - 1]), np.log(T[j + 1]), REFINE_POINTS, axis=-1)).astype(dtype)
    local_in = jnp.asarray(local)
    if mesh is not None:
        local_in = jax.device_put(local_in, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("cells")))
    y_local = np.asarray(jax.device_get(_compiled_local(static, traced)(values, local_in)))
    for c, k in zip(*np.nonzero(kind == "interior")):
        refined = float(vertex_minimum(local[c, k], y_local[c, k], dtype=dtype))
        if np.isfinite(refined):
            t_star[c, k] = refined
    return t_star, kind


def run_chunk(chunk: Chunk, setup: str, grid_fields: tuple[str, ...], mesh=None) -> pd.DataFrame:
    """Compute one chunk (vmapped over its cells; sharded over ``mesh`` when given) and return its rows."""
    static = static_part(chunk.cells[0])
    # Chunks never mix 0 with > 0 in a ``ZERO_STATIC`` field (see ``plan``); a 0 stays a Python zero.
    traced = tuple(n for n in TRACED if n not in ZERO_STATIC or getattr(chunk.cells[0], n) != 0)
    dtype = jnp.result_type(float)
    # Seeds are uint32, the range of a PRNG key's seed (``config.MAX_SEED``): each gives its own key.
    values = tuple(
        jnp.asarray([getattr(c, n) for c in chunk.cells], jnp.uint32 if n == "seed" else dtype) for n in traced
    )
    if mesh is not None:
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("cells"))
        values = tuple(jax.device_put(v, sharding) for v in values)
    out = jax.device_get(_compiled(static, traced)(values))
    T = t_grid(static)
    t_star, kind = inflections(static, traced, values, T, out, mesh)
    frames = [
        cell_rows(
            cell,
            setup,
            T,
            jax.tree.map(functools.partial(_item, i=i), out),
            grid_fields,
            {m: (float(t_star[i, k]), str(kind[i, k])) for k, (m, _, _) in enumerate(targets(static))},
            train_steps(static),
        )
        for i, cell in enumerate(chunk.cells[: chunk.n_real])
    ]
    return pd.concat(frames, ignore_index=True)
