"""Post-training quantization (preset ``quantization``): L_A of the default setup's W(T) after symmetric
per-channel b-bit round-to-nearest and, exactly in expectation, after stochastic rounding, and the
stored T* of each curve against the bit width."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from paper_figures import style

ROUNDINGS = {
    "nearest": ("round-to-nearest", "o", "#3b528b"),
    "stochastic": ("stochastic rounding (expected)", "s", "#e6a117"),
}


def quantized_panel(ax, frame: pd.DataFrame, rounding: str, colours: dict) -> None:
    """L_A after ``rounding`` vs T per bit width, the clean L_A, and each curve's stored T*."""
    curves = style.family(style.curve_rows(frame, "quantization", "pretrain_loss", rounding=rounding), "bits")
    t_star = style.stored_inflections(style.inflection_rows(frame, "quantization", rounding=rounding), "bits")
    style.plot_clean(ax, frame, "pretrain_loss", "bits", colours)
    style.plot_family(ax, curves, colours, style.label_of("bits"), t_star)
    style.time_axis(ax, r"$L_A$ after quantization")
    ax.set_xlabel("pre-training time T")
    style.fit_y(ax, curves)


def t_star_panel(ax, frame: pd.DataFrame) -> None:
    """Stored T* against the bit width per rounding; the widths without an interior T* are listed by
    their kind (flat, below, above, none) in the panel, in the rounding's colour."""
    notes = []
    for rounding, (label, marker, colour) in ROUNDINGS.items():
        rows = style.inflection_rows(frame, "quantization", rounding=rounding).sort_values("bits")
        t_star = style.marked(rows)
        ax.plot(rows.bits, t_star, marker=marker, color=colour, ms=4.5, label=label, zorder=3)
        missing = rows[t_star.isna()]
        for kind, group in missing.groupby(missing[style.KIND].replace("", "none")):
            notes.append((f"{kind}: {', '.join(f'{b:g}' for b in group.bits)} bits", colour))
    for k, (text, colour) in enumerate(notes):  # in the rounding's colour, right of the widths with a T*
        ax.text(0.97, 0.04 + 0.08 * k, text, transform=ax.transAxes, color=colour, ha="right", va="bottom")
    ax.set_yscale("log")
    ax.set_xlabel("bits per weight")
    ax.set_ylabel(r"$T^*$ (flow time)")
    ax.set_xticks(sorted(frame.bits.dropna().unique()))


def draw(frame: pd.DataFrame, out_dir: Path, name: str = "quantization") -> list[Path]:
    """(a) L_A after round-to-nearest, (b) expected L_A after stochastic rounding, each vs T per bit
    width with the clean L_A; (c) T* against the bit width."""
    colours = style.ordered_colours(frame.bits.dropna().unique())
    with style.panels(3) as (fig, (ax_a, ax_b, ax_c)):
        quantized_panel(ax_a, frame, "nearest", colours)
        style.title(ax_a, "a", "Round-to-nearest", "computed directly")
        quantized_panel(ax_b, frame, "stochastic", colours)
        style.title(ax_b, "b", "Stochastic rounding", "exact expectation")
        t_star_panel(ax_c, frame)
        style.title(ax_c, "c", r"$T^*$ against the bit width", "stored, per rounding")
        style.legend(fig, title="symmetric b-bit grid", extra=[style.inflection_handle()])
        return style.save(fig, out_dir, name)
