"""Learning-rate strategies (preset ``tuned_lr``): a fixed lr, an lr that shrinks with T, and the lr
tuned per T for the best L_B after fine-tuning; claim 6 of docs/THEORY.md, "What must come out".

Shrinking rows store lr(T) in ``lr``, which changes along a curve, so a shrinking curve is identified
by the rank of its lr among the shrinking rows at the same T (the policy scales every lr0 by one
factor of T) and named by the lr0 its inflection row stores.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from paper_figures import finetune, style

TUNED = dict(color="black", lw=3.0, alpha=0.3, zorder=2)  # under the fixed curve it coincides with


def shrinking_family(frame: pd.DataFrame, metric: str) -> dict:
    """{lr0: (T, y)} of the shrinking-lr curves."""
    rows = style.curve_rows(frame, "finetune", metric, lr_policy="shrinking")
    if rows.empty:
        return {}
    rank = rows.groupby("pretrain_time").lr.rank(method="dense").astype(int)
    lr0 = sorted(style.keys(style.inflection_rows(frame, "finetune", lr_policy="shrinking"), "lr"))
    if rank.max() != len(lr0):
        raise ValueError(f"{rank.max()} shrinking curves but {len(lr0)} stored lr0 values {lr0}")
    return {lr0[r - 1]: curves for r, curves in style.family(rows.assign(_rank=rank), "_rank").items()}


def stored(frame: pd.DataFrame, policy: str) -> dict:
    return style.stored_inflections(style.inflection_rows(frame, "finetune", lr_policy=policy), "lr")


def policy_panel(ax, frame: pd.DataFrame, metric: str, colours: dict) -> dict:
    """Fixed-lr curves thin, shrinking-lr curves dashed (one colour per lr / lr0), the tuned curve bold;
    stored T* marked on the L_A curves. Returns every curve drawn, for the y limits."""
    marks = metric == "pretrain_loss"
    fixed = style.family(style.curve_rows(frame, "finetune", metric, lr_policy="fixed"), "lr")
    shrinking = shrinking_family(frame, metric)
    style.plot_family(
        ax, fixed, colours, lambda v: f"fixed lr = {v:g}", stored(frame, "fixed") if marks else None, lw=0.9
    )
    style.plot_family(
        ax,
        shrinking,
        colours,
        lambda v: f"shrinking, lr$_0$ = {v:g}",
        stored(frame, "shrinking") if marks else None,
        ls="--",
    )
    drawn = {**{("fixed", k): c for k, c in fixed.items()}, **{("shrinking", k): c for k, c in shrinking.items()}}
    tuned_rows = style.curve_rows(frame, "finetune", metric, lr_policy="tuned")
    if not tuned_rows.empty:
        drawn["tuned"] = tuned = style.curve(tuned_rows)
        ax.plot(*tuned, label="tuned per T (best $L_B$)", **TUNED)
        if marks:
            for t_star in style.marked(style.inflection_rows(frame, "finetune", lr_policy="tuned")):
                style.mark_inflection(ax, *tuned, t_star, "black")
    return drawn


CLAIMS = {  # (panel a, panel b) second title lines, per preset
    "tuned_lr": ("an lr shrinking in T removes the late rise", "the shrinking lr pays for it in $L_B$"),
    "tuned_finite": ("64 noisy samples of B: the tuned lr falls with T", "held-out $L_B$: large lr overfits"),
}


def draw(frame: pd.DataFrame, out_dir: Path, name: str = "tuned_lr", preset: str = "tuned_lr") -> list[Path]:
    """(a) L_A after fine-tuning vs T per lr policy; (b) L_B after fine-tuning, same encoding; the
    panels' claims are ``preset``'s."""
    claim_a, claim_b = CLAIMS[preset]
    fixed = style.family(style.curve_rows(frame, "finetune", "pretrain_loss", lr_policy="fixed"), "lr")
    colours = style.ordered_colours(set(fixed) | set(shrinking_family(frame, "pretrain_loss")))
    with style.panels(2) as (fig, (ax_a, ax_b)):
        drawn = policy_panel(ax_a, frame, "pretrain_loss", colours)
        style.plot_clean(ax_a, frame, "pretrain_loss", "lr", colours)
        style.time_axis(ax_a, r"pre-training loss $L_A$ after fine-tuning")
        style.fit_y(ax_a, drawn)
        style.title(ax_a, "a", "Pre-training loss after fine-tuning", claim_a)
        drawn = policy_panel(ax_b, frame, "finetune_loss", colours)
        style.time_axis(ax_b, r"fine-tuning loss $L_B$ after fine-tuning")
        style.fit_y(ax_b, drawn)
        style.title(ax_b, "b", "In-task loss after fine-tuning", claim_b)
        style.legend(fig, title=finetune.settings(frame, with_lr=False), extra=[style.inflection_handle()])
        return style.save(fig, out_dir, name)
