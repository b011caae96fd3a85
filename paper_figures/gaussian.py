"""Gaussian perturbation (preset ``gaussian``; ``smoke`` is its small version): claims 1 and 2 of
docs/THEORY.md, "What must come out"."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from paper_figures import style


def excess_panel(ax, frame: pd.DataFrame, by: str, colours: dict) -> None:
    """Expected excess L_A under noise vs T, one line per value of ``by``."""
    excess = style.family(style.curve_rows(frame, "gaussian", "excess"), by)
    style.plot_family(ax, excess, colours, style.label_of(by))
    style.time_axis(ax, r"excess loss $\mathbb{E}\,L_A(W+\mathrm{noise}) - L_A(W)$")
    style.fit_y(ax, excess)


def perturbed_panel(ax, frame: pd.DataFrame, by: str, colours: dict) -> None:
    """Perturbed L_A vs T per value of ``by``, the clean L_A, and each curve's stored T*."""
    perturbed = style.family(style.curve_rows(frame, "gaussian", "pretrain_loss"), by)
    t_star = style.stored_inflections(style.inflection_rows(frame, "gaussian"), by)
    style.plot_clean(ax, frame, "pretrain_loss", by, colours)
    style.plot_family(ax, perturbed, colours, style.label_of(by), t_star)
    style.time_axis(ax, r"perturbed pre-training loss $L_A$")
    style.fit_y(ax, perturbed)


def draw(frame: pd.DataFrame, out_dir: Path, name: str = "gaussian") -> list[Path]:
    """(a) expected excess loss under noise of size gamma vs T; (b) perturbed L_A vs T with the clean
    L_A and the stored T* per gamma."""
    colours = style.ordered_colours(style.family(style.curve_rows(frame, "gaussian", "excess"), "gamma"))
    with style.panels(2) as (fig, (ax_a, ax_b)):
        excess_panel(ax_a, frame, "gamma", colours)
        style.title(ax_a, "a", "Excess loss under Gaussian noise", "grows with T: progressive sensitivity")
        perturbed_panel(ax_b, frame, "gamma", colours)
        style.title(ax_b, "b", "Perturbed pre-training loss", r"U-shaped; $T^*$ earlier for larger $\gamma$")
        style.legend(fig, title=r"Gaussian noise of size $\gamma$", extra=[style.inflection_handle()])
        return style.save(fig, out_dir, name)
