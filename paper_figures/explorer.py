"""The explorer's figures (``notebooks/explore.py``), drawn from numbers already computed
(``experiments.explore``): nothing here computes a number a reader must trust.

``curves`` (2 x 2, one shared T axis): (a) L_A clean, perturbed and fine-tuned against T with both
T* and the analytic prediction; (b) L_B likewise; (c) the fine-tuned L_A over (T, lr); (d) the
perturbed L_A over (T, gamma), each landscape as loss / its minimum over T - 1 with the global T*
(white) and every local minimum (black dots), the current value dashed. The T* line itself is not in
the figure: the notebook prints it above (``t_star_text``). ``overlay``: one panel per fitted family
of a loaded store, its measured means on the theory's time axis T = kappa x (the store's T) beside
the fitted linear model's lines (``ovt compare``'s fit).

Speed (``benchmarks/explore_speed.py``): drawing was most of a re-render, and most of a draw is text,
laid out and rasterised again on every draw (~1-2 ms a label). ``screen_png`` therefore keeps one
figure per *frame* (the landscapes' axes: their values and T grids) and blits: everything that does
not move with the setup (the landscapes' ticks, labels and titles) is drawn once into a background;
a re-render restores it and draws only the curve panels (their y range moves) and the landscapes'
data. It gives the same pixels as ``png(curves(result))``, the figure drawn whole (``test_explore``
checks it). The figure also has one legend, keys in the landscape titles, one row of T labels, and
the PNG is compressed at zlib level 1.
"""

from __future__ import annotations

import dataclasses
import io

import matplotlib
import matplotlib.image
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullLocator

from paper_figures import style

SCREEN_DPI = 90  # one draw at this dpi is the whole re-render cost of a figure (no layout engine, no tight bbox)
PNG_COMPRESSION = 1  # zlib level: 13 ms against the default 6's 19 ms for this figure, for 10% more bytes
RC = {
    **style.RC,
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 7.5,
    "text.parse_math": False,
    "axes.grid": False,
    "axes.titley": 1.0,  # a fixed title height: no re-measuring of the top ticks for every title
}
# Plain tick labels and no minor ticks on log axes: mathtext labels and minor tick lines were most of a draw.
PLAIN = FuncFormatter(lambda v, _: f"{v:g}")
STYLE = {"none": ("clean", "0.35", "-"), "gaussian": ("perturbed", "C3", "-"), "finetune": ("fine-tuned", "C0", "-")}
PANEL_CURVES = {
    "A": ("pretrain_loss", "perturbed_pretrain_loss", "finetuned_pretrain_loss"),
    "B": ("finetune_loss", "perturbed_finetune_loss", "finetuned_finetune_loss"),
}
# T* marks of panel (a): what -> (label, colour, line style); "predicted" is result.predicted, the others result.t_star.
MARKS = {"gaussian": ("T* perturbed", "C3", ":"), "finetune": ("T* fine-tuned", "C0", ":"),
         "predicted": ("T* predicted", "C3", "--")}  # fmt: skip
# The landscapes' data are drawn above their axes (zorder > the spines' 2.5), in this order, whether the
# figure is drawn whole or blitted: so both give the same pixels.
LANDSCAPE_Z = {"mesh": 3.0, "t_star": 3.1, "minima": 3.2, "predicted": 3.3, "current": 3.4}


def _figure(width: float, height: float, rows: int, cols: int, sharex: bool = False, **spacing):
    """A figure with fixed margins: a layout engine costs more than drawing the panels."""
    fig = Figure(figsize=(width, height), dpi=SCREEN_DPI)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(**{"left": 0.075, "right": 0.98, "bottom": 0.09, "top": 0.9, "wspace": 0.22, **spacing})
    return fig, fig.subplots(rows, cols, squeeze=False, sharex=sharex)


def _log(axis) -> None:
    axis.set_major_locator(LogLocator(numticks=7))
    axis.set_major_formatter(PLAIN)
    axis.set_minor_locator(NullLocator())


def png(fig) -> bytes:
    """The figure as PNG bytes, drawn whole once at ``SCREEN_DPI``."""
    buffer = io.BytesIO()
    with matplotlib.rc_context(RC):
        fig.savefig(buffer, format="png", dpi=SCREEN_DPI, pil_kwargs={"compress_level": PNG_COMPRESSION})
    return buffer.getvalue()


def _fmt(t: float) -> str:
    return f"{t:.4g}" if np.isfinite(t) else "none in range"


def t_star_text(result) -> str:
    """The T* line the explorer prints: both T*, their kinds and the prediction (4 significant digits)."""
    ts, kind = result.t_star, result.kind
    return (
        f"T* perturbed L_A = {_fmt(ts['gaussian'])} ({kind['gaussian']}), "
        f"predicted {_fmt(result.predicted)}; T* fine-tuned L_A = {_fmt(ts['finetune'])} ({kind['finetune']})"
    )


# ------------------------------------------------------------------ the main figure: a frame, then its data


def _has_prediction(land) -> bool:
    return land.predicted is not None and bool(np.isfinite(land.predicted).any())


def _frame_key(result) -> tuple:
    """What fixes a frame: each landscape's name, values and T grid, and whether it shows a prediction."""
    return tuple((land.name, tuple(land.values), tuple(land.T), _has_prediction(land)) for land in result.landscapes)


@dataclasses.dataclass
class _Frame:
    """A figure and the artists a result moves; ``moving`` are those a blitted re-render draws."""

    fig: Figure
    curve_axes: tuple  # the axes of (a) and (b), redrawn whole: their y range moves with the setup
    lines: dict  # (panel, curve name) -> Line2D
    marks: dict  # MARKS' what -> the vertical line of panel (a)
    landscapes: list  # per landscape: {"mesh", "t_star", "minima", "predicted" (if shown), "current"}
    background: object = None  # the blitted figure's static pixels (``screen_png``)

    @property
    def moving(self) -> list:
        data = [a for land in self.landscapes for _, a in sorted(land.items(), key=lambda kv: LANDSCAPE_Z[kv[0]])]
        return [*self.curve_axes, *data]


def _landscape_axes(ax, land, symbol: str, what: str) -> dict:
    """The fixed part of a landscape panel (axes, ticks, title) and its data artists, still empty."""
    z = LANDSCAPE_Z
    mesh = ax.pcolormesh(land.T, land.values, np.ones_like(land.loss), norm=LogNorm(1e-4, 1.0), shading="auto")
    mesh.set_zorder(z["mesh"])
    artists = {
        "mesh": mesh,
        "t_star": ax.plot([], [], color="white", lw=1.2, zorder=z["t_star"])[0],
        "minima": ax.plot([], [], "k.", ms=1.5, zorder=z["minima"])[0],
        "current": ax.axhline(land.values[0], color="0.5", lw=0.8, ls="--", zorder=z["current"]),
    }
    key = "white: global T*; dots: local minima"  # a key, not a legend: a legend would lie under the data
    if _has_prediction(land):
        artists["predicted"] = ax.plot([], [], "--", color="C1", lw=1.2, zorder=z["predicted"])[0]
        key += "; orange: predicted"
    # y: the mesh's cell edges, as pcolormesh autoscales (fixed: a current value beyond them is not shown).
    ax.set(yscale="log", xlabel=style.TIME_LABEL, ylabel=symbol, ylim=mesh.get_datalim(ax.transData).intervaly)
    ax.yaxis.set_major_locator(FixedLocator(land.values[:: max(len(land.values) // 5, 1)]))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.2g}"))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.set_title(f"{what}: loss / min_T - 1\n{key}", loc="left")
    return artists


def _new_frame(result) -> _Frame:
    # One T axis for all four panels (the explorer's T range), labelled on the bottom row only.
    fig, ax = _figure(10.0, 7.0, 2, 2, sharex=True, hspace=0.2, top=0.96, bottom=0.075)
    lines, marks = {}, {}
    for a, task in ((ax[0, 0], "A"), (ax[0, 1], "B")):
        for (label, colour, line), name in zip(STYLE.values(), PANEL_CURVES[task]):
            lines[task, name] = a.plot([], [], line, color=colour, label=label)[0]
        a.set_ylabel(f"L_{task}")
        a.tick_params(labelbottom=False)
    for what, (label, colour, line) in MARKS.items():
        marks[what] = ax[0, 0].axvline(1.0, color=colour, lw=0.8, ls=line, label=label)
    ax[0, 0].set_title("(a) pre-training task A", loc="left")
    ax[0, 1].set_title("(b) fine-tuning task B (lines as in (a))", loc="left")
    lr, gamma = result.landscapes
    landscapes = [
        _landscape_axes(ax[1, 0], lr, "fine-tuning lr", "(c) fine-tuned L_A"),
        _landscape_axes(ax[1, 1], gamma, "gamma", "(d) perturbed L_A"),
    ]
    ax[1, 0].set(xscale="log", xlim=(result.T[0], result.T[-1]))
    _log(ax[1, 0].xaxis)
    return _Frame(fig, (ax[0, 0], ax[0, 1]), lines, marks, landscapes)


def _y_range(curves: list[np.ndarray]) -> tuple[float, float]:
    """Framed on the modified curves: a clean L_A falling by decades simply leaves the panel (as in
    style.fit_y); all curves if those are not finite anywhere, (0, 1) if nothing is."""
    for chosen in (curves[1:], curves):
        finite = np.concatenate([c[np.isfinite(c)] for c in chosen])
        if finite.size:
            lo, hi = finite.min(), finite.max()
            pad = 0.08 * (hi - lo) or 0.05 * abs(hi) or 1.0
            return lo - pad, hi + pad
    return 0.0, 1.0


def _show(frame: _Frame, result) -> None:
    """Put ``result``'s numbers into the frame's artists (every one a result moves)."""
    for task, a in zip("AB", frame.curve_axes):
        names = PANEL_CURVES[task]
        for name in names:
            frame.lines[task, name].set_data(result.T, result.curves[name])
        a.set_ylim(*_y_range([result.curves[n] for n in names]))
    at = {**result.t_star, "predicted": result.predicted}
    shown = {**{m: result.kind[m] == "interior" for m in ("gaussian", "finetune")}, "predicted": True}
    for what, line in frame.marks.items():
        line.set_xdata([at[what]] * 2)
        line.set_visible(bool(shown[what] and np.isfinite(at[what])))
    a = frame.curve_axes[0]
    handles = [*(frame.lines["A", n] for n in PANEL_CURVES["A"]), *(m for m in frame.marks.values() if m.get_visible())]
    a.legend(handles=handles, loc="best")  # the one legend: (b) draws the same lines in the same colours
    for artists, land, current in zip(frame.landscapes, result.landscapes, (result.setup.lr, result.setup.gamma)):
        relative = land.loss / np.nanmin(land.loss, axis=1, keepdims=True) - 1 + 1e-6
        artists["mesh"].set_array(relative)
        artists["mesh"].set_clim(1e-4, max(float(np.nanmax(relative)), 1e-3))
        artists["t_star"].set_data(land.t_star, land.values)
        v, t = np.array(land.minima).reshape(-1, 2).T
        artists["minima"].set_data(t, v)
        if "predicted" in artists:
            artists["predicted"].set_data(land.predicted, land.values)
        artists["current"].set_ydata([current] * 2)


def curves(result):
    """The explorer's main figure (module docstring) for one ``experiments.explore.Result``, a new
    figure to draw whole (``png``) or save at any dpi."""
    with matplotlib.rc_context(RC):
        frame = _new_frame(result)
        _show(frame, result)
        return frame.fig


_SCREENS: dict[tuple, _Frame] = {}  # one per frame key: aligned or GD landscapes, with or without a prediction


def screen_png(result) -> bytes:
    """``png(curves(result))``, blitted on a kept figure (module docstring): what a control change redraws."""
    with matplotlib.rc_context(RC):
        key = _frame_key(result)
        frame = _SCREENS.get(key)
        if frame is None:
            frame = _new_frame(result)
            for artist in frame.moving:
                artist.set_animated(True)  # left out of a full draw: the background is everything else
            frame.fig.canvas.draw()
            frame.background = frame.fig.canvas.copy_from_bbox(frame.fig.bbox)
            _SCREENS[key] = frame
        _show(frame, result)
        canvas = frame.fig.canvas
        canvas.restore_region(frame.background)
        for artist in frame.moving:
            frame.fig.draw_artist(artist)
        buffer = io.BytesIO()
        rgba = np.asarray(canvas.buffer_rgba())
        matplotlib.image.imsave(buffer, rgba, format="png", pil_kwargs={"compress_level": PNG_COMPRESSION})
        return buffer.getvalue()


SHOWN_MODEL = "linear + link"  # the model the overlay draws: the theory, with its link to log-loss


def overlay(fits: list[dict], model: str = SHOWN_MODEL):
    """One panel per fitted family of a store: measured means (dots) against T_flow = kappa x T, and
    ``model``'s fitted lines (``ovt compare``'s curves): base, and base + excess per size, drawn only
    inside the measured range (padded by a quarter of it) so a model that runs away stays on the
    axis; the title says which model is drawn and which one predicts held-out data best."""
    with matplotlib.rc_context(RC):
        return _overlay(fits, model)


def _overlay(fits: list[dict], model: str):
    n = max(len(fits), 1)
    fig, ax = _figure(10.0, 3.6, 1, n, bottom=0.15, top=0.86)
    for a, entry in zip(ax[0], fits):
        kappa = entry["linear_model"]["params"]["kappa"]
        observed, lines = entry["observed"], entry["curves"]
        drawn = lines.get("models", {}).get(model, {"base": [], "excess": []})
        T = np.asarray(observed["T"], float) * kappa
        grid = np.asarray(lines["T"], float) * kappa
        measured = [_floats(observed["base"]["mean"])] + [_floats(m["mean"]) for m in observed["modified"]]
        lo, hi = np.nanmin(np.concatenate(measured)), np.nanmax(np.concatenate(measured))
        shown = (lo - 0.25 * (hi - lo), hi + 0.25 * (hi - lo))

        base = _floats(drawn["base"]) if drawn["base"] else np.full(grid.size, np.nan)
        a.plot(T, measured[0], "o", color="0.35", ms=3, label="measured base")
        a.plot(grid, _inside(base, shown), "-", color="0.35", lw=0.9)
        colours = style.ordered_colours(entry["sizes"])
        excesses = drawn["excess"] or [[None] * grid.size] * len(observed["modified"])
        for modified, mean, excess in zip(observed["modified"], measured[1:], excesses):
            colour = colours[modified["size"]]
            a.plot(T, mean, "o", color=colour, ms=3, label=f"{entry['size']} = {modified['size']:g}")
            a.plot(grid, _inside(base + _floats(excess), shown), "-", color=colour, lw=0.9)
        a.set_ylim(*shown)
        a.set(xscale="log", xlabel=f"T = kappa x {entry['source']} time (kappa = {kappa:.3g})", ylabel=entry["loss"])
        _log(a.xaxis)
        best = entry.get("models", {}).get("best")
        a.set_title(f"{entry['name']}\nlines: {model}" + (f" (best held-out: {best})" if best else ""), loc="left")
        a.legend(loc="best")
    if not fits:
        ax[0, 0].text(0.5, 0.5, "no family to fit in this store", ha="center", transform=ax[0, 0].transAxes)
    return fig


def _inside(values: np.ndarray, shown: tuple[float, float]) -> np.ndarray:
    """``values`` with NaN outside the panel's range ``shown``: a line that leaves it is cut, not clipped."""
    return np.where((values >= shown[0]) & (values <= shown[1]), values, np.nan)


def _floats(values) -> np.ndarray:
    """A JSON list (None for a missing value) as floats (NaN)."""
    return np.array([np.nan if v is None else v for v in values], float)
