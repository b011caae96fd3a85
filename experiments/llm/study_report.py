"""The analysis of an ``ovt llm study``: predictions first, then observations, then verdicts.

1. **Predictions** (``predictions.json``, written before anything below is computed): per model size,
   the theory's decomposition (``analysis.fits.predict_t_star``: L = E + A T^-alpha, excess
   C m^p T^beta) is fitted on the ``fit_gammas`` largest gammas and, for fine-tuning on the first
   dataset at reg 0, the ``fit_lrs`` smallest lrs only (``fit_rows`` keeps nothing else, and
   ``predict`` refuses rows of another size), and predicts T* of every other gamma and lr with a 95%
   interval over the pre-training series (resampled whole).
2. **Observations**: per size and curve, T* of the mean over series (``analysis.inflection``; its kind
   where there is none) and a Student-t interval over the series' own T* in log space.
3. **Scores**: per predicted size, ln(predicted / observed) and whether the observation falls in the
   predicted interval.
4. **Claims** (``claims.json``, ``claims.md``): ``experiments.llm.study_claims`` per size.

The pre-training seed of a row is ``series_seed``; draws are averaged within a series before a
series-level statistic, so every interval rests on the series.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from analysis import claim_text
from analysis.families import families
from analysis.fits import predict_t_star
from analysis.inflection import inflection, inflection_kind, vertex_minimum
from experiments.llm.study_claims import SERIES, size_claims, tables
from rundir import store

N_BOOT = 400


def _measured(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[(rows.checkpoint != "inflection") & (rows.metric == "perplexity")]


def fit_rows(rows: pd.DataFrame, modification: str, fit: list[float]) -> pd.DataFrame:
    """The rows a prediction may read: the unmodified curve and the modified curves at the fit sizes
    (``gamma``, or ``lr`` of the fixed-lr rows), nothing else."""
    rows = _measured(rows)
    column = "gamma" if modification == "gaussian" else "lr"
    modified = rows[(rows.modification == modification) & rows[column].isin(fit)]
    if modification == "finetune":
        modified = modified[modified.lr_policy == "fixed"]
    return pd.concat([rows[rows.modification == "none"], modified], ignore_index=True)


def _family(rows: pd.DataFrame, size: str):
    """One family over the series: log perplexity averaged over draws within a series, the series
    index as its seed (paired: the base and modified curves of a series share it)."""
    rows = rows.assign(log=np.log(rows.value))
    keys = ["modification", "gamma", "lr", "steps", "reg", SERIES, "pretrain_time"]
    mean = rows.groupby(keys, dropna=False)["log"].mean().reset_index()
    frame = store.block(
        source="llm",
        setup=size,
        checkpoint=mean.pretrain_time.map(lambda t: f"T{t:.0f}").tolist(),
        pretrain_time=mean.pretrain_time.tolist(),
        modification=mean.modification.tolist(),
        gamma=mean.gamma.tolist(),
        lr=mean.lr.tolist(),
        steps=mean.steps.tolist(),
        reg=mean.reg.fillna(0.0).where(mean.modification == "finetune").tolist(),
        seed=mean[SERIES].astype(int).tolist(),
        metric="perplexity",
        value=np.exp(mean.log).tolist(),
    )
    found, reasons = families(store.validate(frame), size, store.REQUIRED_COLUMNS)
    if len(found) != 1:
        raise ValueError(f"{size}: expected one family, found {len(found)} ({'; '.join(reasons)})")
    return found[0]


def predict(rows: pd.DataFrame, size: str, modification: str, fit: list[float], held: list[float], steps: float):
    """Fit on ``rows`` (``fit_rows``: only the fit sizes) and predict T* at ``held``; refuses rows at
    any other size, so the held-out curves cannot leak in. A grid of fewer than two fit sizes, or none
    held out, makes no prediction (a study of one gamma): the entry says so and predicts nothing."""
    column = "gamma" if modification == "gaussian" else "lr"
    if len(fit) < 2 or not held:
        reason = f"no prediction: {len(fit)} fit {column}(s) and {len(held)} held out; it needs >= 2 and >= 1"
        return {"predictions": [], "fit": fit, "held_out": held, "rows_read": 0, "reason": reason}
    given = set(rows.loc[rows.modification == modification, column])
    if not given <= set(fit):
        raise ValueError(f"predict was given {column} {sorted(given - set(fit))} outside the fit sizes {fit}")
    scale = 1.0 if modification == "gaussian" else steps  # the family's size is lr x steps
    result = predict_t_star(_family(rows, size), [h * scale for h in held], N_BOOT, seed=0)
    error = model_error(rows, modification, column, fit, result["fitted_t_star"])
    for entry, value in zip(result["predictions"], held):
        entry[column] = value
        entry["t_star"] = widened(entry["t_star"], error["sd"])
    return result | {"fit": fit, "held_out": held, "rows_read": len(rows), "model_error": error}


def model_error(rows: pd.DataFrame, modification: str, column: str, fit: list[float], fitted: list[float]) -> dict:
    """The decomposition's own error in ln T*: the root mean square of ln(fitted / observed) over the fit
    sizes whose pooled curve has an interior minimum (in-sample: the fit saw these curves, so this is a
    floor on the error; leaving one size out would leave too few to fit the size exponent p)."""
    residuals = []
    for value, t_fit in zip(fit, fitted):
        seen = observe(rows, modification, column, value)
        if seen["kind"] == "interior" and math.isfinite(t_fit) and t_fit > 0:
            residuals.append(math.log(t_fit / seen["t_star"]))
    sd = float(np.sqrt(np.mean(np.square(residuals)))) if residuals else None
    how = f"in-sample RMS of ln(fitted / observed T*) over {len(residuals)} fit size(s) with an interior minimum"
    return {"sd": sd, "residuals": residuals, "method": how if residuals else "none (no fit size has an interior T*)"}


def widened(t_star: dict, sd: float | None) -> dict:
    """The prediction interval with the model error added in quadrature in log space: half-width
    sqrt(h^2 + (1.96 sd)^2) around ln T* (an open end stays open)."""
    interval = t_star.get("interval")
    if sd is None or not interval or t_star.get("value") is None:
        return t_star
    centre = math.log(t_star["value"])
    lo, hi = interval
    extra = (stats.norm.ppf(0.975) * sd) ** 2

    def end(edge, sign):
        if edge is None or edge <= 0:
            return edge
        return math.exp(centre + sign * math.sqrt((math.log(edge) - centre) ** 2 + extra))

    return t_star | {"interval": [end(lo, -1), end(hi, 1)], "sampling_interval": interval, "model_sd": sd}


def observe(rows: pd.DataFrame, modification: str, column: str, value: float) -> dict:
    """T* of one curve: the pooled (mean over series) curve's, its kind, and the series' own T* with a
    Student-t interval in log space (where the pooled curve has an interior minimum)."""
    rows = _measured(rows)
    curve = rows[(rows.modification == modification) & (rows[column] == value)]
    if modification == "finetune":
        curve = curve[curve.lr_policy == "fixed"]
    table = curve.assign(log=np.log(curve.value)).pivot_table(index=SERIES, columns="pretrain_time", values="log")
    T, per_series = table.columns.to_numpy(float), table.to_numpy(float)
    pooled = per_series.mean(0)
    spread = per_series.std(0, ddof=1) / math.sqrt(len(per_series)) if len(per_series) > 1 else None
    kind = str(inflection_kind(T, pooled, spread=spread))
    t_star = float(inflection(T, pooled, spread=spread))
    entry = {column: value, "kind": kind, "t_star": t_star, "n_series": len(table), "T_range": [T[0], T[-1]]}
    own = np.log(np.asarray(vertex_minimum(T, per_series), float))
    if kind == "interior" and np.isfinite(own).sum() >= 2:
        own = own[np.isfinite(own)]
        half = stats.t.ppf(0.975, own.size - 1) * own.std(ddof=1) / math.sqrt(own.size)
        entry["interval"] = [math.exp(own.mean() - half), math.exp(own.mean() + half)]
        entry["per_series"] = np.exp(own).tolist()
    return entry


def score(prediction: dict, observed: dict) -> dict:
    """The verdict on one prediction, from both intervals (in log T):

    - ``hit``: the predicted and observed intervals overlap, and the observed one is informative
      (narrower than the checkpoint range);
    - ``miss``: the intervals are disjoint (no minimum in range counts as the interval beyond that
      end of the range: (T_last, inf) for ``above``, (0, T_first) for ``below``);
    - ``beyond range``: no minimum in range, and at least half of the predicted log-interval lies
      beyond the range on that side;
    - ``uninformative``: everything else (an observed interval as wide as the range, or none).

    With ``log_error`` = ln(predicted / observed) where both are finite."""
    predicted = prediction["t_star"]
    value, seen, kind = predicted["value"], observed["t_star"], observed["kind"]
    lo, hi = predicted.get("interval") or (None, None)
    lo, hi = (0.0 if lo is None else lo), (math.inf if hi is None else hi)
    first, last = observed["T_range"]
    shown = observed.get("interval")
    if math.isfinite(seen) and shown:
        o_lo, o_hi = shown
        if hi < o_lo or o_hi < lo:
            verdict = "miss"
        elif math.log(o_hi / o_lo) < math.log(last / first):
            verdict = "hit"
        else:
            verdict = "uninformative"
    elif kind in ("above", "below"):
        o_lo, o_hi = (last, math.inf) if kind == "above" else (0.0, first)
        if hi < o_lo or o_hi < lo:
            verdict = "miss"
        else:
            verdict = "beyond range" if _share_beyond(lo, hi, first, last, kind) >= 0.5 else "uninformative"
    else:
        verdict = "uninformative"
    error = math.log(value / seen) if value and math.isfinite(value) and math.isfinite(seen) and seen > 0 else None
    return {"predicted": predicted, "observed": observed, "log_error": error, "verdict": verdict}


def _share_beyond(lo: float, hi: float, first: float, last: float, side: str) -> float:
    """The share of the log-interval [lo, hi] beyond ``last`` (side ``above``) or before ``first``
    (``below``); an open end (0 or inf) lies wholly beyond on its side."""
    if (side == "above" and math.isinf(hi)) or (side == "below" and lo <= 0):
        return 1.0
    if lo <= 0 or math.isinf(hi):  # open on the other side: none of it is measurable there
        return 0.0
    a, b = math.log(lo), math.log(hi)
    edge = math.log(last) if side == "above" else math.log(first)
    if b == a:
        return float(a > edge) if side == "above" else float(a < edge)
    outside = max(0.0, b - max(a, edge)) if side == "above" else max(0.0, min(b, edge) - a)
    return outside / (b - a)


def score_counts(scores: dict) -> dict:
    """Per size and in all: how many predictions of each verdict, and the median |ln(pred / obs)| over
    the curves where both are finite."""

    def tally(entries):
        counts = {v: 0 for v in ("hit", "miss", "beyond range", "uninformative")}
        for e in entries:
            counts[e["verdict"]] = counts.get(e["verdict"], 0) + 1
        errors = [abs(e["log_error"]) for e in entries if e["log_error"] is not None]
        return counts | {"median_abs_log_error": float(np.median(errors)) if errors else None, "n_errors": len(errors)}

    per_size = {size: tally([e for kind in kinds.values() for e in kind]) for size, kinds in scores.items()}
    return per_size | {"all": tally([e for kinds in scores.values() for kind in kinds.values() for e in kind])}


def write(study, name: str, out: Path) -> dict:
    """Predictions (written first), observations and scores, claims; then the study figure."""
    found = {size: tables(study, out, size) for size, _ in study.sizes}
    gammas, lrs = sorted(study.gammas), sorted(study.lrs)
    fit_g, held_g = gammas[-study.fit_gammas :], gammas[: -study.fit_gammas]
    fit_l, held_l = lrs[: study.fit_lrs], lrs[study.fit_lrs :]
    first = study.finetune_data[0]
    predictions = {
        size: {
            "gaussian": predict(fit_rows(f["perturb"], "gaussian", fit_g), size, "gaussian", fit_g, held_g, 1.0),
            "finetune": predict(fit_rows(f[first], "finetune", fit_l), size, "finetune", fit_l, held_l, study.steps),
        }
        for size, f in found.items()
    }
    store.write_json(out / "predictions.json", {"study": name, "made_before_observing": True, "sizes": predictions})

    observed, scores = {}, {}
    for size, f in found.items():
        observed[size] = {
            "gaussian": [observe(f["perturb"], "gaussian", "gamma", g) for g in gammas],
            "finetune": [observe(f[first], "finetune", "lr", lr) for lr in lrs],
        }
        scores[size] = {
            kind: [
                score(p, next(o for o in observed[size][kind] if o[column] == p[column]))
                for p in predictions[size][kind]["predictions"]
            ]
            for kind, column in (("gaussian", "gamma"), ("finetune", "lr"))
        }
    claims = [c for size, f in found.items() for c in size_claims(study, size, f)]
    counts = score_counts(scores)
    report = {
        "study": name,
        "config": dataclasses.asdict(study),
        "observed": observed,
        "scores": scores,
        "prediction_counts": counts,
    }
    store.write_json(out / "claims.json", {**report, "claims": claims})
    (out / "claims.md").write_text(render(study, name, claims, scores, counts), encoding="utf-8")
    from paper_figures import study as figure
    from paper_figures import study_anneal

    figure.draw(out, out / "figures")
    study_anneal.draw(out, out / "figures")  # nothing where the study neither quantizes nor has a trunk
    return report | {"claims": claims}


def render(study, name: str, claims: list[dict], scores: dict, counts: dict) -> str:
    """``claims.md``: one claims table per size and dataset, then the predictions scored."""
    fits = {"gaussian": sorted(study.gammas)[-study.fit_gammas :], "finetune": sorted(study.lrs)[: study.fit_lrs]}
    parts = [f"# Study `{name}`: verdicts on the paper's LLM claims\n"]
    if name.endswith("-quick"):
        parts.append(
            "A quick study: 8x in tokens, 2 series and few draws, far below the regime the claims are about, "
            "so INCONCLUSIVE verdicts are expected here; the reference study (`study`) decides them.\n"
        )
    for size, _ in study.sizes:
        mine = [c for c in claims if c["size"] == size]
        for data in dict.fromkeys(c["dataset"] for c in mine if c["dataset"]):
            primary = data == study.finetune_data[0]
            rows = [c for c in mine if c["dataset"] == data or (primary and not c["dataset"])]
            title = f"## {size}: fine-tuning on {data}" + ("" if primary else " (claims a', d-f)")
            parts += [title + "\n", claim_text.render_markdown(sorted(rows, key=claim_text.claim_order))]
            band = next((c.get("band") for c in rows if c["claim"] == "h" and c.get("band")), None)
            if band:
                parts.append(f"(h) by gamma, from the perturbation draws: {band['text']}.\n")
        lines = [
            "| curve | fitted on | predicted T* [95%] | observed T* [95%] | ln(pred/obs) | prediction |",
            "|---|---|---|---|---|---|",
        ]
        for kind, column in (("gaussian", "gamma"), ("finetune", "lr")):
            for s in scores[size][kind]:
                p, o = s["predicted"], s["observed"]
                interval = o.get("interval")
                seen = f"{_fmt(o['t_star'])}" + (
                    f" [{_fmt(interval[0])}, {_fmt(interval[1])}]" if interval else f" ({o['kind']})"
                )
                pi = p.get("interval")
                pred = _fmt(p["value"]) + (f" [{_fmt(pi[0])}, {_fmt(pi[1])}]" if pi else "")
                err = "-" if s["log_error"] is None else f"{s['log_error']:+.2f}"
                fit = ", ".join(f"{v:g}" for v in fits[kind])
                lines.append(f"| {kind} {column}={o[column]:g} | {fit} | {pred} | {seen} | {err} | {s['verdict']} |")
        title = f"## {size}: T* predicted from the fit sizes alone (written first), then observed\n"
        parts += [title, "\n".join(lines) + "\n", _counts_line(counts[size]) + "\n"]
    parts.append("## All sizes\n\n" + _counts_line(counts["all"]) + "\n")
    return "\n".join(parts)


def _counts_line(tally: dict) -> str:
    verdicts_ = ", ".join(f"{n} {v}" for v, n in tally.items() if v not in ("median_abs_log_error", "n_errors"))
    median = tally["median_abs_log_error"]
    error = "-" if median is None else f"{median:.2f} over {tally['n_errors']} curves"
    return f"Predictions: {verdicts_}; median |ln(pred/obs)|: {error}."


def _fmt(x) -> str:
    return "open" if x is None or not math.isfinite(x) else f"{x / 1e6:.3g}M"


def summary(report: dict, out: Path | None = None) -> str:
    """What ``ovt llm study`` prints: each claim's verdict per size (value and interval, or "no data"
    and why), then where the files went."""
    lines = [f"study {report['study']}:"]
    for c in report["claims"]:
        if math.isfinite(c["value"]):
            shown = f"{claim_text.number_text(c['value'])} {claim_text.interval_text(c)} ({c['at']})"
        else:
            shown = c["rule"] if c["rule"].startswith("no data") else "no value"
        lines.append(f"  {c['size']:4s} ({c['claim']}) {c['verdict']:12s} {shown} {c['dataset']}".rstrip())
    if out is not None:
        mitigations = "curves" in report  # a mitigation study (``study_mitigations``)
        files = "figures/study_mitigations.png" if mitigations else "predictions.json, figures/study.png"
        lines.append(f"-> {out}: claims.md, claims.json, {files}")
    return "\n".join(lines)


def read(out: Path) -> dict:
    return json.loads((out / "claims.json").read_text())
