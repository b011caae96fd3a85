"""Overlay of theory fits on measured curves (``ovt compare``).

Each figure draws one family entry of ``fits.json`` and nothing else: the measured means with their
standard errors, the fitted power laws and the linear model's predictions as ``compare`` evaluated
them on a dense grid, and observed vs predicted T*. The optional anchors figure places the paper's
published OLMo-1B numbers on OLMo-scale token axes, with any OLMo-scale family among the fits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, NullFormatter, NullLocator

from paper_figures import llm_perturb, style
from rundir.tokens import human_tokens

MEASURED = dict(capsize=1.2, elinewidth=0.6, capthick=0.6, ms=2.2, marker="o", ls="none", zorder=3)
FIT = dict(lw=1.1, zorder=2)
LINEAR = dict(lw=0.9, ls="--", zorder=2)
BASE_COLOUR = "black"
OUTSIDE = dict(color="0.5", alpha=0.12, lw=0, zorder=0)
# Springer et al. (ICML 2025), OLMo-1B: degradation sets in beyond ~2.5T pre-training tokens; the 3T
# checkpoint is about 2-3% worse than the 2.3T one after instruction tuning.
OLMO_1B = {"onset_tokens": 2.5e12, "reference_tokens": 2.3e12, "late_tokens": 3.0e12, "late_worse_percent": (2.0, 3.0)}
OLMO_SCALE = 1e11  # tokens: a family reaching this is drawn on the anchors' axes


def _array(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], float)


def _measured(ax, T, mean, se, colour) -> None:
    """Measured means; standard-error bars only where several seeds give one."""
    se = _array(se)
    if np.isfinite(se).any():
        ax.errorbar(T, mean, yerr=np.nan_to_num(se), color=colour, **MEASURED)
    else:
        ax.plot(T, mean, marker=MEASURED["marker"], ms=MEASURED["ms"], ls="none", color=colour, zorder=3)


def _in_window(entry: dict, grid: np.ndarray) -> np.ndarray:
    """The fitted power laws are drawn over the fit window only: they describe nothing outside it."""
    return (grid >= entry["window"]["T_min"]) & (grid <= entry["window"]["T_max"])


def _axis(ax, entry: dict, ylabel: str) -> None:
    if entry["source"] == "llm":
        llm_perturb.tokens_axis(ax, ylabel)
        ax.xaxis.set_minor_formatter(NullFormatter())  # a third of the width: 2 and 5 labels collide
    else:
        style.time_axis(ax, ylabel)


def _shade_outside_window(ax, entry: dict) -> None:
    lo, hi = entry["T_range"]
    w = entry["window"]
    if w["T_min"] > lo:
        ax.axvspan(lo / 1.3, w["T_min"], **OUTSIDE)
    if w["T_max"] < hi:
        ax.axvspan(w["T_max"], hi * 1.3, **OUTSIDE)
    ax.set_xlim(lo / 1.3, hi * 1.3)


def _size_label(entry: dict):
    symbol = style.SYMBOLS["gamma"] if entry["modification"] == "gaussian" else r"lr$\times$steps"
    return lambda m: f"{symbol} = {m:g}"


def loss_panel(ax, entry: dict, colours: dict) -> None:
    """Base and modified loss vs T: measured (mean +- s.e.), power-law fit (solid), linear model (dashed)."""
    obs, lines = entry["observed"], entry["curves"]
    T, grid = np.asarray(obs["T"]), np.asarray(lines["T"])
    inside = (T >= entry["window"]["T_min"]) & (T <= entry["window"]["T_max"])
    base = _array(obs["base"]["mean"])
    _measured(ax, T, base, obs["base"]["se"], BASE_COLOUR)
    w = _in_window(entry, grid)
    fit_base = _array(lines["decomposition"]["base"])
    linear_base = _array(lines["linear_model"]["base"])
    ax.plot(grid[w], fit_base[w], color=BASE_COLOUR, **FIT)
    ax.plot(grid, linear_base, color=BASE_COLOUR, **LINEAR)
    framed = {"base": (T[inside], base[inside])}
    for i, series in enumerate(obs["modified"]):
        colour = colours[series["size"]]
        mean = _array(series["mean"])
        _measured(ax, T, mean, series["se"], colour)
        ax.plot(grid[w], (fit_base + _array(lines["decomposition"]["excess"][i]))[w], color=colour, **FIT)
        ax.plot(grid, linear_base + _array(lines["linear_model"]["excess"][i]), color=colour, **LINEAR)
        framed[series["size"]] = (T, mean)
    _shade_outside_window(ax, entry)
    _axis(ax, entry, "loss: " + entry["loss"])
    style.fit_y(ax, framed)


def excess_panel(ax, entry: dict, colours: dict) -> None:
    """Excess of the modified over the base loss vs T (log-log), with the fit and the linear model."""
    obs, lines = entry["observed"], entry["curves"]
    T, grid = np.asarray(obs["T"]), np.asarray(lines["T"])
    framed = {}
    w = _in_window(entry, grid)
    for i, series in enumerate(obs["excess"]):
        colour = colours[series["size"]]
        mean, se = _array(series["mean"]), _array(series["se"])
        positive = mean > 0  # a log axis: a non-positive mean excess is left out
        _measured(ax, T[positive], mean[positive], np.minimum(se[positive], 0.9 * mean[positive]), colour)
        ax.plot(grid[w], _array(lines["decomposition"]["excess"][i])[w], color=colour, **FIT)
        predicted = _array(lines["linear_model"]["excess"][i])
        ax.plot(grid, np.where(predicted > 0, predicted, np.nan), color=colour, **LINEAR)
        framed[series["size"]] = (T[positive], mean[positive])
    _shade_outside_window(ax, entry)
    _axis(ax, entry, "excess over the base\n(modified $-$ base loss)")
    ax.set_yscale("log")
    ys = np.concatenate([y for _, y in framed.values()])
    ax.set_ylim(ys.min() / 2, ys.max() * 2)


def t_star_panel(ax, entry: dict, colours: dict) -> None:
    """T* vs size: observed (circles), the closed form of the all-sizes fit (grey line), held-out
    predictions (squares), the linear model (triangles); bars: 95% t intervals where there are draws
    (none for a deterministic curve, an open end drawn to the panel's bound)."""
    sizes = np.asarray(entry["sizes"], float)
    t_lo, t_hi = entry["T_range"]
    line = entry["curves"]["t_star_line"]
    t_line = _array(line["t_star"])
    # At most three decades beyond the measured checkpoints: further out a T* says only "never here".
    bounds = (t_lo / 1e3, t_hi * 1e3)
    shown = (t_line > bounds[0]) & (t_line < bounds[1])
    ax.plot(line["size"], np.where(shown, t_line, np.nan), color="0.45", lw=1.0, zorder=1)
    held = {row["size"]: row for row in entry["held_out"].get("per_size", [])}
    linear = {row["size"]: row for row in entry["linear_model"].get("per_size", [])}
    shift = np.exp(0.04 * np.log(sizes.max() / sizes.min()))  # side by side at one size
    drawn = []
    for row in entry["t_star"]:
        m, colour = row["size"], colours[row["size"]]
        _point(ax, m / shift, row["observed"], "o", colour, drawn, bounds)
        if m in held:
            _point(ax, m * shift, held[m]["predicted"], "s", colour, drawn, bounds, hollow=True)
        t_lin = linear.get(m, {}).get("t_star_predicted")
        if t_lin is not None and bounds[0] < t_lin < bounds[1]:
            ax.plot([m], [t_lin], "^", ms=4, mfc=colour, mec=colour, mew=0.8, zorder=4)
            drawn.append(t_lin)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"modification size ({entry['size']})")
    ax.set_ylabel(r"inflection $T^*$")
    ax.set_xticks(sizes, [f"{m:g}" for m in sizes])
    ax.xaxis.set_minor_locator(NullLocator())
    if entry["source"] == "llm":
        ax.yaxis.set_major_formatter(FuncFormatter(llm_perturb.tokens_tick))
        ax.yaxis.set_minor_formatter(NullFormatter())
    values = drawn or [t_lo, t_hi]
    lo, hi = max(min(values) / 3, bounds[0]), min(max(values) * 3, bounds[1])
    # Beyond the measured checkpoints no T* can be observed: shade it.
    if t_lo > lo:
        ax.axhspan(lo, t_lo, **OUTSIDE)
    if t_hi < hi:
        ax.axhspan(t_hi, hi, **OUTSIDE)
    ax.set_ylim(lo, hi)
    ax.set_xlim(sizes.min() / shift**4, sizes.max() * shift**4)


def _point(ax, x, stat: dict, marker: str, colour, drawn: list, bounds, hollow: bool = False) -> None:
    """One T* with its interval (clipped to ``bounds``; an open end drawn to the bound); none outside them."""
    value, interval = stat["value"], stat["interval"]
    if value is None or not bounds[0] < value < bounds[1]:
        return
    yerr = None
    if interval is not None:
        lo, hi = (
            bounds[0] if interval[0] is None else max(interval[0], bounds[0]),
            bounds[1] if interval[1] is None else min(interval[1], bounds[1]),
        )
        yerr = [[max(value - lo, 0.0)], [max(hi - value, 0.0)]]
        drawn += [lo, hi]
    ax.errorbar(
        [x],
        [value],
        yerr=yerr,
        marker=marker,
        ms=4,
        color=colour,
        mfc="white" if hollow else colour,
        mec=colour if hollow else "black",
        mew=0.7,
        capsize=1.5,
        elinewidth=0.7,
        ls="none",
        zorder=4,
    )
    drawn.append(value)


def _handles(entry: dict) -> list:
    held = entry["held_out"]
    handles = [
        Line2D([], [], color="0.3", marker="o", ms=MEASURED["ms"], ls="none", label="measured: mean $\\pm$ s.e."),
        Line2D([], [], color="0.3", **FIT, label="power-law fit, all sizes"),
        Line2D(
            [],
            [],
            color="0.3",
            **LINEAR,
            label="linear model + link\n(joint fit, all sizes)",
        ),
        Line2D([], [], color="black", lw=0, marker="o", ms=4, mfc="0.6", mec="black", label="observed $T^*$"),
        Line2D([], [], color="0.45", lw=1.0, label=r"closed-form $T^*(m)$, all sizes"),
        Line2D(
            [],
            [],
            color="black",
            lw=0,
            marker="^",
            ms=4,
            mfc="0.6",
            mec="0.3",
            label="linear-model $T^*$",
        ),
    ]
    if "per_size" in held:
        handles.insert(
            5,
            Line2D([], [], color="black", lw=0, marker="s", ms=4, mfc="white", mec="0.3", label="held-out prediction"),
        )
    handles.append(
        Line2D([], [], color=OUTSIDE["color"], lw=5, alpha=0.3, label="outside the fit window\n(or the measured range)")
    )
    return handles


def _notes(entry: dict) -> str:
    """The fitted exponents with their intervals and the goodness of prediction, in two lines."""
    d, held, lin = entry["decomposition"], entry["held_out"], entry["linear_model"]

    def ci(name):
        stat = d[name]
        interval = stat["interval"]
        shown = interval is not None and None not in interval
        return f"{stat['value']:.3g}" + (f" [{interval[0]:.3g}, {interval[1]:.3g}]" if shown else "")

    # Where no interval is claimed (a deterministic curve, one seed), say why.
    why = d["p"].get("method", "none").removeprefix("none (").removesuffix(")")
    claim = "95% t intervals" if d["p"]["interval"] is not None else f"no interval: {why}"
    first = rf"power-law fit: $\alpha$ = {ci('alpha')},  $\beta$ = {ci('beta')},  $p$ = {ci('p')} ({claim})"
    second = []
    if held.get("median_abs_log_t_star_error") is not None:
        second.append(f"held-out median |ln $T^*$ error| = {held['median_abs_log_t_star_error']:.2f}")
    elif "skipped" in held:
        second.append("no held-out prediction (< 3 sizes)")
    if "params" in lin:
        second.append(rf"linear model + link: $\alpha_s$ = {lin['params']['alpha_s']:.3g}")
    if lin.get("log_rmse_excess_predicted") is not None:
        second.append(f"held-out log-RMSE of the excess = {lin['log_rmse_excess_predicted']:.2f}")
    return first + "\n" + ",  ".join(second)


def _unobserved(entry: dict) -> str:
    missing = [m for m, row in zip(entry["sizes"], entry["t_star"]) if row["observed"]["value"] is None]
    return "\nno observed $T^*$ in range:\n" + ", ".join(f"{m:g}" for m in missing) if missing else ""


def draw(entry: dict, out_dir: Path, name: str) -> list[Path]:
    """(a) loss vs T, measured and fitted; (b) the excess over the base (log-log); (c) T* vs size:
    observed, closed form of the fit, held-out predictions, linear model."""
    colours = style.ordered_colours(entry["sizes"])
    label = _size_label(entry)
    with style.panels(3, height=3.4) as (fig, (ax_a, ax_b, ax_c)):
        loss_panel(ax_a, entry, colours)
        style.title(ax_a, "a", "Loss: measured and fitted", r"solid: $E + A T^{-\alpha} + C m^p T^{\beta}$")
        excess_panel(ax_b, entry, colours)
        style.title(ax_b, "b", "Excess over the base", r"theory: grows with $T$")
        t_star_panel(ax_c, entry, colours)
        style.title(ax_c, "c", r"Inflection $T^*$", r"theory: falls as $m$ grows")
        sizes = [Line2D([], [], color=BASE_COLOUR, label="base (unmodified)")]
        sizes += [Line2D([], [], color=colour, label=label(m)) for m, colour in colours.items()]
        fig.legend(handles=sizes, title=entry["name"] + _unobserved(entry), loc="outside right upper", alignment="left")
        fig.legend(handles=_handles(entry), title=_notes(entry), loc="outside lower center", ncols=4)
        return style.save(fig, out_dir, name)


def draw_anchors(entries: list[dict], out_dir: Path, name: str = "compare_olmo_anchors") -> list[Path]:
    """The paper's OLMo-1B anchors on OLMo-scale token axes: degradation onset beyond ~2.5T tokens, and
    the 3T checkpoint 2-3% worse than 2.3T after instruction tuning; every OLMo-scale family's modified
    loss, relative to its checkpoint nearest 2.3T, beside them."""
    a = OLMO_1B
    with style.panels(1, width=style.WIDTH * 0.62) as (fig, (ax,)):
        ax.axvspan(a["onset_tokens"], 4e12, color="tab:red", alpha=0.08, lw=0, label="onset of degradation (> ~2.5T)")
        low, high = a["late_worse_percent"]
        ax.errorbar(
            [a["reference_tokens"], a["late_tokens"]],
            [0.0, (low + high) / 2],
            yerr=[[0, (high - low) / 2]] * 2,
            marker="D",
            ms=4,
            color="tab:red",
            capsize=2,
            lw=1.0,
            ls="none",
            label="OLMo-1B after instruction tuning\n(published)",
        )
        shown = []
        for entry in entries:
            T = np.asarray(entry["observed"]["T"])
            if entry["source"] != "llm" or T.max() < OLMO_SCALE:
                continue
            ref = int(np.argmin(np.abs(np.log(T / a["reference_tokens"]))))
            colours = style.ordered_colours(entry["sizes"])
            for series in entry["observed"]["modified"]:
                mean = _array(series["mean"])
                ax.plot(
                    T,
                    100 * np.expm1(mean - mean[ref]),
                    "o-",
                    ms=2.5,
                    lw=0.9,
                    color=colours[series["size"]],
                    label=f"{entry['name']}, {_size_label(entry)(series['size'])}",
                )
            shown.append(entry["name"])
        ax.axhline(0.0, color="0.3", lw=0.6)
        llm_perturb.tokens_axis(ax, "change vs the 2.3T checkpoint (%)\n(perplexity for measured runs)")
        ax.set_xlim(1.5e12, 4e12)
        ends = [max(e["observed"]["T"]) for e in entries if e["source"] == "llm"]
        note = (
            ""
            if shown
            else "\nno OLMo-scale run among the fits"
            + (f"\n(the LLM runs here end at {human_tokens(max(ends))} tokens)" if ends else "")
        )
        style.title(ax, "a", "OLMo-1B anchors (Springer et al. 2025)", "context for OLMo-scale runs" + note)
        style.legend(fig)
        return style.save(fig, out_dir, name)
