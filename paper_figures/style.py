"""The shared look of the paper figures, and the row selection every figure uses.

A figure module selects rows of a result store (docs/ARCHITECTURE.md, "Result store") and draws them with
the helpers here: paper-column sizes, one font scale, a log pre-training-time axis, an ordered colour
sequence for the swept parameter, and the stored T* marked on its curve. Nothing here computes a
number a reader must trust: T* is always the stored ``inflection`` row, and only an "interior" one
(its ``t_star_kind``) is marked: never a flat curve's minimum, nor one at an end of the range.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

WIDTH = 6.75  # inches: a two-column paper's full text width
HEIGHT = 2.6
DPI = 200
TIME_LABEL = "pre-training time T (flow time)"
CLEAN = dict(color="0.3", lw=1.0, zorder=1)
RC = {
    "font.size": 7.5,
    "axes.titlesize": 7.5,
    "axes.labelsize": 7.5,
    "xtick.labelsize": 6.5,
    "ytick.labelsize": 6.5,
    "legend.fontsize": 6.5,
    "legend.title_fontsize": 6.5,
    "lines.linewidth": 1.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "grid.linewidth": 0.5,
    "legend.frameon": False,
    "pdf.fonttype": 42,
}
SYMBOLS = {
    "gamma": r"$\gamma$",
    "reg": r"$\lambda$",
    "theta": r"$\theta$",
    "shrink_power": r"$q$",
    "weight_decay": r"$\lambda_{\mathrm{wd}}$",
    "replay": r"$r$",
    "sam_rho": r"$\rho$",
    "anneal_fraction": r"$f$",
}
LOG_SPAN = 20.0  # max/min above which a panel's y axis goes logarithmic
KIND = "t_star_kind"  # the store column of an inflection row's kind (rundir.store.OPTIONAL_COLUMNS)
MARKED = ("interior", "")  # kinds whose T* is marked; "" = a store written before kinds (its T* is NaN or interior)


@contextlib.contextmanager
def panels(n: int, width: float = WIDTH, height: float = HEIGHT, rows: int = 1) -> Iterator[tuple[Figure, np.ndarray]]:
    """A figure of ``n`` panels, side by side in ``rows`` rows (``height`` each; a last row's empty
    places left blank), the house style active while it is drawn and saved. Built on the Agg canvas
    without pyplot, so no global figure state is touched."""
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(width, height * rows), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(rows, -(-n // rows), squeeze=False).ravel()
        for ax in axes[n:]:
            ax.set_axis_off()
        yield fig, axes[:n]


def save(fig: Figure, out_dir: Path | str, name: str) -> list[Path]:
    """Write NAME.png (dpi 200) and NAME.pdf into ``out_dir``; return both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    fig.get_layout_engine().execute(fig)  # once, not once per file: the layout is the costly part
    fig.set_layout_engine("none")
    for path in paths:
        fig.savefig(path, dpi=DPI)
    return paths


def title(ax, letter: str, what: str, claim: str) -> None:
    """Panel title: what is plotted, then the claim it shows."""
    ax.set_title(f"({letter}) {what}\n{claim}", loc="left")


def time_axis(ax, ylabel: str) -> None:
    ax.set_xscale("log")
    ax.set_xlabel(TIME_LABEL)
    ax.set_ylabel(ylabel)


def fit_y(ax, curves: dict) -> None:
    """Y scale and limits that frame ``curves``: logarithmic where they span more than LOG_SPAN, else
    linear. A clean L_A falling by many decades is left out of ``curves`` and simply leaves the panel."""
    ys = np.concatenate([y[np.isfinite(y)] for _, y in curves.values()])
    lo, hi = ys.min(), ys.max()
    if lo > 0 and hi / lo > LOG_SPAN:
        ax.set_yscale("log")
        ax.set_ylim(lo / 1.5, hi * 1.5)
    else:
        pad = 0.06 * (hi - lo) or 0.05 * abs(hi) or 1.0
        ax.set_ylim(lo - pad, hi + pad)


def ordered_colours(values: Sequence) -> dict:
    """viridis from light (smallest value) to dark (largest), skipping its palest yellow."""
    values = sorted(values)
    cmap = matplotlib.colormaps["viridis"]
    positions = np.linspace(0.85, 0.05, len(values)) if len(values) > 1 else [0.45]
    return {v: cmap(p) for v, p in zip(values, positions)}


def label_of(field: str) -> Callable[[float | str], str]:
    symbol = SYMBOLS.get(field, field)
    return lambda v: f"{symbol} = {v:g}" if isinstance(v, (int, float, np.number)) else f"{symbol} = {v}"


def curve_rows(frame: pd.DataFrame, modification: str, metric: str, **equal) -> pd.DataFrame:
    """Rows of a (modification, metric) curve family on the time grid, filtered by ``column=value``."""
    keep = (frame.modification == modification) & (frame.metric == metric) & (frame.checkpoint != "inflection")
    for column, value in equal.items():
        keep &= frame[column] == value
    return frame[keep]


def inflection_rows(frame: pd.DataFrame, modification: str, **equal) -> pd.DataFrame:
    """The stored T* rows of one modification, filtered by ``column=value``."""
    keep = (frame.modification == modification) & (frame.checkpoint == "inflection")
    for column, value in equal.items():
        keep &= frame[column] == value
    return frame[keep]


def keys(rows: pd.DataFrame, by: str) -> pd.Series:
    """The swept values of ``by``, floats to 6 significant digits: curve rows may hold a float32 copy
    (0.004999999888) of the value an inflection row holds exactly (0.005)."""
    column = rows[by]
    return column.map(lambda v: float(f"{v:.6g}")) if pd.api.types.is_float_dtype(column) else column


def curve(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(T, y) of one curve, sorted by T. Raises if it holds two rows at one T: the selection then mixes
    curves (another swept column, or several seeds) and drawing it would mislead."""
    if rows.pretrain_time.duplicated().any():
        mixed = [
            c
            for c in rows.columns
            if c not in ("value", "checkpoint", "pretrain_time") and rows[c].nunique(dropna=False) > 1
        ]
        raise ValueError(f"a curve holds several rows per T; its rows differ in {mixed}")
    rows = rows.sort_values("pretrain_time")
    return rows.pretrain_time.to_numpy(float), rows.value.to_numpy(float)


def family(rows: pd.DataFrame, by: str) -> dict:
    """{value of ``by``: (T, y)}, values in increasing order."""
    return {value: curve(g) for value, g in rows.groupby(keys(rows, by), sort=True)}


def marked(rows: pd.DataFrame) -> pd.Series:
    """The stored T* of each inflection row that a figure marks: the value of an "interior" row, NaN
    for every other kind (flat, below or above the range, none). Rows without a kind (stores written
    before ``t_star_kind``) keep their value, which was NaN for everything but an interior minimum."""
    kind = rows[KIND].fillna("") if KIND in rows else pd.Series("", index=rows.index)
    return rows.value.where(kind.isin(MARKED))


def stored_inflections(rows: pd.DataFrame, by: str) -> dict:
    """{value of ``by``: stored T* to mark} from inflection rows (``marked``: NaN = none in range)."""
    return {value: float(v) for value, v in zip(keys(rows, by), marked(rows))}


def mark_inflection(ax, T: np.ndarray, y: np.ndarray, t_star: float, colour) -> None:
    """A marker on the curve at T* (placed by interpolation in log T) and a thin dotted vertical line."""
    if not np.isfinite(t_star):
        return
    y_star = np.interp(np.log(t_star), np.log(T), y)
    ax.axvline(t_star, color=colour, lw=0.7, ls=":", zorder=2)
    ax.plot([t_star], [y_star], "o", ms=4.5, mfc=colour, mec="black", mew=0.6, zorder=4)


def plot_family(
    ax,
    curves: dict,
    colours: dict,
    label: Callable[[float | str], str] | None = None,
    t_star: dict | None = None,
    **line,
) -> None:
    """One line per entry of ``curves`` in its colour; T* marked where ``t_star`` gives one."""
    for value, (T, y) in curves.items():
        ax.plot(T, y, color=colours[value], label=label(value) if label else None, **{"zorder": 3, **line})
        if t_star is not None:
            mark_inflection(ax, T, y, t_star.get(value, np.nan), colours[value])


def plot_clean(ax, frame: pd.DataFrame, metric: str, by: str, colours: dict) -> dict:
    """The unmodified model's ``metric``: one grey line, or, where it depends on the swept field ``by``
    (depth; B's angle for L_B), one thin dashed line per value in that value's colour. Returns the
    curves drawn."""
    rows = curve_rows(frame, "none", metric)
    curves = family(rows, by) if by in rows and rows[by].notna().any() else {None: curve(rows)}
    first = next(iter(curves.values()))
    if all(np.array_equal(T, first[0]) and np.array_equal(y, first[1]) for T, y in curves.values()):
        ax.plot(*first, label="clean (unmodified)", **CLEAN)
        return {None: first}
    plot_family(ax, curves, colours, ls="--", lw=0.8, zorder=1)
    ax.plot([], [], color=CLEAN["color"], ls="--", lw=0.8, label="clean (unmodified), dashed")
    return curves


def inflection_handle() -> Line2D:
    return Line2D(
        [],
        [],
        color="black",
        lw=0.7,
        ls=":",
        marker="o",
        ms=4.5,
        mfc="white",
        mec="black",
        mew=0.6,
        label=r"stored $T^*$ (minimum)",
    )


def legend(
    fig: Figure, title: str | None = None, extra: Sequence = (), below: bool = False, ncols: int | None = None
) -> None:
    """One legend for the whole figure, right of the panels (or below them, in ``ncols`` columns: all
    in one row by default): every labelled line once, then ``extra``."""
    seen = {}
    for ax in fig.axes:
        for handle, text in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(text, handle)
    handles = [*seen.values(), *extra]
    if below:
        fig.legend(handles=handles, title=title, loc="outside lower center", ncols=ncols or len(handles))
    else:
        fig.legend(handles=handles, title=title, loc="outside right center", alignment="left")
