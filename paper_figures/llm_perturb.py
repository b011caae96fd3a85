"""Gaussian perturbation of real LLM checkpoints (``ovt llm perturb``, preset ``llm_perturb``): the
LLM test of claims 1 and 2 of docs/THEORY.md, "What must come out".

The store holds, per checkpoint (``pretrain_time`` = its pre-training tokens), the base perplexity
(``modification='none'``) and one perplexity per Gaussian draw (``modification='gaussian'``, ``gamma``,
``seed`` = draw). The figure draws the mean over draws with its standard error (descriptive
statistics, nothing more); T* is only ever a stored ``inflection`` row, and without such rows no T*
is marked. The helpers for a tokens axis and per-seed statistics are shared with ``llm_finetune``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from paper_figures import style
from rundir.tokens import human_tokens

TOKENS_LABEL = "pre-training tokens"
BASE = dict(color="black", lw=1.0, zorder=4)
ERRORBAR = dict(capsize=1.5, elinewidth=0.7, capthick=0.7, ms=2.5, marker="o")


def tokens_tick(tokens: float, _pos=None) -> str:
    """Tick label of a token count (a matplotlib FuncFormatter): ``2e9 -> '2B'``, ``3e5 -> '300K'``."""
    return human_tokens(tokens)


def tokens_axis(ax, ylabel: str) -> None:
    """Log x axis of pre-training tokens, labelled 1M, 10M, 1B, ...; the 2 and 5 in between are
    labelled too when the panel spans less than two decades."""
    ax.set_xscale("log")
    ax.set_xlabel(TOKENS_LABEL)
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_formatter(FuncFormatter(tokens_tick))
    lo, hi = ax.get_xlim()
    if hi / lo < 100:
        ax.xaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
        ax.xaxis.set_minor_formatter(FuncFormatter(tokens_tick))
    else:
        ax.xaxis.set_minor_formatter(NullFormatter())


def on_log_axis(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The frame without checkpoints at 0 tokens (step 0), which a log axis cannot show, and their
    names, for the legend to say they were left out. Inflection rows (no ``pretrain_time``) stay."""
    at_zero = (frame.checkpoint != "inflection") & ~(frame.pretrain_time > 0)
    return frame[~at_zero], sorted(frame.checkpoint[at_zero].unique())


def one_setup(frame: pd.DataFrame) -> str:
    """The single model (``setup``) of the frame; several would be drawn as one curve, so refuse them."""
    setups = sorted(frame.setup.dropna().unique())
    if len(setups) != 1:
        raise ValueError(f"an LLM figure draws one model; the frame holds setup={setups}")
    return setups[0]


def seed_stats(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tokens, mean, standard error) over seeds of one curve, sorted by tokens. Refuses a curve that
    holds one seed twice at one token count (two checkpoints with one count would be averaged) or a
    different set of seeds at some token count (the mean would change meaning along the curve)."""
    twice = rows.duplicated(["pretrain_time", "seed"], keep=False)
    if twice.any():
        raise ValueError(f"checkpoints {sorted(rows.checkpoint[twice].unique())} share a token count and a seed")
    per_t = rows.groupby("pretrain_time")
    seeds = per_t.seed.agg(lambda s: tuple(sorted(s)))
    if seeds.nunique() != 1:
        raise ValueError(f"not every checkpoint holds the same seeds: {seeds.to_dict()}")
    stats = per_t.value.agg(["mean", "sem"])  # sem: std (ddof 1) / sqrt(n); NaN for one seed
    return stats.index.to_numpy(float), stats["mean"].to_numpy(float), stats["sem"].to_numpy(float)


def seed_family(rows: pd.DataFrame, by: str) -> dict:
    """{value of ``by``: (tokens, mean, s.e.)}, values in increasing order."""
    return {value: seed_stats(g) for value, g in rows.groupby(style.keys(rows, by), sort=True)}


def plot_errorbars(ax, stats: dict, colours: dict, label=None) -> dict:
    """Mean with s.e. bars per entry of ``stats``; returns {value: (tokens, mean)} for T* and y limits."""
    for value, (T, mean, se) in stats.items():
        ax.errorbar(
            T,
            mean,
            yerr=np.nan_to_num(se),
            color=colours[value],
            label=label(value) if label else None,
            zorder=3,
            **ERRORBAR,
        )
    return {value: (T, mean) for value, (T, mean, _) in stats.items()}


def base_curve(frame: pd.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, value) of the unmodified checkpoints' ``metric``."""
    return style.curve(style.curve_rows(frame, "none", metric))


def stored_t_star(frame: pd.DataFrame, modification: str, by: str, **equal) -> dict:
    """{value of ``by``: stored T*} from ``checkpoint == metric == 'inflection'`` rows; {} without them."""
    rows = style.inflection_rows(frame, modification, metric="inflection", **equal)
    return style.stored_inflections(rows, by) if by in rows else {}


def mark_stored(ax, curves: dict, t_star: dict, colours: dict) -> None:
    """Each curve's stored T* (where one is stored and finite), placed on the curve's finite points: a
    diverged run's NaN would otherwise swallow a marker next to it."""
    for value, (T, y) in curves.items():
        finite = np.isfinite(y)
        if finite.any():
            style.mark_inflection(ax, T[finite], y[finite], t_star.get(value, np.nan), colours[value])


def fit_change_y(ax, curves: dict) -> None:
    """Y axis of a difference: ``style.fit_y`` (log where the values are positive and span more than
    LOG_SPAN), but symmetric-log where some value is not positive and the largest |value| is more than
    LOG_SPAN times the typical one, so that near-zero curves stay readable beside a large one."""
    ys = np.concatenate([y[np.isfinite(y)] for _, y in curves.values()])
    size = np.abs(ys[ys != 0])
    if (ys > 0).all() or size.size == 0 or size.max() <= style.LOG_SPAN * np.median(size):
        style.fit_y(ax, curves)
        return
    linthresh = 10.0 ** np.floor(np.log10(max(np.percentile(size, 25), size.max() * 1e-4)))
    ax.set_yscale("symlog", linthresh=linthresh, linscale=1.0)
    ax.set_ylim(min(ys.min() * 1.5, -linthresh), ys.max() * 1.5)


def change_panel(ax, frame: pd.DataFrame, colours: dict) -> None:
    """Perturbed minus base perplexity of the same checkpoint vs tokens, mean +- s.e. over draws."""
    T_base, base = base_curve(frame, "perplexity")
    rows = style.curve_rows(frame, "gaussian", "perplexity")
    missing = sorted(set(rows.pretrain_time) - set(T_base))
    if missing:
        raise ValueError(f"perturbed checkpoints at tokens {missing} have no base perplexity")
    change = rows.assign(value=rows.value - rows.pretrain_time.map(dict(zip(T_base, base))))
    drawn = plot_errorbars(ax, seed_family(change, "gamma"), colours, style.label_of("gamma"))
    tokens_axis(ax, "perplexity increase under noise\n(perturbed $-$ base)")
    fit_change_y(ax, drawn)
    if ax.get_yscale() != "log":
        ax.axhline(0.0, color="0.3", lw=0.6, zorder=1)


def perturbed_panel(ax, frame: pd.DataFrame, colours: dict) -> None:
    """Perturbed perplexity vs tokens per gamma (mean +- s.e.), the base perplexity, stored T*."""
    base = base_curve(frame, "perplexity")
    ax.plot(*base, label="base checkpoint\n(no noise)", **BASE)
    drawn = plot_errorbars(ax, seed_family(style.curve_rows(frame, "gaussian", "perplexity"), "gamma"), colours)
    mark_stored(ax, drawn, stored_t_star(frame, "gaussian", "gamma"), colours)
    tokens_axis(ax, "held-out perplexity")
    style.fit_y(ax, {**drawn, "base": base})


def legend_title(setup: str, what: str, left_out: list[str]) -> str:
    note = f"\nnot shown (0 tokens): {', '.join(left_out)}" if left_out else ""
    return f"{setup}\n{what}{note}"


def draw(frame: pd.DataFrame, out_dir: Path, name: str = "llm_perturb") -> list[Path]:
    """(a) perplexity increase under Gaussian noise of size gamma vs pre-training tokens; (b) perturbed
    perplexity per gamma with the base perplexity and, where stored, T* per gamma."""
    setup = one_setup(frame)
    frame, left_out = on_log_axis(frame)
    gaussian = style.curve_rows(frame, "gaussian", "perplexity")
    colours = style.ordered_colours(style.keys(gaussian, "gamma").unique())
    draws = gaussian.seed.nunique()
    has_t_star = bool(np.isfinite(list(stored_t_star(frame, "gaussian", "gamma").values())).any())
    with style.panels(2) as (fig, (ax_a, ax_b)):
        change_panel(ax_a, frame, colours)
        style.title(ax_a, "a", "Perplexity increase under noise", "theory: grows with tokens")
        perturbed_panel(ax_b, frame, colours)
        style.title(ax_b, "b", "Perturbed perplexity", r"theory: U-shaped, $T^*$ earlier for larger $\gamma$")
        spread = f"mean $\\pm$ s.e. over {draws} draws" if draws > 1 else "one draw (no error bars)"
        what = f"Gaussian noise of size $\\gamma$\n{spread}"
        style.legend(
            fig, title=legend_title(setup, what, left_out), extra=[style.inflection_handle()] if has_t_star else []
        )
        return style.save(fig, out_dir, name)
