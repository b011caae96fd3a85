"""Verdicts on the mitigations of forgetting (claims k), with the statistics and rules of
``analysis.claims`` (its module docstring: data, intervals, verdicts).

Data. One *arm table* per arm: the long-form rows ``ovt llm finetune`` writes for that arm's series
(``modification`` "none": the checkpoint before fine-tuning; "finetune": after it). A pre-training arm
(SAM, weight decay, another anneal) has its own series and its own "none" rows; a fine-tuning arm
(replay, the L2 pull) fine-tunes the baseline's own checkpoints. Series are paired across arms by the
value of ``series_column`` (the pre-training seed); draws k are the fine-tuning batch orders ``seed``.
Read: rows with checkpoint "inflection" left out; metric "perplexity" as L = ln(perplexity), the
log-perplexity of held-out pre-training text (nats; a non-finite value, a diverged run, left out);
metric "finetune_loss" (the in-task held-out loss, already a mean NLL in nats: not logged again);
fine-tuning rows of lr_policy "fixed" at one lr (``lr``, else the one fixed lr both tables hold), at
the table's modal step count, with the L2 pull ``reg`` and the replay fraction ``replay`` the arm's
own table has (one setting per table); "train_loss" and "step_loss" rows are not read.

Statistics, for an arm a against the baseline b, at T_last, the largest pre-training time at which
both arms have a finite forgetting on a series they share, over the series S both have there:

- forgetting of series s:  F_s(T) = (1/K) sum_k L^ft_{s,k}(T) - L^none_s(T)  (L^none: its mean over
  the "none" rows' draws);
- ``reduction``: per series F^b_s(T_last) - F^a_s(T_last) (nats), value = the mean over S, 95%
  interval mean +- t(|S| - 1, 0.975) sd / sqrt(|S|) (paired Student-t); R: > 0 (the arm forgets less);
  ``reduction_pct`` = 100 x reduction / mean_{s in S} F^b_s(T_last), its interval scaled by the same
  factor (conditional on the baseline's mean forgetting, which is not resampled; none where it is <= 0);
- ``t_star``: the kind and T* of each arm's pooled curve L^ft(T) (the mean over S of the means over
  orders, ``analysis.verdicts._pooled``, judged by ``analysis.inflection`` against its standard error
  over series) and, where both are interior, ln(T*_a / T*_b); its verdict is ``t_star_verdict``'s;
- ``base_cost``: L^none_{a,s}(T_last) - L^none_{b,s}(T_last), paired Student-t over S: the pre-training
  cost of the arm; exactly 0 (interval [0, 0], said in its method) where the arm's "none" rows equal
  the baseline's at every checkpoint both measured (a fine-tuning arm on the baseline's checkpoints);
- ``task_cost``: the in-task loss after fine-tuning, (1/K) sum_k [l^a_{s,k}(T_last)] - (1/K) sum_k
  [l^b_{s,k}(T_last)] (nats), paired Student-t over S.

The costs are stated beside the verdict, not judged in it: a cost part's verdict reads its interval
against > 0 (PASS: the arm's loss is significantly higher, a cost; FAIL: significantly lower, a gain;
INCONCLUSIVE: neither).

(k)  per arm (rows ``k:ARM``): the reduction's 95% verdict, the T* shift and both costs beside it; the
     head row ``k``: some arm reduces forgetting, Bonferroni over the k arms (each reduction interval
     at level 1 - 0.05/k, the per-arm rows keep 95%). An arm without a table, with no checkpoint both
     arms measured or fewer than 2 paired series is INCONCLUSIVE with the reason (rule "no data: ...").
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.intervals import LEVEL
from analysis.verdicts import ABOVE, _claim, _decide, _Grid, _mean, _no_data, _part, _pooled

CID = "k"
ARM = "_arm"  # the column that tells the arm's rows from the baseline's in a joint grid
SETTINGS = ("reg", "replay")  # the fine-tuning settings an arm's table may vary (the L2 pull, replay)
TEXT_KEYS = ("claim", "statement", "statistic", "rule")
T_STAR_RULE = (
    "kinds of the pooled post-fine-tuning curves (analysis.inflection.KINDS) ordered below < interior < above "
    "(interior ones by T*): PASS if the arm's T* is later (a later interior T*; the arm still falling at the last "
    "checkpoint, 'above', where the baseline's is interior or 'below'; the arm interior where the baseline's "
    "is 'below'), FAIL if earlier, INCONCLUSIVE where a curve is 'flat' or 'none', or both lie on the same "
    "side of the range; a point comparison of the pooled curves, no interval"
)
COST_READING = (
    "stated, not judged in the claim: PASS = the arm's loss is higher (a cost), FAIL = lower (a gain), "
    "INCONCLUSIVE = neither resolved"
)
_ORDER = {"below": 0, "interior": 1, "above": 2}


def t_star_verdict(kind_arm: str, t_arm: float, kind_base: str, t_base: float) -> str:
    """Whether the arm's T* is later than the baseline's (``T_STAR_RULE``).

    Parameters
    ----------
    kind_arm, kind_base : str
        The kinds (``analysis.inflection.KINDS``) of the arm's and the baseline's pooled curve.
    t_arm, t_base : float
        Their T* (tokens); read only where the kind is "interior".

    Returns
    -------
    str
        "PASS" (later), "FAIL" (earlier) or "INCONCLUSIVE".

    Examples
    --------
    >>> t_star_verdict("above", math.nan, "interior", 8e6)  # still falling where the baseline turned
    'PASS'
    >>> t_star_verdict("interior", 4e6, "interior", 8e6), t_star_verdict("flat", math.nan, "interior", 8e6)
    ('FAIL', 'INCONCLUSIVE')
    """
    a, b = _ORDER.get(kind_arm), _ORDER.get(kind_base)
    if a is None or b is None:
        return "INCONCLUSIVE"
    if a == b == _ORDER["interior"]:
        a, b = t_arm, t_base
    if a > b:
        return "PASS"
    return "FAIL" if a < b else "INCONCLUSIVE"


def _fixed_lrs(table: pd.DataFrame) -> set[float]:
    """The fixed lrs of a table's fine-tuning rows."""
    rows = table[(table["modification"] == "finetune") & (table["checkpoint"] != "inflection")]
    if "lr_policy" in rows:
        rows = rows[rows["lr_policy"] == "fixed"]
    return {float(x) for x in rows["lr"].dropna()} if "lr" in rows else set()


def _selected(table: pd.DataFrame, lr: float) -> tuple[pd.DataFrame | None, str]:
    """(rows, setting) of one arm's table: perplexity and finetune_loss rows before fine-tuning and
    after it at ``lr`` (fixed policy, modal steps); (None, reason) where the fine-tuning rows mix
    several settings (``SETTINGS``) or there are none."""
    rows = table[(table["checkpoint"] != "inflection") & table["metric"].isin(["perplexity", "finetune_loss"])]
    rows = rows[rows["modification"].isin(["none", "finetune"])]
    tuned = np.array(rows["modification"] == "finetune", bool)
    if "lr_policy" in rows:
        tuned &= (rows["lr_policy"] == "fixed").to_numpy()
    tuned &= np.isclose(rows["lr"].to_numpy(float), lr, rtol=1e-9, atol=0.0)
    if not tuned.any():
        return None, f"no fixed-lr fine-tuning rows at lr={lr:g}"
    if "steps" in rows:
        tuned &= (rows["steps"] == rows.loc[tuned, "steps"].mode().iloc[0]).to_numpy()
    columns = [c for c in SETTINGS if c in rows]
    found = rows.loc[tuned, columns].astype(float).fillna(0.0).drop_duplicates()
    if len(found) > 1:
        listed = "; ".join(", ".join(f"{c}={v:g}" for c, v in r.items()) for _, r in found.iterrows())
        return None, f"several fine-tuning settings at lr={lr:g} ({listed}): give one arm per setting"
    setting = ", ".join(f"{c}={found[c].iloc[0]:g}" for c in columns)
    return rows[tuned | (rows["modification"] == "none").to_numpy()].reset_index(drop=True), setting


def _raw_cube(grid: _Grid, mask, values) -> np.ndarray:
    """``grid.cube`` of ``values`` as they are (no log): [series, draw, time], NaN where none."""
    mask = np.asarray(mask, bool) & (grid.s >= 0) & (grid.k >= 0) & (grid.t >= 0)
    cube = np.full((len(grid.series), len(grid.draws), grid.T.size), np.nan)
    cube[grid.s[mask], grid.k[mask], grid.t[mask]] = np.where(np.isfinite(values), values, np.nan)[mask]
    return cube


def _at(t: int):
    """The paired difference first - second of two curves [series, time] at time index ``t``."""
    return lambda _, first, second: first[..., t] - second[..., t]


def _percent(part: dict, mean_base: float) -> dict:
    """The reduction as a percentage of the baseline's mean forgetting, its interval scaled alike."""
    method = (
        f"100 x reduction / the baseline's mean forgetting over the paired series ({mean_base:.4g} nats), the "
        "interval scaled alike: conditional on that mean, which is not resampled"
    )
    if not (math.isfinite(mean_base) and mean_base > 0):
        return {"value": math.nan, "interval": None, "method": f"none (the baseline's mean forgetting {mean_base:.4g})"}
    interval = None if part["interval"] is None else [100 * x / mean_base for x in part["interval"]]
    return {"value": 100 * part["value"] / mean_base, "interval": interval, "method": method}


def _arm_claim(name: str, arm: pd.DataFrame, base: pd.DataFrame, series_column: str, lr, level: float):
    """(row, head part) of one arm: the row at 95%, the head's reduction part at ``level``; a
    ``_no_data`` row and None where the arm cannot be compared."""

    def missing(reason):
        return _missing_row(name, reason), None

    if lr is None:
        common = _fixed_lrs(arm) & _fixed_lrs(base)
        if len(common) != 1:
            found = ", ".join(f"{x:g}" for x in sorted(common)) or "none"
            return missing(f"the fixed lrs both arms hold are {found}: needs exactly one, or lr")
        lr = common.pop()
    arm_rows, arm_setting = _selected(arm, lr)
    base_rows, base_setting = _selected(base, lr)
    if arm_rows is None or base_rows is None:
        return missing(f"arm {name}: {arm_setting}" if arm_rows is None else f"baseline: {base_setting}")
    joint = pd.concat([base_rows.assign(**{ARM: "baseline"}), arm_rows.assign(**{ARM: "arm"})], ignore_index=True)
    grid = _Grid(joint, series_column)
    side, mod, metric = (joint[c].to_numpy() for c in (ARM, "modification", "metric"))
    ppl = metric == "perplexity"
    after = {b: grid.cube(ppl & (mod == "finetune") & (side == b)) for b in ("arm", "baseline")}
    before = {b: grid.cube(ppl & (mod == "none") & (side == b)) for b in ("arm", "baseline")}
    forgetting = {b: after[b] - _mean(before[b], 1)[:, None, :] for b in after}
    paired = np.isfinite(_mean(forgetting["arm"], 1)) & np.isfinite(_mean(forgetting["baseline"], 1))
    if not paired.any():
        return missing(f"no checkpoint at which both arms have a finite forgetting on a shared {series_column}")
    t = int(np.flatnonzero(paired.any(0))[-1])
    T_last = float(grid.T[t])
    keep = paired[:, t]
    if keep.sum() < 2:
        return missing(f"{int(keep.sum())} paired series at the largest common T = {T_last:g} (needs >= 2)")

    def on(cube):  # the paired series only
        return cube[keep]

    stat, at = _at(t), f"T={T_last:g}"
    fb, fa = on(forgetting["baseline"]), on(forgetting["arm"])
    mean_base = float(_mean(fb, 1)[:, t].mean())
    reduction = _part(f"reduction, {at}", [fb, fa], stat, ABOVE)
    reduction["method"] += f"; 95% (the head row k: level {level:.4g}, Bonferroni)"
    reduction["reduction_pct"] = _percent(reduction, mean_base)
    head = _part(name, [fb, fa], stat, ABOVE, level=level)
    head["reduction_pct"] = _percent(head, mean_base)

    t_star = _t_star_part(grid.T, on(after["arm"]), on(after["baseline"]))
    base_cost = _base_cost(on(before["arm"]), on(before["baseline"]), stat, at)
    values, loss = joint["value"].to_numpy(float), (metric == "finetune_loss") & (mod == "finetune")
    in_task = [on(_raw_cube(grid, loss & (side == b), values)) for b in ("arm", "baseline")]
    task_cost = _cost_part(f"task_cost, {at}", in_task, stat, "in-task held-out loss after fine-tuning (nats)")
    row = _claim(CID, reduction) | {"claim": f"{CID}:{name}", "arm": name}
    row |= {"parts": [reduction, t_star, base_cost, task_cost], "reduction_pct": reduction["reduction_pct"]}
    row |= {"t_star_shift": t_star, "base_cost": base_cost, "task_cost": task_cost}
    row |= {"lr": float(lr), "pretrain_time": T_last, "setting": {"arm": arm_setting, "baseline": base_setting}}
    return row, head


def _cost_part(label: str, cubes: list, stat, what: str) -> dict:
    """A cost: arm - baseline of ``what``, paired Student-t over series, read against > 0."""
    part = _part(label, cubes, stat, ABOVE)
    part["method"] = f"arm - baseline of the {what}: {part['method']}; {COST_READING}"
    return part


def _base_cost(arm, base, stat, at: str) -> dict:
    """The pre-training cost: log ppl before fine-tuning, arm - baseline (``_cost_part``); exactly 0
    where the arm's rows before fine-tuning equal the baseline's at every checkpoint both measured."""
    a, b = _mean(arm, 1), _mean(base, 1)
    both = np.isfinite(a) & np.isfinite(b)
    if both.any() and np.array_equal(a[both], b[both]):
        method = (
            f"none needed: the arm's log ppl before fine-tuning equals the baseline's at all {int(both.sum())} "
            "(series, checkpoint) pairs both measured (checked): it fine-tunes the baseline's own checkpoints, "
            f"so the cost is 0 exactly; {COST_READING}"
        )
        entry = {"value": 0.0, "interval": [0.0, 0.0], "method": method, "n_series": int(arm.shape[0]), "n_draws": 1}
        return {"at": f"base_cost, {at}"} | entry | {"level": LEVEL, "verdict": "INCONCLUSIVE", "margin": 0.0}
    return _cost_part(f"base_cost, {at}", [arm, base], stat, "log ppl of held-out pre-training text before fine-tuning")


def _t_star_part(T, arm, base) -> dict:
    """The T* of each arm's pooled post-fine-tuning curve, ln(T*_arm / T*_baseline) where both are
    interior, and ``t_star_verdict``; kind "none" on fewer than three checkpoints (T > 0: the curve is
    read in log T)."""
    usable = np.isfinite(T) & (T > 0)
    if usable.sum() < 3:
        (_, kind_a, t_a), (_, kind_b, t_b) = [(None, "none", math.nan)] * 2
    else:
        (_, kind_a, t_a), (_, kind_b, t_b) = (_pooled(T[usable], c[..., usable]) for c in (arm, base))
    both = kind_a == kind_b == "interior"
    value = math.log(t_a / t_b) if both else math.nan
    n_draws = min(int(np.isfinite(c).any(axis=2).sum(axis=1).min()) for c in (arm, base))
    method = (
        f"ln(T*_arm / T*_baseline) of the pooled curves (mean over {arm.shape[0]} paired series of the means over "
        "orders; kinds judged by analysis.inflection against the standard error over series); verdict: its rule"
    )
    return {
        "at": "t_star",
        "value": value,
        "interval": None,
        "method": method,
        "n_series": int(arm.shape[0]),
        "n_draws": n_draws,
        "verdict": t_star_verdict(kind_a, t_a, kind_b, t_b),
        "margin": -math.inf,
        "t_star": {"arm": t_a, "baseline": t_b},
        "kind": {"arm": kind_a, "baseline": kind_b},
        "rule": T_STAR_RULE,
    }


_EMPTY = {"value": math.nan, "interval": None, "method": "none"}


def _missing_row(name: str, reason: str) -> dict:
    """An arm that cannot be compared: INCONCLUSIVE, the reason in its rule, empty measures."""
    row = _no_data(CID, reason) | {"claim": f"{CID}:{name}", "arm": name}
    return row | {key: dict(_EMPTY) for key in ("reduction_pct", "t_star_shift", "base_cost", "task_cost")}


def mitigation_claims(
    arms: dict[str, pd.DataFrame | None], baseline: str, series_column: str, lr: float | None = None
) -> list[dict]:
    """Claim (k) (module docstring): the head row ``k`` (some arm reduces forgetting, Bonferroni over
    the arms), then one row ``k:ARM`` per arm other than the baseline, in the order of ``arms``.

    Parameters
    ----------
    arms : dict of str to DataFrame or None
        Each arm's table (rows of ``ovt llm finetune`` on that arm's series), keyed by the arm's name;
        the baseline's among them. None or an empty table: the arm has no data.
    baseline : str
        The key of the unmitigated arm in ``arms``.
    series_column : str
        The column naming a row's pre-training series; arms are paired by its value.
    lr : float or None
        The fixed fine-tuning lr compared; None: the one fixed lr both tables of a comparison hold
        (an arm whose tables share none or several is INCONCLUSIVE, "no data").

    Returns
    -------
    list of dict
        The head row, then the per-arm rows: statement, statistic, value (the reduction, nats),
        interval, verdict, rule, ``parts`` (reduction, t_star, base_cost, task_cost), and the keys
        ``arm``, ``reduction_pct``, ``t_star_shift``, ``base_cost``, ``task_cost`` (each with value
        and interval), ``lr``, ``pretrain_time`` (T_last) and ``setting`` (reg, replay of each table).
    """
    names = [a for a in arms if a != baseline]
    level = 1 - (1 - LEVEL) / max(len(names), 1)  # Bonferroni over the arms of the "some" head
    base = arms.get(baseline)
    rows, heads = [], []
    for name in names:
        table = arms[name]
        if base is None or len(base) == 0:
            row, head = _missing_row(name, f"no table of the baseline {baseline!r}"), None
        elif table is None or len(table) == 0:
            row, head = _missing_row(name, f"no table of the arm {name!r}"), None
        else:
            row, head = _arm_claim(name, table, base, series_column, lr, level)
        rows.append(row)
        heads.append(
            head
            or {"at": name, **_EMPTY, "method": row["rule"], "n_series": 0, "n_draws": 0}
            | {"level": level, "verdict": "INCONCLUSIVE", "margin": -math.inf}
        )
    if not names:
        return [_no_data(CID, f"no arm besides the baseline {baseline!r}")]
    decided = _decide(heads, "some")
    head = _claim(CID, {k: v for k, v in decided.items() if k not in TEXT_KEYS})
    return [head, *rows]
