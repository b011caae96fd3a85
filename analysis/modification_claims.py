"""Verdicts on the modifications beyond the paper's two and on the anneal (claims q, q', m, m', i, j),
with the statistics and rules of ``analysis.claims`` (its module docstring: data, intervals, verdicts).

A *modification table* is long-form rows of one pre-training series set: the unmodified checkpoints
(``modification`` "none") and the modified ones at several *levels*: Gaussian noise (``gamma``),
fine-tuning at a fixed lr (``lr``; lr_policy "fixed", reg 0, the modal step count), post-training
quantization (``bits``; round-to-nearest) or multimodal adaptation (``lr``; after stage 2).
L = log perplexity; the excess of a level at checkpoint T is Delta_s(T) = mean_k L_{s,k}(T) -
mean_k L_{s,k}^none(T) (series s, draws k: noise draws, fine-tuning orders, one rounding).

(q)  Spearman rho(T, Delta_b(T)) per bit width b, rank test over series; every bit width.
(q') the fall to and rise from the interior minimum of the quantized L_b(T) (``analysis.claims``' (b)
     rule); some bit width, Bonferroni over the k bit widths.
(m), (m') the same two rules for multimodal adaptation (``ovt llm multimodal``): the forgetting after
     stage 2 (the projector and the model at a fixed lr) at every lr, and a U at some lr.
(i)  (q)'s rank test of Delta(T) on the checkpoints of the un-annealed WSD trunk, per modification
     (rows ``i:gaussian``, ``i:finetune``, ``i:quantization``, each over every level); the head row
     ``i``: every modification.
(j)  at equal T, the annealed checkpoint (the WSD branch, decayed to lr 0) against the un-annealed
     one (the trunk at the same tokens): per series the mean over checkpoints of Delta^annealed(T) -
     Delta^trunk(T), a paired Student-t interval over series; R: > 0 (annealed more sensitive); every
     level of a modification (rows ``j:MODIFICATION``), the head ``j``: every modification.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.claims import _rank_part, _u_claim
from analysis.verdicts import ABOVE, _claim, _combine, _decide, _Grid, _mean, _no_data, _part

# modification -> the column of its level
LEVELS = {"gaussian": "gamma", "finetune": "lr", "quantization": "bits", "multimodal": "lr"}
STAGE = "_stage"  # the column that tells annealed rows from trunk rows in a joint grid


def _modified(table: pd.DataFrame, modification: str) -> pd.DataFrame:
    """The rows of ``table`` a claim reads: measured log perplexities of the unmodified checkpoints and
    of ``modification``; fine-tuning at a fixed lr without an L2 pull and at the modal step count;
    quantization by round-to-nearest."""
    rows = table[(table["checkpoint"] != "inflection") & (table["metric"] == "perplexity")]
    rows = rows[rows["modification"].isin(["none", modification])]
    changed = rows["modification"] == modification
    if modification == "multimodal" and "stage" in rows:  # after stage 2: the projector and the model
        changed &= rows["stage"] == "joint"
    if modification in ("finetune", "multimodal"):
        if "lr_policy" in rows:
            changed &= rows["lr_policy"] == "fixed"
        if "reg" in rows:
            changed &= rows["reg"].fillna(0.0) == 0.0
        if changed.any() and "steps" in rows:
            changed &= rows["steps"] == rows.loc[changed, "steps"].mode().iloc[0]
    if modification == "quantization" and "rounding" in rows:
        changed &= rows["rounding"] == "nearest"
    return rows[changed | (rows["modification"] == "none")].reset_index(drop=True)


def _cubes(grid: _Grid, rows: pd.DataFrame, modification: str, where=None) -> dict[float, tuple]:
    """{level: (L cube, excess cube)}, each [series, draw, time], of the rows ``where`` selects."""
    where = np.ones(len(rows), bool) if where is None else np.asarray(where, bool)
    mod = rows["modification"].to_numpy()
    base = _mean(grid.cube(where & (mod == "none")), 1)[:, None, :]
    level = rows[LEVELS[modification]].to_numpy(float)
    at = where & (mod == modification) & np.isfinite(level)
    return {float(x): (c := grid.cube(at & (level == x)), c - base) for x in sorted(set(level[at]))}


def quantization_claims(quantize: pd.DataFrame | None, series_column: str) -> list[dict]:
    """(q) and (q') from the quantization table of the annealed checkpoints."""
    return _grows_and_u(quantize, "quantization", ("q", "q'"), series_column)


def multimodal_claims(multimodal: pd.DataFrame | None, series_column: str) -> list[dict]:
    """(m) and (m') from the multimodal-adaptation table: the pre-training loss after stage 2."""
    return _grows_and_u(multimodal, "multimodal", ("m", "m'"), series_column)


def _grows_and_u(table: pd.DataFrame | None, modification: str, cids: tuple[str, str], series_column: str) -> list:
    """The rank claim on the excess (every level) and the U claim on the modified loss (some level)."""
    rows = None if table is None or len(table) == 0 else _modified(table, modification)
    column = LEVELS[modification]
    if rows is None or rows["pretrain_time"].nunique() < 3 or not (rows["modification"] == modification).any():
        reason = f"the {modification} table needs >= 3 checkpoints, an unmodified curve and a {column}"
        return [_no_data(cid, reason) for cid in cids]
    grid = _Grid(rows, series_column)
    cubes = _cubes(grid, rows, modification)
    grows = [_rank_part(f"{column}={x:g}", grid.T, excess) for x, (_, excess) in cubes.items()]
    return [
        _combine(cids[0], grows, "every", f"no {column}"),
        _u_claim(cids[1], grid.T, {x: loss for x, (loss, _) in cubes.items()}, column),
    ]


def trunk_claims(trunk: dict[str, pd.DataFrame | None], series_column: str) -> list[dict]:
    """(i): ``trunk`` maps a modification to its table on the trunk checkpoints."""
    rows = []
    for modification, table in trunk.items():
        name = f"i:{modification}"
        found = None if table is None or len(table) == 0 else _modified(table, modification)
        if found is None or found["pretrain_time"].nunique() < 3:
            rows.append(_no_data("i", f"no {modification} table on >= 3 trunk checkpoints") | {"claim": name})
            continue
        grid = _Grid(found, series_column)
        column = LEVELS[modification]
        parts = [_rank_part(f"{column}={x:g}", grid.T, e) for x, (_, e) in _cubes(grid, found, modification).items()]
        rows.append(_combine("i", parts, "every", f"no {column}") | {"claim": name, "modification": modification})
    return [_head("i", rows, "no trunk table"), *rows]


def anneal_claims(
    annealed: dict[str, pd.DataFrame | None], trunk: dict[str, pd.DataFrame | None], series_column: str
) -> list[dict]:
    """(j): each modification's table on the annealed checkpoints and on the trunk, paired by series,
    level and tokens."""
    rows = []
    for modification, t in trunk.items():
        a = annealed.get(modification)
        if a is None or t is None or len(a) == 0 or len(t) == 0:
            reason = f"no {modification} table on both checkpoint kinds"
            rows.append(_no_data("j", reason) | {"claim": f"j:{modification}"})
        else:
            rows.append(_anneal_gap(modification, a, t, series_column))
    return [_head("j", rows, "no trunk table"), *rows]


def _anneal_gap(modification: str, annealed: pd.DataFrame, trunk: pd.DataFrame, series_column: str) -> dict:
    """(j) for one modification: one part per level both tables hold."""
    column = LEVELS[modification]
    joint = pd.concat(
        [
            _modified(annealed, modification).assign(**{STAGE: "annealed"}),
            _modified(trunk, modification).assign(**{STAGE: "trunk"}),
        ],
        ignore_index=True,
    )
    grid = _Grid(joint, series_column)
    stage = joint[STAGE].to_numpy()
    on_a = _cubes(grid, joint, modification, stage == "annealed")
    on_t = _cubes(grid, joint, modification, stage == "trunk")
    # the checkpoints (series, T) measured as both kinds
    both = np.isfinite(_mean(grid.cube(stage == "annealed"), 1)) & np.isfinite(_mean(grid.cube(stage == "trunk"), 1))
    paired = [float(v) for v in grid.T[both.any(0)]]

    def gap(_, excess_a, excess_t):  # per series: the mean over its paired checkpoints
        return _mean(np.where(both, excess_a - excess_t, np.nan), -1)

    parts = [
        _part(f"{column}={x:g}", [on_a[x][1], on_t[x][1]], gap, ABOVE, checkpoints=paired)
        for x in sorted(set(on_a) & set(on_t))
    ]
    entry = _combine("j", parts, "every", f"no {column} on both checkpoint kinds")
    return entry | {"claim": f"j:{modification}", "modification": modification}


def _head(cid: str, rows: list[dict], reason: str) -> dict:
    """The claim over its modifications: every modification (a missing one is INCONCLUSIVE)."""
    if not rows:
        return _no_data(cid, reason)
    parts = [{"margin": -np.inf} | r | {"at": r["claim"].split(":", 1)[1]} for r in rows]  # no data: no margin
    decided = _decide(parts, "every")
    return _claim(cid, {k: v for k, v in decided.items() if k not in ("claim", "statement", "statistic", "rule")})
