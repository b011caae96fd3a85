"""Run a theory config: expand the grid, compute fixed-size chunks of cells under jit + vmap, store.

Cells that share every shape-determining field form a group and share one compiled function; the
numeric fields in ``TRACED`` are vmapped. The last chunk of a group is padded (with its last cell)
so every chunk has one shape. Each finished chunk is written atomically to ``chunks/``; a rerun
skips stored chunks, and ``metrics.parquet`` is rebuilt from the chunks at the end, so a killed and
resumed sweep ends with exactly the table of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from experiments import derived
from experiments.config import TheoryConfig, cells
from theory import finetune, measure, network, protocol, simulate, tasks

TRACED = ("gamma", "lr", "reg", "seed", "theta", "rho", "u0")


@dataclasses.dataclass(frozen=True)
class Chunk:
    index: int
    cells: tuple[TheoryConfig, ...]  # padded to the chunk size
    n_real: int


def plan(cfg: TheoryConfig, n_devices: int = 1) -> list[Chunk]:
    """Split the cells into groups by static fields, then into chunks of ``chunk_size`` (a multiple of
    the device count, so the cell axis shards evenly)."""
    size = math.ceil(cfg.chunk_size / n_devices) * n_devices
    groups: dict[tuple, list[TheoryConfig]] = {}
    for cell in cells(cfg):
        groups.setdefault((static_part(cell), cell.reg == 0), []).append(cell)
    chunks = []
    for members in groups.values():
        for start in range(0, len(members), size):
            part = members[start : start + size]
            chunks.append(Chunk(len(chunks), tuple(part + [part[-1]] * (size - len(part))), len(part)))
    return chunks


def static_part(cell: TheoryConfig) -> TheoryConfig:
    """The cell with its traced fields blanked: equal static parts share one compiled function."""
    blank = {name: type(getattr(cell, name))(1 if name in ("u0", "lr") else 0) for name in TRACED}
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
        return jnp.sum(jnp.where(steps < stop, simulate.schedule(cfg.schedule, cfg.pretrain_lr, budget)(steps), 0.0))

    horizon = budgets if cfg.series_mode == "separate" else np.full_like(budgets, budgets[-1])
    return np.asarray(jax.vmap(area)(horizon, budgets), float)


def spectra(cfg: TheoryConfig):
    """(s, b): the pre-training spectrum and, for aligned fine-tuning tasks, B's spectrum."""
    if cfg.spectrum == "power_law":
        s = tasks.power_law_spectrum(cfg.rank, cfg.s1, cfg.alpha)
    elif cfg.spectrum == "exponential":
        s = tasks.exponential_spectrum(cfg.rank, cfg.s1, cfg.rate)
    else:
        s = tasks.explicit_spectrum(cfg.spectrum_values)
    if cfg.finetune_task == "permuted":
        perm = np.random.default_rng(cfg.task_seed).permutation(s.shape[0])
        return s, tasks.permuted_spectrum(s, perm)
    if cfg.finetune_task == "same":
        return s, s
    return s, tasks.reversed_spectrum(s)


def _noise_sigmas(cfg: TheoryConfig):
    sigma = cfg.init_std if cfg.noise_scale == "init" else cfg.noise_sigma
    return (sigma,) * cfg.depth


def _lr_of_T(cfg: TheoryConfig, lr, T):
    if cfg.lr_policy == "shrinking":
        return finetune.shrinking_lr(lr, T, cfg.shrink_t_ref, cfg.shrink_power)
    return jnp.broadcast_to(lr, T.shape)


def cell_curves(static: TheoryConfig, p: dict, T: np.ndarray) -> dict:
    """Curves and lr(T) for one cell on the grid ``T``; ``p`` holds its traced fields. Pure: jit and
    vmap apply."""
    T = jnp.asarray(T)
    s, b = spectra(static)
    lr_T = _lr_of_T(static, p["lr"], T)
    reg = p.get("reg", 0.0)  # absent: lam = 0 exactly, so the closed form keeps the logistic law
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
            lam=reg,
            depth=static.depth,
            key=key,
            n_draws=static.n_draws,
            dt_max=static.dt_max,
        )
        return {"curves": c, "lr": lr_T}
    task = tasks.teacher(jax.random.PRNGKey(static.task_seed), s, static.d_out, static.d_in)
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
        Ws_T = simulate.gradient_flow(lambda W: network.task_loss(W, task.matrix), Ws0, T, static.dt_max)
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
        )
    c = protocol.simulated_curves(
        Ws_T,
        task.matrix,
        B,
        gamma=p["gamma"],
        sigmas=sigmas,
        lr=lr_T,
        steps=static.steps,
        lam=reg,
        key=jax.random.fold_in(key, 3),
        n_draws=static.n_draws,
    )
    return {"curves": c, "lr": lr_T}


@functools.cache
def _compiled(static: TheoryConfig, traced: tuple[str, ...]):
    T = t_grid(static)  # concrete, outside the trace

    def one(values):
        return cell_curves(static, dict(zip(traced, values)), T)

    return jax.jit(jax.vmap(one))


def run_chunk(chunk: Chunk, setup: str, grid_fields: tuple[str, ...], mesh=None) -> pd.DataFrame:
    """Compute one chunk (vmapped over its cells; sharded over ``mesh`` when given) and return its rows."""
    static = static_part(chunk.cells[0])
    # Chunks never mix lam = 0 with lam > 0 (see ``plan``); lam = 0 stays a Python zero.
    traced = tuple(n for n in TRACED if n != "reg" or chunk.cells[0].reg != 0)
    dtype = jnp.result_type(float)
    values = tuple(
        jnp.asarray([getattr(c, n) for c in chunk.cells], jnp.int32 if n == "seed" else dtype) for n in traced
    )
    if mesh is not None:
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("cells"))
        values = tuple(jax.device_put(v, sharding) for v in values)
    out = jax.device_get(_compiled(static, traced)(values))
    T = t_grid(static)
    frames = [
        _rows(cell, setup, T, jax.tree.map(functools.partial(_item, i=i), out), grid_fields)
        for i, cell in enumerate(chunk.cells[: chunk.n_real])
    ]
    return pd.concat(frames, ignore_index=True)


def _rows(cell: TheoryConfig, setup: str, T: np.ndarray, out: dict, grid_fields) -> pd.DataFrame:
    curves: protocol.Curves = out["curves"]
    # A fixed lr is stored exactly as configured (not as its float32 image), so rows match by value.
    lr_T = np.asarray(out["lr"], float) if cell.lr_policy == "shrinking" else np.full(len(T), cell.lr)
    blocks = []
    for (modification, metric), y in curves.by_modification().items():
        is_ft = modification == "finetune"
        blocks.append(
            pd.DataFrame(
                {
                    "checkpoint": [f"T={t:.6g}" for t in T],
                    "pretrain_time": T,
                    "modification": modification,
                    "gamma": cell.gamma if modification == "gaussian" else np.nan,
                    "lr": lr_T if is_ft else np.nan,
                    "steps": float(cell.steps) if is_ft else np.nan,
                    "reg": cell.reg if is_ft else np.nan,
                    "metric": metric,
                    "value": np.asarray(y, float),
                    "lr_policy": cell.lr_policy if is_ft else "",
                }
            )
        )
    for modification, y in (("gaussian", curves.perturbed_pretrain_loss), ("finetune", curves.finetuned_pretrain_loss)):
        is_ft = modification == "finetune"
        blocks.append(
            pd.DataFrame(
                {
                    "checkpoint": ["inflection"],
                    "pretrain_time": [np.nan],
                    "modification": [modification],
                    "gamma": [cell.gamma if not is_ft else np.nan],
                    "lr": [cell.lr if is_ft else np.nan],
                    "steps": [float(cell.steps) if is_ft else np.nan],
                    "reg": [cell.reg if is_ft else np.nan],
                    "metric": ["inflection"],
                    "value": [float(measure.inflection(T, np.asarray(y)))],
                    "lr_policy": [cell.lr_policy if is_ft else ""],
                }
            )
        )
    frame = pd.concat(blocks, ignore_index=True)
    frame.insert(0, "source", "theory")
    frame.insert(1, "setup", setup)
    frame["seed"] = cell.seed
    for name in grid_fields:
        if name not in ("gamma", "lr", "steps", "reg", "seed", "lr_policy"):
            frame[name] = getattr(cell, name)
    return frame


def finalize(chunk_rows: pd.DataFrame, cfg: TheoryConfig) -> pd.DataFrame:
    """Deduplicate rows shared by cells (the clean curves do not depend on gamma or lr), add derived rows."""
    key = [c for c in chunk_rows.columns if c != "value"]
    frame = chunk_rows.drop_duplicates(subset=key, keep="first").reset_index(drop=True)
    if cfg.tuned_lr:
        # T* in the float JAX computes in, as the cells' own inflection rows (``measure.inflection``).
        dtype = np.float64 if jax.config.jax_enable_x64 else np.float32
        frame = pd.concat([frame, derived.tuned_rows(frame, dtype=dtype)], ignore_index=True)
    return frame
