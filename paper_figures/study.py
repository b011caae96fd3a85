"""The figure of an ``ovt llm study`` (``DIR/figures/study.png``): one row per model size.

(a) log perplexity under Gaussian noise vs pre-training tokens, per gamma: the mean over the
    pre-training series (each series' mean over its draws) with its standard error over series;
(b) log perplexity after fine-tuning on the first dataset at each fixed lr, likewise;
(c) T* against gamma and against lr: observed (filled, 95% interval over series) and predicted from
    the fit sizes alone (hollow, 95% interval; ``predictions.json``), the fit sizes ringed;
(d) the measured small-noise excess (antithetic pairs, every checkpoint and series) against its
    second-order prediction (gamma^2 / 2) x the noise-weighted Hessian trace, with the line y = x;
(e) forgetting F(T) = log perplexity after fine-tuning - before (claim a'), per fixed lr: the mean
    over series of each series' mean over batch orders, with its standard error over series.

Reads only the study's files: ``claims.json``, ``predictions.json`` and the run stores.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from paper_figures import store, style  # the package's one store reader (rundir.store)
from paper_figures.llm_perturb import tokens_axis


def _stage(out: Path, stage: str, config: dict, size: str) -> pd.DataFrame:
    frames = [
        pd.read_parquet(out / stage / f"{size}_seed={seed}" / store.METRICS).assign(series=seed)
        for seed in dict(map(tuple, config.get("size_seeds") or [])).get(size, config["seeds"])
    ]
    rows = pd.concat(frames, ignore_index=True)
    return rows[(rows.checkpoint != "inflection")]


def _curvature_panel(ax, curvature: pd.DataFrame) -> None:
    """The measured excess NLL against its second-order prediction (gamma^2 / 2) tr_sigma H."""
    trace = curvature[curvature.metric == "hessian_trace"].set_index(["series", "pretrain_time"]).value
    pairs = curvature[curvature.metric == "delta_nll"]
    mean = pairs.groupby(["series", "pretrain_time", "gamma"]).value.mean().reset_index()
    predicted = (
        mean.gamma**2 / 2 * trace.reindex(pd.MultiIndex.from_frame(mean[["series", "pretrain_time"]])).to_numpy()
    )
    ax.loglog(predicted, mean.value, "o", ms=3)
    positive = predicted > 0
    lim = [np.nanmin(predicted[positive]) / 2, np.nanmax(predicted) * 2] if positive.any() else [1e-6, 1]
    ax.plot(lim, lim, "k--", lw=0.8)
    ax.set(xlabel=r"$(\gamma^2/2)\,\mathrm{tr}_\sigma H$", ylabel="measured excess NLL")


def _series_curves(ax, rows: pd.DataFrame, by: str, label) -> None:
    """Mean over series of each series' mean log perplexity, +- its s.e. over series."""
    rows = rows.assign(log=np.log(rows.value))
    values = sorted(rows[by].dropna().unique())
    colours = style.ordered_colours(values)
    for value in values:
        per = rows[rows[by] == value].groupby(["series", "pretrain_time"]).log.mean().unstack("pretrain_time")
        mean, se = per.mean(axis=0), per.std(axis=0, ddof=1) / np.sqrt(len(per))
        ax.errorbar(
            per.columns, mean, yerr=se, color=colours[value], label=label(value), capsize=1.5, ms=2.5, marker="o"
        )


def _t_star_panel(ax, observed: dict, predictions: dict, kind: str, column: str, colour: str, scale: float) -> None:
    seen = [o for o in observed[kind] if np.isfinite(o["t_star"])]
    x = np.array([o[column] for o in seen])
    if seen:
        y = np.array([o["t_star"] for o in seen])
        lo = np.array([o.get("interval", [t, t])[0] for o, t in zip(seen, y)])
        hi = np.array([o.get("interval", [t, t])[1] for o, t in zip(seen, y)])
        # A pooled T* may lie outside its bootstrap interval (a skewed one): draw the interval's reach
        # on each side of the point, never a negative one.
        reach = np.clip([y - lo, hi - y], 0.0, None)
        ax.errorbar(x * scale, y, yerr=reach, fmt="o", color=colour, label=f"observed ({kind})", capsize=2)
    for p in predictions[kind]["predictions"]:
        t, interval = p["t_star"]["value"], p["t_star"].get("interval") or [None, None]
        if t is None or not np.isfinite(t):
            continue
        lo, hi = interval[0] or t, interval[1] or t
        reach = np.clip([[t - lo], [hi - t]], 0.0, None)
        ax.errorbar([p[column] * scale], [t], yerr=reach, fmt="s", mfc="none", color=colour, capsize=2)
    for m in predictions[kind]["fit"]:
        ax.axvline(m * scale, color=colour, lw=0.5, ls=":")


def draw(out: Path | str, figures: Path | str) -> list[Path]:
    out = Path(out)
    report = json.loads((out / "claims.json").read_text())
    predictions = json.loads((out / "predictions.json").read_text())["sizes"]
    config = report["config"]
    sizes = [size for size, _ in config["sizes"]]
    first = config["finetune_data"][0].split(":", 1)[-1]
    with matplotlib.rc_context(style.RC):
        fig = Figure(figsize=(style.WIDTH * 1.75, 2.8 * len(sizes)), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(len(sizes), 5, squeeze=False)
        for row, size in zip(axes, sizes):
            perturb = _stage(out, "perturb", config, size)
            perturb = perturb[perturb.metric == "perplexity"]
            _series_curves(row[0], perturb.assign(gamma=perturb.gamma.fillna(0.0)), "gamma", lambda g: f"gamma={g:g}")
            tokens_axis(row[0], f"{size}: log perplexity (noise)")
            tuned = _stage(out, f"finetune/{first}", config, size)
            fixed = tuned[(tuned.metric == "perplexity") & (tuned.lr_policy == "fixed")]
            _series_curves(row[1], fixed, "lr", lambda lr: f"lr={lr:g}")
            tokens_axis(row[1], f"log perplexity after fine-tuning ({first})")
            _t_star_panel(row[2], report["observed"][size], predictions[size], "gaussian", "gamma", "C0", 1.0)
            _t_star_panel(row[2], report["observed"][size], predictions[size], "finetune", "lr", "C3", 1.0)
            row[2].set(xscale="log", yscale="log", xlabel="gamma (blue) / lr (red)", ylabel="T* (tokens)")
            if config.get("curvature_gammas"):
                _curvature_panel(row[3], _stage(out, "curvature", config, size))
            else:
                row[3].text(0.5, 0.5, "no curvature runs", ha="center", va="center", transform=row[3].transAxes)
                row[3].set_axis_off()
            before = tuned[(tuned.metric == "perplexity") & (tuned.modification == "none")]
            base = np.log(before.set_index(["series", "pretrain_time"]).value.groupby(level=[0, 1]).mean())
            key = pd.MultiIndex.from_frame(fixed[["series", "pretrain_time"]])
            forgetting = fixed.assign(value=np.exp(np.log(fixed.value.to_numpy()) - base.reindex(key).to_numpy()))
            _series_curves(row[4], forgetting, "lr", lambda lr: f"lr={lr:g}")
            tokens_axis(row[4], "forgetting F(T): log ppl after - before")
            for ax in (row[0], row[1], row[4]):
                ax.legend(fontsize=6)
        title = f"study {report['study']}: noise, fine-tuning, T* predicted vs observed, curvature, forgetting"
        fig.suptitle(title, fontsize=9)
        return style.save(fig, figures, "study")
