"""The figure of a mitigation study (``DIR/figures/study_mitigations.png``): one row per model size.

(a) forgetting F(T) = ln ppl after fine-tuning - ln ppl before, on held-out pre-training text, against
    pre-training tokens: the unmitigated baseline (black) and every mitigation, each the mean over
    series with its standard error over series (``claims.json``'s ``curves``);
(b) claims k: each mitigation's reduction of the forgetting at the largest budget (baseline - arm, in
    nats), with its 95% interval over the paired series, and its verdict.

Reads only the study's ``claims.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from paper_figures import style
from paper_figures.llm_perturb import tokens_axis

BASELINE = "baseline"


def _forgetting(ax, curves: dict, size: str) -> None:
    arms = [a for a in curves if a != BASELINE]
    colours = dict(zip(arms, matplotlib.colormaps["tab10"].colors))
    for arm, curve in curves.items():
        sem = np.array([np.nan if v is None else v for v in curve["sem"]], float)
        colour = "k" if arm == BASELINE else colours[arm]
        label = f"{arm} ({curve['n_series']} series)"
        ax.errorbar(curve["tokens"], curve["mean"], yerr=sem, color=colour, marker="o", ms=2, capsize=1.5, label=label)
    tokens_axis(ax, f"{size}: forgetting F(T) (nats)")
    if curves:
        ax.legend(fontsize=5)


def _reductions(ax, claims: list[dict], size: str) -> None:
    rows = [c for c in claims if c.get("size") == size and c["claim"].startswith("k:")]
    for i, c in enumerate(rows):
        value, interval = c.get("value"), c.get("interval")
        if value is None or not np.isfinite(value):
            continue
        xerr = None if not interval else [[value - interval[0]], [interval[1] - value]]
        ax.errorbar([value], [i], xerr=xerr, fmt="o", capsize=2, color="C0" if c["verdict"] == "PASS" else "0.4")
    ax.axvline(0.0, color="k", lw=0.6)
    labels = [f"{c.get('arm', c['claim'])}: {c['verdict']}" for c in rows]
    ax.set(yticks=range(len(rows)), yticklabels=labels, xlabel="forgetting reduction at the largest T (nats)")
    ax.set_title("claims k: baseline - mitigation (95%)")


def draw(out: Path | str, figures: Path | str) -> list[Path]:
    report = json.loads((Path(out) / "claims.json").read_text())
    sizes = [size for size, _ in report["config"]["sizes"]]
    with matplotlib.rc_context(style.RC):
        fig = Figure(figsize=(style.WIDTH, 2.8 * len(sizes)), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(len(sizes), 2, squeeze=False)
        for (left, right), size in zip(axes, sizes):
            _forgetting(left, report.get("curves", {}).get(size, {}), size)
            _reductions(right, report["claims"], size)
        fig.suptitle(f"study {report['study']}: forgetting after fine-tuning, per mitigation", fontsize=9)
        return style.save(fig, figures, "study_mitigations")
