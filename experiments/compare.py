"""``ovt compare``: fit the linear theory to measured curves, predict inflections, overlay.

    ovt compare --results DIR [DIR ...] [--out DIR] [--bootstrap 200] [--seed 0]
                [--window TMIN,TMAX] [--rank 32] [--anchors] [--quiet]

Reads any result stores (theory, the CPU reference runs, users' OLMo runs) and, for every *family*
(one run, one modification, one value of every other swept field, at least two sizes m; built by
``analysis.families``), fits (``analysis.fits``; this module only finds and loads the stores, calls
the analysis, writes fits.json, draws the figures and prints):

1. the power-law decomposition of ``analysis.phenomenology``: L(T) = E + A T^-alpha on the base curve,
   S(T, m) = C m^p T^beta on the excess of the modified model over the base, both in log space; the
   closed form T*(m) = (alpha A / (beta C m^p))^(1/(alpha+beta)) for every size;
2. held-out prediction: the excess fitted on all sizes but one (the base fit is shared: base rows are
   never held out) predicts the held-out size's curve and T*;
3. the rival models (``rivals``: the decomposition, the Shannon law, the linear model fitted jointly
   to the base and every size without and with its link to log-loss), each scored on held-out sizes
   and, for a study's series (setups ``SIZE_seed=N``), on held-out series
   (``analysis.model_comparison``); the table prints after the summary;
4. where curvature stores are among the results, the Hessian bridge (``analysis.hessian_bridge``):
   the measured trace's growth exponent against the fitted linear model's, and kappa_H.

The loss is L_A (``pretrain_loss``) for theory stores and log perplexity (the mean NLL in nats) for
LLM stores, so the excess of an LLM is log(ppl_modified / ppl_base). The size m is gamma for Gaussian
noise and lr x steps for fine-tuning (fixed-lr rows only: a tuned lr changes m along the curve).
Observed T* is ``analysis.inflection`` of the mean modified loss over the whole grid, the
helper that wrote the stores' inflection rows.

Fit window: the power laws hold between the plateau before anything is learned and the floor a
finite-rank linear model reaches, so the fits use the checkpoints from the last one whose base loss
is within 1% of the first checkpoint's through the last one whose base loss is above 1e-3 of it
(LLM curves keep every checkpoint). ``--window`` replaces the rule.

Uncertainty (``analysis.intervals``): 95% Student-t intervals, value +- t(dof, 0.975) x the
standard deviation of ``--bootstrap`` replicates (log space for A, C and T*). Where a curve has k > 1
seeds (LLM draws, or theory seeds), a replicate resamples whole seeds with replacement (the same draw
perturbs every checkpoint and every gamma, so the draw, not the (checkpoint, gamma) cell, is the
independent unit), the s.e. is scaled by sqrt(k / (k - 1)) and dof = k - 1: three draws give t(2) =
4.30, not 1.96. An LLM's one base curve beside its draws resamples its n log residuals (dof = n - 3).
A theory curve with one seed (deterministic: its residuals are misfit, not noise), or a family with
one seed and no draws (single-seed fine-tuning), claims no interval: ``interval`` is null and
``method`` says why; a quantity that rests on such a curve and on draws gets an interval conditional
on the curve (``given``). Every interval records its ``method``, ``n_draws``, ``draws`` and ``dof``.
A held-out fold's replicates refit only the sizes it keeps (resampled, or simulated from the fold's
own fit), never the held-out size.

Everything stays in the store's own units: T in flow time (theory) or tokens (LLM), and the fitted
A and C with them. fits.json holds, per family, the parameters with intervals, the goodness of fit
(RMSE and R^2 in log space), in-sample, held-out and linear-model T* against the observed T*, and the
measured means and fitted lines the figures draw.

Bad input (exit 2, one line, nothing written): a --results path that does not exist or holds no run,
an unwritable --out, bad option values, and stores with nothing to fit (no loss rows, fewer than 3
checkpoints, no modification rows, one size per family). ``cli.py`` wires this in with
``compare.add_parser(sub, Parser)`` and ``"compare": compare.run``.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import families as fams
from analysis import fits as fitting
from analysis.families import WINDOW_RULE, Family, fit_window
from analysis.fits import summary_rows
from analysis.model_comparison import DecompositionCurves, table_rows
from analysis.shannon import ShannonCurves
from experiments.arguments import directory, integer
from rundir import store
from rundir.lifecycle import UsageError, check_writable, git_commit, now, versions
from rundir.store import REQUIRED_COLUMNS

__all__ = ["add_parser", "compare", "families", "fit_family", "fit_window", "plan", "run", "summary", "summary_rows"]

MAX_BOOTSTRAP, MAX_RANK = 100_000, 4096  # each multiplies the fits' time
CURVATURE = "llm curvature"  # a store of the sigma-weighted Hessian trace: the bridge's, not a family


class CompareFailure(RuntimeError):
    """A failure while fitting (exit 1), after every input was accepted."""


# ---------------------------------------------------------------------------------------- parser


def add_parser(subparsers, parser_class: type[argparse.ArgumentParser] | None = None) -> argparse.ArgumentParser:
    """Add ``compare`` to ``subparsers``; returns it. ``parser_class`` is accepted so that ``cli.py``
    wires every command alike; ``compare`` has no nested subcommands to give it to."""
    del parser_class
    p = subparsers.add_parser("compare", help="fit the linear theory to result stores; predict T*; overlay figures")
    results = dict(type=directory("--results"), nargs="+", action="extend", required=True)
    p.add_argument("--results", **results, help="run directories or roots holding them (repeat or list several)")
    out = "output directory for fits.json and figures (default RESULTS/compare)"
    p.add_argument("--out", type=directory("--out"), help=out)
    p.add_argument(
        "--bootstrap",
        type=integer("--bootstrap", 0, MAX_BOOTSTRAP),
        default=200,
        help=f"bootstrap replicates (0: none; at most {MAX_BOOTSTRAP:,})",
    )
    p.add_argument("--seed", type=integer("--seed", 0), default=0, help="seed of the bootstrap")
    p.add_argument("--window", type=_window, help="fit window TMIN,TMAX in the store's time unit (default: a rule)")
    p.add_argument(
        "--rank",
        type=integer("--rank", 2, MAX_RANK),
        default=32,
        help=f"modes of the linear model (at most {MAX_RANK})",
    )
    p.add_argument("--anchors", action="store_true", help="also draw OLMo-1B's published anchor points")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    return p


def _window(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--window {text!r} must be TMIN,TMAX (two numbers)") from None
    if not (0 < lo < hi < math.inf):
        raise argparse.ArgumentTypeError(f"--window {text!r} must satisfy 0 < TMIN < TMAX")
    return lo, hi


def run(args: argparse.Namespace) -> int:
    """Run the parsed ``ovt compare``; UsageError means bad input (exit 2)."""
    paths = compare(
        args.results,
        args.out,
        n_boot=args.bootstrap,
        seed=args.seed,
        window=args.window,
        rank=args.rank,
        anchors=args.anchors,
        quiet=args.quiet,
    )
    if not args.quiet:
        for path in paths:
            print(path)
    return 0


# ------------------------------------------------------------------------------------- analysis


def families(frame: pd.DataFrame, run_name: str) -> tuple[list[Family], list[str]]:
    """``analysis.families.families`` of one loaded store (its swept fields: the non-store columns)."""

    return fams.families(frame, run_name, REQUIRED_COLUMNS)


def rivals(modification: str, rank: int) -> list:
    """The curve models ``ovt compare`` scores: the decomposition, the Shannon law, and the linear
    model of ``rank`` modes without and with its link to log-loss."""
    from theory.linear_fit import LinearCurves

    return [
        DecompositionCurves(),
        ShannonCurves(),
        LinearCurves(modification, rank, link=False),
        LinearCurves(modification, rank, link=True),
    ]


def fit_family(fam: Family, n_boot: int, seed: int, window, rank: int) -> dict:
    """``analysis.fits.fit_family`` with the ``rivals`` of the family's modification."""
    return fitting.fit_family(fam, n_boot, seed, window, rivals(fam.modification, rank))


# ------------------------------------------------------------------------------------- top level


def _runs(results: list[Path]) -> list[Path]:

    runs = []
    for path in results:
        if not Path(path).exists():
            raise UsageError(f"--results {path} does not exist")
        runs += store.find_runs(path)
    if not runs:
        raise UsageError(
            f"--results {' '.join(map(str, results))} holds no run directory (manifest.json + metrics.parquet)"
        )
    return list(dict.fromkeys(runs))


def plan(results: list[Path], out: Path | None, window=None) -> tuple[list[Family], list[str], Path]:
    """Every input checked, every family built and its window set; nothing written (UsageError on bad input)."""

    runs = _runs(results)
    out = Path(out) if out is not None else Path(results[0]) / "compare"
    check_writable(out)
    found, skipped = [], []
    try:
        names = store.run_names(runs, [Path(r) for r in results])
    except ValueError as error:
        raise UsageError(f"--results: {error}") from None
    for run_dir, name in zip(runs, names):
        if store.read_manifest(run_dir).get("command") == CURVATURE:
            continue  # no loss curve to fit: the Hessian bridge reads it
        try:
            frame = store.load(run_dir)
        except ValueError as error:
            raise UsageError(f"--results {run_dir}: {error}") from None
        these, reasons = families(frame, name)
        for fam in these:
            reason = fams.fittable(fam, window)
            (skipped.append(reason) if reason else found.append(fam))
        skipped += reasons
    if not found:
        more = f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""
        raise UsageError(f"--results {' '.join(map(str, results))}: nothing to compare: {skipped[0]}{more}")
    return found, skipped, out


def compare(
    results: list[Path],
    out: Path | None = None,
    *,
    n_boot: int = 200,
    seed: int = 0,
    window: tuple[float, float] | None = None,
    rank: int = 32,
    anchors: bool = False,
    quiet: bool = False,
) -> list[Path]:
    """Fit every family of the stores under ``results``; write OUT/fits.json and the overlay figures.
    Returns the paths written."""
    from tqdm import tqdm

    from paper_figures import compare as figures

    found, skipped, out = plan(results, out, window)
    for reason in skipped:  # said where it is seen, not only inside fits.json
        print(f"ovt compare: skipped {reason}", file=sys.stderr)
    entries = []
    for fam in tqdm(found, desc="compare", unit="family", disable=quiet, file=sys.stderr):
        try:
            entries.append(fit_family(fam, n_boot, seed, window, rank))
        except (ValueError, FloatingPointError, np.linalg.LinAlgError) as error:
            raise CompareFailure(f"{fam.name}: {error}") from error
    runs = _runs(results)  # found again (plan does not return them): once here for the bridge and the claims
    groups = fitting.series_groups(found)
    series = {
        name: fitting.series_comparison(fams, rivals(fams[0].modification, rank))
        for name, fams in tqdm(
            groups.items(), desc="series", unit="group", disable=quiet or not groups, file=sys.stderr
        )
    }
    fits = {
        "command": "ovt compare",
        "results": [str(r) for r in results],
        "created": now(),
        "settings": {
            "bootstrap": n_boot,
            "seed": seed,
            "window": list(window) if window else WINDOW_RULE,
            "rank": rank,
        },
        "loss": {
            "theory": "L_A (pretrain_loss)",
            "llm": "log perplexity = mean NLL (nats); excess = log(ppl_mod / ppl_base)",
        },
        "versions": versions(),
        "git_commit": git_commit(),
        "families": entries,
        "series": series,
        "hessian_bridge": hessian_bridge(runs, entries),
        "skipped": skipped,
        "summary": summary_rows(entries),
        "comparison": comparison_rows(entries, series),
    }
    store.write_json(out / "fits.json", fits)
    paths = [out / "fits.json", *write_claims(runs, out)]
    try:
        for entry in entries:
            paths += figures.draw(entry, out, _file_name(entry["name"]))
        if anchors:
            paths += figures.draw_anchors(entries, out)
    except ValueError as error:  # the inputs were accepted: a figure that fails is a failure (exit 1)
        raise CompareFailure(f"drawing the figures into {out}: {error}") from error
    if not quiet:
        print(summary(fits["summary"]))  # the summary is the result: stdout, as every command's
        print("\nRival models on held-out data (* best; log-RMSE of the excess; 95% band coverage):")
        print(summary(fits["comparison"]))
        if fits["hessian_bridge"]:
            print("\nHessian bridge: growth exponents of the sigma-weighted trace, omega = dlog W / dlog T (95% t):")
            print(bridge_summary(fits["hessian_bridge"]))
    return paths


def comparison_rows(entries: list[dict], series: dict) -> list[dict]:
    """``analysis.model_comparison.table_rows`` of every family and every group of series."""
    rows = [row for e in entries for row in table_rows(e["name"], e["models"])]
    return rows + [row for name, found in series.items() for row in table_rows(f"{name} (series)", found)]


def bridge_summary(bridges: dict) -> str:
    """One row per group of series: measured and theory omega, their difference and log(kappa_H /
    kappa_loss), each as value [interval]."""

    def shown(stat: dict) -> str:
        interval = stat.get("interval")
        value = f"{stat['value']:.3g}" if stat.get("value") is not None else "-"
        return value + (f" [{interval[0]:.3g}, {interval[1]:.3g}]" if interval else "")

    keys = ("omega_measured", "omega_theory", "omega_difference", "log_kappa_ratio")
    rows = {
        group: {k: shown(b["pooled"][k]) for k in keys} | {"series": len(b["per_series"])}
        for group, b in bridges.items()
    }
    return pd.DataFrame(rows).T.to_string()


def hessian_bridge(runs: list[Path], entries: list[dict]) -> dict:
    """``analysis.hessian_bridge.bridge`` of every curvature store's series whose Gaussian family was
    fitted (the linear model with its link gives each series' spectrum and kappa_loss), grouped as
    the series are (``SIZE_seed=N``); {} when there is none."""
    from analysis.hessian_bridge import bridge, trace_series

    frames = [store.load(r) for r in runs if store.read_manifest(r).get("command") == CURVATURE]
    if not frames:
        return {}
    frame = pd.concat(frames, ignore_index=True)
    traces = trace_series(frame.assign(run=frame.setup))  # a series is named by its setup, as its family
    spectra = {
        e["setup"]: e["linear_model"]["params"] | {"rank": int(e["linear_model"]["params"]["rank"])}
        for e in entries
        if e["modification"] == "gaussian" and "params" in e["linear_model"]
    }
    groups: dict[str, dict] = {}
    for name, curve in traces.items():
        if name in spectra:
            groups.setdefault(fitting.SERIES_SUFFIX.sub("", name), {})[name] = curve
    return {group: bridge(found, {n: spectra[n] for n in found}) for group, found in sorted(groups.items())}


LLM_TABLES = {"llm perturb": "perturb", "llm finetune": "finetune"}


def write_claims(runs: list[Path], out: Path) -> list[Path]:
    """``claims.json`` and ``claims.md``: ``analysis.claims``' verdicts for every LLM model (``setup``)
    with a perturbation or fine-tuning store among ``runs`` (its fine-tuning stores joined: an L2-pull
    sweep's runs give claim g); nothing when there is none. One pre-training series per model, so
    the intervals rest on the noise draws (and are INCONCLUSIVE with one draw), as each claim says."""
    from analysis.claim_text import render_markdown
    from analysis.claims import evaluate_claims

    tables: dict[str, dict[str, list[pd.DataFrame]]] = {}
    for run in runs:
        kind = LLM_TABLES.get(store.read_manifest(run).get("command"))
        if kind:
            table = pd.read_parquet(run / store.METRICS)
            for setup, rows in table.groupby("setup"):
                tables.setdefault(str(setup), {}).setdefault(kind, []).append(rows)
    if not tables:
        return []
    claims, text = [], ["# Verdicts on the paper's LLM claims (`ovt compare`)\n"]
    for setup, kinds in sorted(tables.items()):
        joined = {kind: pd.concat(frames, ignore_index=True) for kind, frames in kinds.items()}
        found = evaluate_claims(joined.get("perturb"), joined.get("finetune"))
        claims += [c | {"setup": setup} for c in found]
        text += [f"## {setup}\n", render_markdown(found)]
    store.write_json(out / "claims.json", {"command": "ovt compare", "created": now(), "claims": claims})
    (out / "claims.md").write_text("\n".join(text), encoding="utf-8")
    return [out / "claims.json", out / "claims.md"]


def _file_name(name: str) -> str:
    """``compare_RUN_MODIFICATION[_FIELD-VALUE...]``: the family name with one safe separator."""
    words = name.replace(" / ", " ").replace(", ", " ").replace("=", "-").split()
    return "_".join(["compare", *("".join(c if c.isalnum() or c in "-." else "_" for c in w) for w in words)])


def summary(rows: list[dict]) -> str:
    frame = pd.DataFrame(rows).set_index("family")
    return frame.to_string(float_format=lambda v: f"{v:.3g}")
