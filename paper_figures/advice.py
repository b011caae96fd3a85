"""The advice of ``ovt advise`` (docs/ADVISE.md): what its store holds, drawn.

(a) Each checkpoint's base loss (the perplexity probe) and its predicted pre-training loss after the
planned fine-tuning with the 95% interval, the decomposition's curve through them where it was
fitted (dashed), the advised checkpoint (star) and the short list (ringed). (b) The probes' excess
over the base loss: the Gaussian excess of every checkpoint, the fine-tuning probe's measured excess
at its own lr x steps (hollow), and the excess predicted for the planned fine-tuning. Every number is
a stored row; nothing is fitted here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from paper_figures import style

ADVISED = dict(marker="*", ms=11, mfc="gold", mec="black", mew=0.6, ls="none", zorder=6)
LISTED = dict(marker="o", ms=9, mfc="none", mec="tab:orange", mew=1.0, ls="none", zorder=5)


def _metric(frame: pd.DataFrame, metric: str) -> pd.Series:
    rows = frame[(frame.metric == metric) & (frame.checkpoint != "decomposition")]
    return rows.groupby("pretrain_time").value.first().sort_index()


def draw(frame: pd.DataFrame, out_dir: Path, name: str = "advice") -> list[Path]:
    """(a) loss after fine-tuning against tokens with the choice; (b) the probes' excess."""
    base, loss = _metric(frame, "base_loss"), _metric(frame, "predicted_loss")
    low, high = _metric(frame, "predicted_loss_low"), _metric(frame, "predicted_loss_high")
    if loss.empty:
        raise ValueError("the store holds no predicted_loss rows: not an ovt advise run")
    planned = frame[frame.metric == "predicted_loss"].iloc[0]
    T = loss.index.to_numpy(float)
    shown = T > 0  # a step-0 checkpoint has no place on a log axis
    with style.panels(2) as (fig, (ax_a, ax_b)):
        ax_a.plot(T[shown], base.to_numpy()[shown], color="0.45", marker="o", ms=3, lw=1.0, label="base (probe)")
        yerr = np.stack([loss - low, high - loss])[:, shown]
        ax_a.errorbar(
            T[shown], loss.to_numpy()[shown], yerr=yerr, color="tab:blue", marker="o", ms=3.5, lw=1.0, capsize=2,
            label="predicted after fine-tuning (95%)",
        )  # fmt: skip
        curve = frame[frame.metric == "predicted_curve"].sort_values("pretrain_time")
        if len(curve):
            ax_a.plot(curve.pretrain_time, curve.value, color="tab:blue", ls="--", lw=0.8, label="decomposition")
        for metric, look, label in (("advised", ADVISED, "advised"), ("short_list", LISTED, "short list")):
            chosen = _metric(frame, metric).to_numpy() > 0.5
            ax_a.plot(T[chosen & shown], loss.to_numpy()[chosen & shown], label=label, **look)
        style.time_axis(ax_a, "pre-training loss (log perplexity, nats)")
        ax_a.set_xlabel("pre-training tokens")
        what = f"lr {planned.lr:g} x {planned.steps:g} steps"
        style.title(ax_a, "a", "Predicted loss after fine-tuning", what)

        excess = _metric(frame, "gaussian_excess")
        green, blue = dict(color="tab:green", marker="s"), dict(color="tab:blue", marker="o", ls="--")
        ax_b.plot(T[shown], excess.to_numpy()[shown], ms=3, lw=1.0, label="Gaussian excess (probe)", **green)
        ax_b.plot(T[shown], (loss - base).to_numpy()[shown], ms=3, lw=1.0, label="predicted excess", **blue)
        probe = frame[frame.metric == "probe_excess"]
        for (lr, steps), rows in probe.groupby(["lr", "steps"]):
            ax_b.plot(
                rows.pretrain_time, rows.value, marker="D", ms=4, mfc="none", ls="none",
                label=f"fine-tuning probe:\nlr {lr:g} x {steps:g} steps",
            )  # fmt: skip
        drawn = np.concatenate([excess.to_numpy()[shown], (loss - base).to_numpy()[shown], probe.value.to_numpy()])
        style.time_axis(ax_b, "excess over the base loss (nats)")
        ax_b.set_xlabel("pre-training tokens")
        if np.all(drawn > 0):
            ax_b.set_yscale("log")
        style.title(ax_b, "b", "The probes", "and the excess they predict")
        style.legend(fig)
        return style.save(fig, out_dir, name)
