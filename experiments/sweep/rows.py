"""A sweep's store rows: each cell's curves, inflection points and predicted Gaussian T* as rows of the
long-form table, and the finished table with its derived rows (tuned lrs, T* judged against the
spread over seeds).
"""

from __future__ import annotations

import jax
import numpy as np
import pandas as pd

from experiments.sweep.config import MULTIMODAL, TheoryConfig
from rundir import derived
from theory import tasks
from theory.prediction import gaussian_t_star


def float_dtype():
    """The NumPy float JAX computes in: every stored T* is judged in it (``measure.inflection``)."""
    return np.float64 if jax.config.jax_enable_x64 else np.float32


PREDICTION = "t_star_predicted"  # checkpoint and metric of the row holding the predicted Gaussian T*
CURVATURE = ("top_eigenvalue", "hessian_trace")  # the metrics of ``curvature``: lambda_max(H), tr_sigma(H)
STAGES = ("projector", "joint")  # multimodal adaptation: stage 1 (P alone), stage 2 (P and every W_k)
# Config fields stored as columns of the rows they shape only (not of every row of a cell that sweeps them).
OWN_ROWS = ("gamma", "lr", "steps", "reg", "seed", "lr_policy", "bits", "multimodal", *MULTIMODAL)


def gaussian_prediction(cell: TheoryConfig) -> float | None:
    """The last-beneficial-mode prediction of the Gaussian T* (``theory.prediction.gaussian_t_star``),
    made from the cell's config alone, where it applies: the aligned depth-2 closed form with a
    power-law spectrum (s_i = s1 i^-alpha, noise std gamma * sigma on both layers, sigma the init std
    or ``noise_sigma``) and no weight decay (which moves every mode's target). None elsewhere; NaN
    where no mode helps."""
    plain = cell.init == "aligned" and cell.spectrum == "power_law" and cell.weight_decay == 0
    if not (cell.method == "closed_form" and cell.depth == 2 and plain):
        return None
    s = tasks.power_law_spectrum(cell.rank, cell.s1, cell.alpha)
    sigma = cell.init_std if cell.noise_scale == "init" else cell.noise_sigma
    return float(gaussian_t_star(s, cell.u0, cell.gamma, sigma, sigma, cell.d_in, cell.d_out))


def _curves(cell: TheoryConfig, out: dict) -> list[tuple[str, str, str, jax.Array]]:
    """(modification, variant, metric, values over T) of every curve a cell stores: the protocol's
    (``Curves.by_modification``), L_A and its excess after each rounding (``bits``, the variant), L_A,
    L_B and the excess after each stage of multimodal adaptation (``multimodal``, the variant), the
    curvature."""
    found = [(m, "", metric, y) for (m, metric), y in out["curves"].by_modification().items()]
    if cell.bits:
        q = out["quantized"]
        for rounding in ("nearest", "stochastic"):
            found.append(("quantization", rounding, "pretrain_loss", getattr(q, f"{rounding}_loss")))
            found.append(("quantization", rounding, "excess", getattr(q, f"{rounding}_excess")))
    if cell.multimodal:
        m = out["multimodal"]
        for stage in STAGES:
            for metric in ("pretrain_loss", "finetune_loss", "excess"):
                found.append(("multimodal", stage, metric, getattr(m, f"{stage}_{metric}")))
    if cell.curvature:
        found += [("none", "", metric, getattr(out["curvature"], metric)) for metric in CURVATURE]
    return found


def cell_rows(
    cell: TheoryConfig,
    setup: str,
    T: np.ndarray,
    out: dict,
    grid_fields,
    inflection: dict,
    train_steps: np.ndarray | None = None,
) -> pd.DataFrame:
    """The cell's rows: every curve of ``_curves`` on the grid, one ``inflection`` row per entry of
    ``inflection`` ({(modification, variant): (T*, kind)}, from ``inflections``), and the predicted
    Gaussian T* (``PREDICTION``) where ``gaussian_prediction`` applies. A budget series' curve rows
    carry the optimizer steps of their checkpoint (``train_steps``); with ``bits`` every row has a
    ``bits`` and a ``rounding`` column (NaN and "" but on quantization rows), with ``multimodal`` an
    ``overlap``, ``d_z``, ``projector_lr``, ``projector_steps`` and ``stage`` column (NaN and "" but
    on multimodal rows)."""
    # A fixed lr is stored exactly as configured (not as its float32 image), so rows match by value.
    lr_T = np.asarray(out["lr"], float) if cell.lr_policy == "shrinking" else np.full(len(T), cell.lr)
    blocks = []
    for modification, variant, metric, y in _curves(cell, out):
        blocks.append(
            _block(cell, modification, variant, [f"T={t:.6g}" for t in T], T, lr_T, metric, np.asarray(y, float))
        )
        if train_steps is not None:
            blocks[-1]["train_steps"] = train_steps
    for (modification, variant), (t_star, kind) in inflection.items():
        blocks.append(_block(cell, modification, variant, ["inflection"], [np.nan], cell.lr, "inflection", [t_star]))
        blocks[-1][derived.KIND] = kind
    predicted = gaussian_prediction(cell) if ("gaussian", "") in inflection else None
    if predicted is not None:
        blocks.append(_block(cell, "gaussian", "", [PREDICTION], [np.nan], np.nan, PREDICTION, [predicted]))
    frame = pd.concat(blocks, ignore_index=True)
    frame.insert(0, "source", "theory")
    frame.insert(1, "setup", setup)
    frame["seed"] = cell.seed
    for name in grid_fields:
        if name not in OWN_ROWS:
            frame[name] = getattr(cell, name)
    return frame


def _block(cell: TheoryConfig, modification: str, variant: str, checkpoint, T, lr, metric: str, value):
    """Rows of one curve (or one summary row) of ``cell``, each modification's columns set on its rows
    only: gamma on gaussian rows; lr, steps, reg, lr_policy on finetune rows and on multimodal rows of
    the joint stage (the projector stage does not read them); bits, rounding (the variant) on
    quantization rows (where the cell quantizes); overlap, d_z, projector_lr, projector_steps and
    stage (the variant) on multimodal rows (where the cell adapts to a modality)."""
    is_mm = modification == "multimodal"
    is_ft = modification == "finetune" or (is_mm and variant == "joint")
    columns = {
        "checkpoint": checkpoint,
        "pretrain_time": T,
        "modification": modification,
        "gamma": cell.gamma if modification == "gaussian" else np.nan,
        "lr": lr if is_ft else np.nan,
        "steps": float(cell.steps) if is_ft else np.nan,
        "reg": cell.reg if is_ft else np.nan,
        "metric": metric,
        "value": value,
        "lr_policy": cell.lr_policy if is_ft else "",
        derived.KIND: "",
    }
    if cell.bits:
        is_q = modification == "quantization"
        columns.update(bits=float(cell.bits) if is_q else np.nan, rounding=variant if is_q else "")
    if cell.multimodal:
        for name in MULTIMODAL:
            columns[name] = float(getattr(cell, name)) if is_mm else np.nan
        columns["stage"] = variant if is_mm else ""
    return pd.DataFrame(columns)


def finalize(chunk_rows: pd.DataFrame, cfg: TheoryConfig) -> pd.DataFrame:
    """Deduplicate rows shared by cells (the clean curves do not depend on gamma or lr), add derived
    rows, and judge each seed's T* against the spread over seeds (``derived.judge_by_seed_spread``)."""
    key = [c for c in chunk_rows.columns if c != "value"]
    frame = chunk_rows.drop_duplicates(subset=key, keep="first").reset_index(drop=True)
    # T* in the float JAX computes in, as the cells' own inflection rows (``measure.inflection``).
    dtype = float_dtype()
    if cfg.tuned_lr:
        frame = pd.concat([frame, derived.tuned_rows(frame, dtype=dtype)], ignore_index=True)
        if cfg.method == "closed_form":
            frame = refine_tuned(frame)
    return derived.judge_by_seed_spread(frame, dtype=dtype)


def _same(frame: pd.DataFrame, row: pd.Series, columns) -> pd.Series:
    """Rows of ``frame`` equal to ``row`` in every one of ``columns`` (NaN equal to NaN)."""
    keep = pd.Series(True, index=frame.index)
    for c in columns:
        keep &= frame[c].isna() if pd.isna(row[c]) else frame[c] == row[c]
    return keep


def refine_tuned(frame: pd.DataFrame) -> pd.DataFrame:
    """The closed form's tuned-lr T* to the precision of the cells' own: where the tuned curve's lr is
    one lr at the three grid times that bracket its argmin, the tuned curve is that lr's curve there,
    so its T* is that fixed lr's refined T* (when it lies in the same bracket). Otherwise the grid
    estimate ``derived.tuned_rows`` stored stays."""
    inflection = frame.checkpoint == "inflection"
    rows = frame[inflection & (frame.lr_policy == "tuned") & (frame[derived.KIND] == "interior")]
    skip = {"checkpoint", "pretrain_time", "metric", "value", "lr", "lr_policy", derived.KIND}
    identity = [c for c in frame.columns if c not in skip]
    frame = frame.copy()
    for index, row in rows.iterrows():
        same = _same(frame, row, identity)
        curve = frame[same & ~inflection & (frame.lr_policy == "tuned") & (frame.metric == "pretrain_loss")]
        curve = curve.sort_values("pretrain_time")
        T, y, lr = (curve[c].to_numpy(float) for c in ("pretrain_time", "value", "lr"))
        i = int(np.argmin(np.where(np.isfinite(y), y, np.inf))) if len(y) else 0
        if not 0 < i < len(y) - 1 or len(set(lr[i - 1 : i + 2])) != 1:
            continue
        fixed = frame[same & inflection & (frame.lr_policy == "fixed") & np.isclose(frame.lr, lr[i])]
        if (
            len(fixed) == 1
            and fixed[derived.KIND].iloc[0] == "interior"
            and T[i - 1] <= fixed.value.iloc[0] <= T[i + 1]
        ):
            frame.loc[index, "value"] = fixed.value.iloc[0]
    return frame
