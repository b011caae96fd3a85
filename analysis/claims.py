"""Verdicts on the paper's LLM claims (Springer et al. 2025) from long-form LLM tables.

Data. ``perturb`` (``ovt llm perturb``) and ``finetune`` (``ovt llm finetune``) rows, each possibly over
several pre-training series (column ``series_column``; one series where a table lacks it). Rows with
checkpoint "inflection" (derived summaries) are left out; metric "perplexity" is used as the log
perplexity (mean NLL) L = log(value), a non-finite value (diverged) left out. Draws are ``seed``: the
noise draw k of a perturbation table (paired: the same noise at every checkpoint and gamma), the
fine-tuning seed of a fine-tuning table. T is ``pretrain_time`` (tokens), a grid the series share.
L_s(T): series s's mean over draws; Delta_s(T) = mean_k [L_{s,k}(T) - L_{s,0}(T)] (L_0 unperturbed).
Whether a gamma / lr has an interior T* is judged on the pooled curve (mean over series) by
``analysis.inflection`` against its standard error (over series, or draws with one series).

Intervals (95%). >= 2 series: the statistic per series, value = their mean, interval = mean +-
t(n-1, 0.975) sd / sqrt(n) (a NaN statistic left out); an index a statistic is taken at (a minimum)
is chosen on the mean of the other series, so a series' own noise does not choose it. One series:
``N_BOOT`` bootstrap replicates over its draws (the same draw indices at every checkpoint and curve;
indices chosen again in each), interval by ``analysis.intervals.t_stat`` (value +- t(K-1, 0.975)
sqrt(K/(K-1)) sd of the replicates), conditional on the series' checkpoints. One series and one
draw: no interval. (h), a ratio, in log space.

Verdict. Each statistic has a region R (the claim's side). PASS: the interval lies inside R; FAIL:
outside R; INCONCLUSIVE: across an edge of R, no interval, or missing data (rule "no data: ...").
Parts (gammas, lrs, sides) combine: "every" is FAIL if any part FAILs, else INCONCLUSIVE if any is,
else PASS; "some" is PASS if any PASSes, else INCONCLUSIVE if any is, else FAIL. The claim reports
the deciding part (``at``): for "every" the weakest of its verdict class, for "some" the strongest
(by how far the interval lies inside R).

Statistics (checkpoints i = 0 .. n-1):
(a) rho = Spearman(T, Delta(T)) at each gamma; R: > 0; every gamma.
(b) at each gamma, i* = argmin of L over 1..n-2: fall = L(T_0) - L(T_i*), rise = L(T_{n-1}) - L(T_i*);
    R: > 0; every side at a gamma, some gamma.
(c) log T*(gamma_{j+1}) - log T*(gamma_j), consecutive gammas with an interior pooled T*, a series'
    T* its argmin refined by a parabola in log T (``vertex_minimum``); R: < 0; every pair.
(d) (b) for the fixed-lr (lr_policy "fixed") fine-tuned curves, some lr.  (e) (c) over those lrs.
(f) rise = L(T_{n-1}) - L(T_i), i = argmin over 0..n-2 (< 0 for a curve still falling): the tuned
    curve's rise (> 0: not removed) and the mean fixed-lr rise minus it (> 0: reduced); every part.
(g) log T*(lr, reg) - log T*(lr, reg=0) for each (lr, reg > 0) whose reg = 0 curve has an interior
    pooled T*; R: > 0; every pair.  (d)-(f) use reg = 0 (else the least reg); all the modal steps.
(h) ratio = sum_{g,T} Delta_g(T) / sum_{g,T} (g^2/2) W(T) over the ``H_GAMMAS`` smallest gammas and
    the checkpoints with a trace W = sum_p sigma_p^2 d^2 NLL / d theta_p^2 (noise-weighted Hessian
    trace: E Delta = gamma^2 W / 2 to second order), W held fixed; R: ``HESSIAN_BAND``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.claim_text import (
    H_GAMMAS,
    HESSIAN_BAND,
    claim_order,
)
from analysis.inflection import vertex_minimum
from analysis.intervals import LEVEL
from analysis.ranks import rank_test
from analysis.verdicts import (
    ABOVE,
    ALPHA,
    BELOW,
    _claim,
    _combine,
    _decide,
    _Grid,
    _mean,
    _no_data,
    _part,
    _pooled,
)


def _rank_part(label: str, T, cube) -> dict:
    """A rank part of (a) / (a'): ``rank_test`` of each series' curve (its mean over draws), PASS
    where rho > 0 is significant at ``ALPHA``, FAIL where rho < 0 is; margin: log10(ALPHA / p_up)."""
    n_draws = int(np.isfinite(cube).any(axis=2).sum(axis=1).min())
    r = rank_test(T, _mean(cube, 1))
    if r["n_series"] == 0:
        verdict_, margin = "INCONCLUSIVE", -math.inf
    else:
        verdict_ = "PASS" if r["p_up"] < ALPHA else "FAIL" if r["p_down"] < ALPHA else "INCONCLUSIVE"
        margin = math.log10(ALPHA / max(r["p_up"], 1e-300))
    method = (
        f"Spearman's rho per series (of its mean over {n_draws} draws), the mean over {r['n_series']} series "
        f"against its null distribution, {r['how']}"
    )
    return {
        "at": label,
        "value": r["value"],
        "interval": None,
        "p_value": r["p_up"],
        "p_down": r["p_down"],
        "per_series": r["rho"],
        "method": method,
        "n_series": r["n_series"],
        "n_draws": n_draws,
        "verdict": verdict_,
        "margin": margin,
    }


def _log_t_star_step(T):
    def step(_, first, second):
        return np.log(vertex_minimum(T, second, np.float64)) - np.log(vertex_minimum(T, first, np.float64))

    return step


def _at(y, i):
    """y[..., i] with one index per curve of the batch."""
    return np.take_along_axis(y, np.asarray(i)[..., None], axis=-1)[..., 0]


def _argmin(y, start, stop):
    """The argmin of each curve over the points start..stop-1 (non-finite points never win)."""
    window = y[..., start:stop]
    return start + np.argmin(np.where(np.isfinite(window), window, np.inf), axis=-1)


def _interior_min(y):
    return _argmin(y, 1, y.shape[-1] - 1)


def _u_claim(cid, T, cubes, name) -> dict:
    """(b), (d): the fall to and the rise from the interior minimum of each curve of ``cubes``
    ({size: cube}): "every" side at a size, "some" size."""
    fall = lambda i, y: y[..., 0] - _at(y, i)  # noqa: E731
    rise = lambda i, y: y[..., -1] - _at(y, i)  # noqa: E731
    sizes, level = [], 1 - (1 - LEVEL) / max(len(cubes), 1)  # Bonferroni over the sizes of a "some" claim
    for size, cube in cubes.items():
        curve, kind, t_star = _pooled(T, cube)
        t_min = float(T[_interior_min(curve)])
        extra = dict(t_min=t_min, t_star=t_star, kind=kind, level=level)
        sides = [
            _part(f"{name}={size:g}, {side}", [cube], stat, ABOVE, _interior_min, **extra)
            for side, stat in (("fall", fall), ("rise", rise))
        ]
        sizes.append(_decide(sides, "every"))
    return _combine(cid, sizes, "some", f"no {name} curve")


def _order_claim(cid, T, cubes, name) -> dict:
    """(c), (e): the log T* step between consecutive sizes with an interior pooled T*; "every"."""
    kinds = {size: _pooled(T, cube)[1:] for size, cube in cubes.items()}
    interior = [size for size in sorted(cubes) if kinds[size][0] == "interior"]
    step = _log_t_star_step(T)
    parts = [
        _part(f"{name}={a:g}->{b:g}", [cubes[a], cubes[b]], step, BELOW, t_star=[kinds[a][1], kinds[b][1]])
        for a, b in zip(interior, interior[1:])
    ]
    found = ", ".join(f"{name}={s:g}: {k}" for s, (k, _) in kinds.items()) or "no curves"
    return _combine(cid, parts, "every", f"fewer than two {name}s with an interior pooled T* ({found})")


def _measured(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[(frame["checkpoint"] != "inflection") & (frame["metric"] == "perplexity")].reset_index(drop=True)


def _perturb_claims(perturb, traces, series_column) -> list[dict]:
    rows = _measured(perturb)
    grid = _Grid(rows, series_column)
    mod, gamma = rows["modification"].to_numpy(), rows["gamma"].to_numpy(float)
    base = _mean(grid.cube(mod == "none"), 1)[:, None, :]
    gammas = sorted({float(g) for g in gamma[(mod == "gaussian") & np.isfinite(gamma)]})
    if grid.T.size < 3 or not gammas or not np.isfinite(base).any():
        reason = "the perturbation table needs >= 3 checkpoints, an unperturbed curve and a gamma"
        return [_no_data(c, reason) for c in "abch"]
    cubes = {g: grid.cube((mod == "gaussian") & (gamma == g)) for g in gammas}
    a = [_rank_part(f"gamma={g:g}", grid.T, cubes[g] - base) for g in gammas]
    return [
        _combine("a", a, "every", "no gamma"),
        _u_claim("b", grid.T, cubes, "gamma"),
        _order_claim("c", grid.T, cubes, "gamma"),
        *_hessian_claims(grid, base, cubes, traces, series_column),
    ]


def _hessian_claims(grid, base, cubes, traces, series_column) -> list[dict]:
    """(h) at the ``H_GAMMAS`` smallest gammas, with the band of gammas where the quadratic identity
    holds, then one row ``h:gamma=G`` per gamma of the table (the same rule at that gamma alone)."""
    if traces is None or len(traces) == 0:
        return [_no_data("h", "no Hessian-trace table")]
    column = "trace" if "trace" in traces else "value"
    times = traces["pretrain_time"] if "pretrain_time" in traces else traces["checkpoint"].map(grid.time_of)
    t = pd.Index(grid.T).get_indexer(times.astype(float))
    W = np.full((len(grid.series), grid.T.size), np.nan)
    if series_column in traces:  # one trace per series and checkpoint; else the same for every series
        s = pd.Index(grid.series).get_indexer(traces[series_column])
        W[s[(s >= 0) & (t >= 0)], t[(s >= 0) & (t >= 0)]] = traces[column].to_numpy(float)[(s >= 0) & (t >= 0)]
    else:
        W[:, t[t >= 0]] = traces[column].to_numpy(float)[t >= 0]
    known = np.isfinite(W)
    if not known.any():
        return [_no_data("h", "no trace at a checkpoint of the perturbation table")]

    def part(gammas):
        def ratio(_, *deltas):
            measured = sum(np.where(known, d, 0.0).sum(-1) for d in deltas)
            predicted = sum(g**2 / 2 * np.where(known, W, 0.0).sum(-1) for g in gammas)
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(predicted > 0, measured / predicted, np.nan)

        label = "gamma=" + ",".join(f"{g:g}" for g in gammas)
        entry = _part(label, [cubes[g] - base for g in gammas], ratio, HESSIAN_BAND, log=True)
        entry["method"] += "; the traces held fixed"
        return entry

    rows = [_claim("h", part([g])) | {"claim": f"h:gamma={g:g}", "gamma": g} for g in sorted(cubes)]
    head = _claim("h", part(sorted(cubes)[:H_GAMMAS]))
    holds = [r["gamma"] for r in rows if r["verdict"] == "PASS"]
    breaks = [r["gamma"] for r in rows if r["verdict"] == "FAIL"]
    head["band"] = {
        "holds_at": holds,
        "breaks_at": breaks,
        "text": (
            f"PASS at gamma {', '.join(f'{g:g}' for g in holds) or 'none'}; "
            f"FAIL at gamma {', '.join(f'{g:g}' for g in breaks) or 'none'}"
        ),
    }
    return [head, *rows]


def _finetune_claims(finetune, series_column, uniform_loss=None) -> list[dict]:
    measured = _measured(finetune)
    rows = measured[measured["modification"] == "finetune"]
    if rows["steps"].nunique() > 1:
        rows = rows[rows["steps"] == rows["steps"].mode().iloc[0]]
    rows = pd.concat([measured[measured["modification"] == "none"], rows], ignore_index=True)
    grid = _Grid(rows, series_column)
    policy = rows["lr_policy"].to_numpy() if "lr_policy" in rows else np.full(len(rows), "fixed")
    policy = np.where(rows["modification"].to_numpy() == "none", "", policy)
    reg, lr = rows["reg"].fillna(0.0).to_numpy(float), rows["lr"].to_numpy(float)
    fixed = policy == "fixed"
    if grid.T.size < 3 or not fixed.any():
        return [_no_data(c, "the fine-tuning table needs >= 3 checkpoints and fixed-lr rows") for c in ("a'", *"defg")]
    base_reg = 0.0 if (reg[fixed] == 0).any() else float(reg[fixed].min())
    at = fixed & (reg == base_reg)
    cubes = {float(x): grid.cube(at & (lr == x)) for x in sorted(set(lr[at]))}
    before = rows["modification"].to_numpy() == "none"
    if before.any():
        base = _mean(grid.cube(before), 1)[:, None, :]
        forgetting = [_rank_part(f"lr={x:g}", grid.T, cube - base) for x, cube in cubes.items()]
        claims = [_combine("a'", forgetting, "every", "no fixed lr")]
    else:
        claims = [_no_data("a'", "no rows of the checkpoints before fine-tuning (modification 'none')")]
    claims += [_u_claim("d", grid.T, cubes, "lr"), _order_claim("e", grid.T, cubes, "lr")]
    tuned = (policy == "tuned") & (reg == base_reg)
    if tuned.any():
        claims.append(_tuned_claim(grid.T, grid.cube(tuned), cubes, uniform_loss))
    else:
        claims.append(_no_data("f", NO_TUNED))
    regs = sorted({(float(x), float(r)) for x, r in zip(lr[fixed], reg[fixed]) if r > 0})
    if not regs or base_reg != 0.0:
        return [*claims, _no_data("g", f"no fine-tuning rows with reg {'> 0' if not regs else '= 0 to compare with'}")]
    interior = {x for x, cube in cubes.items() if _pooled(grid.T, cube)[1] == "interior"}
    step = _log_t_star_step(grid.T)
    parts = [
        _part(f"lr={x:g}, reg={r:g}", [cubes[x], grid.cube(fixed & (lr == x) & (reg == r))], step, ABOVE)
        for x, r in regs
        if x in interior
    ]
    return [*claims, _combine("g", parts, "every", "no lr with reg > 0 whose reg = 0 curve has an interior T*")]


NO_TUNED = "no tuned-lr rows (lr_policy 'tuned')"


def _tuned_claim(T, tuned, fixed: dict, uniform_loss=None) -> dict:
    """(f): the tuned curve's rise (> 0: not removed) and the mean fixed-lr rise minus it (> 0:
    reduced; the mean over the lrs with a rise); "every". ``fixed`` is never empty here (d's lrs).
    Runs whose log perplexity is at or above ``uniform_loss`` (log V: no better than a uniform guess)
    are left out: a curve that has forgotten everything cannot rise."""
    cubes = [tuned, *fixed.values()]
    left_out = []
    if uniform_loss is not None:
        left_out = [f"{x:g}" for x, cube in fixed.items() if (cube >= uniform_loss).any()]
        cubes = [np.where(c >= uniform_loss, np.nan, c) for c in cubes]

    def ends(*curves):  # each curve's argmin before its last point
        return [_argmin(y, 0, y.shape[-1] - 1) for y in curves]

    def rises(key, *curves):
        return [y[..., -1] - _at(y, i) for y, i in zip(curves, key)]

    def reduction(key, *curves):
        r = rises(key, *curves)
        return _mean(np.stack(r[1:]), 0) - r[0]

    kind = _pooled(T, tuned)[1]
    lrs = ",".join(f"{x:g}" for x in fixed)
    extra = {"tuned_kind": kind, "uniform_left_out": left_out}
    parts = [
        _part("tuned rise", cubes, lambda *a: rises(*a)[0], ABOVE, ends, **extra),
        _part(f"reduction vs lr={lrs}", cubes, reduction, ABOVE, ends, **extra),
    ]
    return _claim("f", _decide(parts, "every"))


def evaluate_claims(
    perturb: pd.DataFrame | None,
    finetune: pd.DataFrame | None,
    traces: pd.DataFrame | None = None,
    *,
    series_column: str = "series_seed",
    uniform_loss: float | None = None,
) -> list[dict]:
    """The verdicts on claims (a)-(h), in order (module docstring). ``traces``: a table of the
    noise-weighted Hessian trace W (column ``trace``, else ``value``) per ``checkpoint`` (or
    ``pretrain_time``) and, where it has the column, per series ``series_column`` (else the same W
    for every series). A missing table makes its claims INCONCLUSIVE with a "no data" rule.

    Parameters
    ----------
    perturb : DataFrame or None
        The perturbation table of one model's series (result-store rows of ``ovt llm perturb``).
    finetune : DataFrame or None
        The fine-tuning table of the same series (rows of ``ovt llm finetune``).
    traces : DataFrame or None
        The noise-weighted Hessian trace per checkpoint (and series), as described above.
    series_column : str
        The column that names the pre-training series of a row.
    uniform_loss : float or None
        log V, the loss of a uniform guess over the vocabulary, in nats; runs at or above it are left
        out of claim (f). None keeps every run.

    Returns
    -------
    list of dict
        One entry per claim (and per part where a claim has parts): statement, statistic, value,
        interval or p, n, verdict and rule.
    """
    if perturb is None or len(perturb) == 0:
        claims = [_no_data(c, "no perturbation table") for c in "abch"]
    else:
        claims = _perturb_claims(perturb, traces, series_column)
    if finetune is None or len(finetune) == 0:
        claims += [_no_data(c, "no fine-tuning table") for c in ("a'", *"defg")]
    else:
        claims += _finetune_claims(finetune, series_column, uniform_loss)
    return sorted(claims, key=claim_order)
