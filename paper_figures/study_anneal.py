"""The second figure of an ``ovt llm study`` (``DIR/figures/study_anneal.png``), drawn where the study
quantizes or measures a WSD trunk: one row per model size.

(a) the quantization excess Delta_b(T) = log ppl after b-bit round-to-nearest - before, per bit width
    (claim q): the mean over series of each series' value, with its standard error over series;
(b)-(d) the excess of each modification on the annealed checkpoints (solid) and on the un-annealed
    trunk at the same tokens (dashed), over the series that have both (claims i, j): Gaussian noise
    at the trunk's gammas, fine-tuning forgetting at the trunk's lrs, quantization at every bit width;
(e) claim j: the paired gap (annealed - trunk excess, mean over checkpoints) per modification and
    level, with its 95% interval over series (``claims.json``).

Reads only the study's files.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from paper_figures import store, style
from paper_figures.llm_perturb import tokens_axis

LEVEL = {"gaussian": "gamma", "finetune": "lr", "quantization": "bits"}
MODIFICATION = {"perturb": "gaussian", "finetune": "finetune", "quantize": "quantization"}


def _excess(out: Path, stage: str, size: str, seeds, modification: str) -> pd.DataFrame:
    """Per (series, level, T): the mean over draws of log ppl modified - the mean of log ppl before."""
    frames = [
        pd.read_parquet(out / stage / f"{size}_seed={s}" / store.METRICS).assign(series=s)
        for s in seeds
        if (out / stage / f"{size}_seed={s}" / store.METRICS).is_file()
    ]
    if not frames:
        return pd.DataFrame(columns=["series", "level", "pretrain_time", "excess"])
    rows = pd.concat(frames, ignore_index=True)
    rows = rows[(rows.checkpoint != "inflection") & (rows.metric == "perplexity")].assign(log=lambda f: np.log(f.value))
    base = rows[rows.modification == "none"].groupby(["series", "pretrain_time"]).log.mean()
    changed = rows[rows.modification == modification]
    if "lr_policy" in changed:
        changed = changed[(changed.lr_policy == "fixed") & (changed.reg.fillna(0.0) == 0.0)]
    if "rounding" in changed:
        changed = changed[changed.rounding == "nearest"]
    level = LEVEL[modification]
    mean = changed.groupby(["series", level, "pretrain_time"]).log.mean().reset_index()
    key = pd.MultiIndex.from_frame(mean[["series", "pretrain_time"]])
    return mean.assign(excess=mean.log.to_numpy() - base.reindex(key).to_numpy()).rename(columns={level: "level"})


def _curves(ax, excess: pd.DataFrame, name: str, ls: str, colours: dict) -> None:
    for level, rows in excess.groupby("level"):
        per = rows.pivot(index="series", columns="pretrain_time", values="excess")
        se = per.std(axis=0, ddof=1) / np.sqrt(len(per)) if len(per) > 1 else None
        label = f"{name}={level:g}" + (" trunk" if ls == "--" else "")
        ax.errorbar(per.columns, per.mean(axis=0), yerr=se, color=colours[level], ls=ls, marker="o", ms=2, label=label)


def _gaps(ax, claims: list[dict], size: str) -> None:
    parts = [
        (c["modification"], p)
        for c in claims
        if c["claim"].startswith("j:") and c.get("size") == size
        for p in c.get("parts", [])
        if p.get("interval")
    ]
    for i, (_, p) in enumerate(parts):
        lo, hi = p["interval"]
        ax.errorbar([p["value"]], [i], xerr=[[p["value"] - lo], [hi - p["value"]]], fmt="o", capsize=2)
    ax.axvline(0.0, color="k", lw=0.6)
    ax.set(yticks=range(len(parts)), yticklabels=[f"{m} {p['at']}" for m, p in parts])
    ax.set(xlabel="annealed - trunk excess (nats)", title="claim j: paired gap (95%)")


def draw(out: Path | str, figures: Path | str) -> list[Path]:
    out = Path(out)
    report = json.loads((out / "claims.json").read_text())
    config = report["config"]
    trunk_seeds = dict(map(tuple, config.get("trunk_seeds") or []))
    sizes = [s for s, _ in config["sizes"] if config.get("quant_bits") or s in trunk_seeds]
    if not sizes:
        return []
    first = config["finetune_data"][0].split(":", 1)[-1]
    stages = {"perturb": "perturb", "finetune": f"finetune/{first}", "quantize": "quantize"}
    with matplotlib.rc_context(style.RC):
        fig = Figure(figsize=(style.WIDTH * 1.75, 2.8 * len(sizes)), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(len(sizes), 5, squeeze=False)
        for row, size in zip(axes, sizes):
            seeds = dict(map(tuple, config.get("size_seeds") or [])).get(size, config["seeds"])
            if config.get("quant_bits"):
                quantized = _excess(out, "quantize", size, seeds, "quantization")
                _curves(row[0], quantized, "bits", "-", style.ordered_colours(sorted(quantized.level.unique())))
            tokens_axis(row[0], f"{size}: quantization excess (annealed)")
            paired = trunk_seeds.get(size, ())
            for ax, (kind, stage) in zip(row[1:4], stages.items()):
                modification = MODIFICATION[kind]
                trunk = _excess(out, f"trunk/{stage}", size, paired, modification)
                annealed = _excess(out, stage, size, paired, modification)
                annealed = annealed[annealed.level.isin(trunk.level.unique())]
                colours = style.ordered_colours(sorted(trunk.level.unique()))
                _curves(ax, annealed, LEVEL[modification], "-", colours)
                _curves(ax, trunk, LEVEL[modification], "--", colours)
                tokens_axis(ax, f"{modification} excess: annealed vs trunk")
            _gaps(row[4], report["claims"], size)
            for ax in row[:4]:
                if ax.get_legend_handles_labels()[0]:
                    ax.legend(fontsize=5)
        fig.suptitle(f"study {report['study']}: quantization, and the anneal separated from the tokens", fontsize=9)
        return style.save(fig, figures, "study_anneal")
