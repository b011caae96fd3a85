"""The ``ovt`` command line (docs/ARCHITECTURE.md, "CLI contract"): arguments -> config -> run.

Exit codes: 0 success; 2 bad input (one line naming the value and what is allowed, nothing written);
1 a failure while running.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import sys
import threading
from pathlib import Path

from experiments import advise, compare
from experiments.arguments import Parser, directory, integer
from experiments.llm import cli as llm_cli
from experiments.llm import reproduce as llm_reproduce
from experiments.llm import study as llm_study
from experiments.sweep import presets
from experiments.sweep.overrides import apply_overrides, read_overrides
from experiments.sweep.runner import run_theory
from rundir import store
from rundir.atomic import out_of_space
from rundir.lifecycle import UsageError, check_writable, variant_dir


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog="ovt", description="Catastrophic overtraining: linear theory and LLM validation.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    t = sub.add_parser("theory", help="run a theory preset into a result store")
    t.add_argument("preset", nargs="?", help="preset name (see --list)")
    t.add_argument("overrides", nargs="*", metavar="FIELD=VALUE", help="override any config field (lists: a,b,c)")
    t.add_argument("--list", action="store_true", help="list the presets")
    t.add_argument("--out", type=directory("--out"), help="run directory (default results/theory/PRESET)")
    t.add_argument("--quick", action="store_true", help="the preset's quick variant")
    t.add_argument(
        "--chunk", type=integer("--chunk", 0), action="append", help="run only this chunk (cluster jobs); repeatable"
    )
    t.add_argument("--quiet", action="store_true")

    f = sub.add_parser("figures", help="draw the figures of result stores")
    f.add_argument(
        "--results",
        type=directory("--results"),
        nargs="+",
        action="extend",
        help="run directories or roots (repeat the flag or list several; default results)",
    )
    f.add_argument("--out", type=directory("--out"), help="figure directory (default RESULTS/figures)")

    llm_cli.add_parser(sub)
    compare.add_parser(sub, Parser)
    advise.add_parser(sub, Parser)

    r = sub.add_parser("reproduce", help="the main job: every theory figure (and the CPU LLM validation)")
    r.add_argument("--quick", action="store_true")
    r.add_argument("--out", type=directory("--out"), default=Path("results"))
    r.add_argument("--theory-only", action="store_true", help="skip the CPU-scale LLM validation")
    r.add_argument("--quiet", action="store_true")
    return p


def _theory(args) -> int:

    if args.list:
        if args.preset or args.overrides:
            raise UsageError("ovt theory: --list takes no preset or overrides")
        print("\n".join(presets.describe(name) for name in presets.PRESETS))
        return 0
    if not args.preset:
        raise UsageError(f"ovt theory: a preset is required; allowed: {', '.join(presets.PRESETS)}")
    cfg = apply_overrides(presets.get(args.preset, args.quick), read_overrides(args.overrides))
    out = args.out or default_theory_out(args.preset, args.quick, args.overrides)
    table = run_theory(cfg, args.preset, out, args.quiet, args.chunk)
    if table is not None and not args.quiet:
        print(f"{args.preset}: {len(table)} rows -> {out}")
    return 0


def default_theory_out(preset: str, quick: bool, overrides: list[str]) -> Path:
    """``results/theory/PRESET`` for the preset as it stands (where ``ovt reproduce`` writes it), and a
    directory of its own for every variant (``finetune-depth=3_lr=0.01,0.04``, ``schedule-quick``), so
    a variant never meets the preset's run, nor another variant's."""
    return variant_dir(Path("results") / "theory" / preset, quick, overrides)


def _figures(args) -> int:
    """Draw every run that has a figure; skip the others with one stderr line each. Bad input (exit 2)
    only when nothing at all can be drawn: then the one line says why, and nothing is written."""
    from paper_figures import draw_run, why_not_drawable

    args.results = list(dict.fromkeys(args.results or [Path("results")]))
    runs = []
    for path in args.results:
        if not path.exists():
            raise UsageError(f"--results {path} does not exist")
        runs += store.find_runs(path)
    if not runs:
        raise UsageError(
            f"--results {' '.join(map(str, args.results))} holds no run directory (manifest.json + metrics.parquet)"
        )
    out = args.out or args.results[0] / "figures"
    check_writable(out)
    drawable, skipped = [], []
    for run in dict.fromkeys(runs):
        reason = why_not_drawable(run)
        skipped.append(reason) if reason else drawable.append(run)
    if not drawable:
        more = f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""
        raise UsageError(f"nothing to draw: {skipped[0]}{more}")
    for reason in skipped:
        print(f"ovt figures: skipped {reason}", file=sys.stderr)
    # Two runs of one kind would write the same file: then each is named after its path below --results.
    for run, name in zip(drawable, store.run_names(drawable, args.results)):
        for path in draw_run(run, out, name):
            print(path)
    return 0


def _reproduce(args) -> int:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from paper_figures import draw_run

    check_writable(args.out)
    figures = args.out / "figures"
    # Figures are drawn in a second process while the next preset computes: matplotlib and XLA's
    # compiler are each single-threaded, so the two cores overlap them. "spawn": never fork JAX.
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        drawn = []
        for name in presets.PRESETS:
            if name == "smoke":
                continue
            run_dir = args.out / "theory" / name
            quick = args.quick or name in presets.REPRODUCED_QUICK
            if quick and not args.quick:  # where ``ovt theory NAME --quick`` writes it, beside the full preset's
                run_dir = variant_dir(run_dir, True, [])
            run_theory(presets.get(name, quick), name, run_dir, args.quiet)
            drawn.append(pool.submit(draw_run, run_dir, figures))
        if not args.theory_only:
            for run_dir in llm_reproduce.run(args.out / "llm", args.quick, args.quiet):
                drawn.append(pool.submit(draw_run, run_dir, figures))
            if not args.quick:  # the controlled study at quick size: its runs, predictions, claims, figure
                llm_study.run_study("study-quick", args.out / "study-quick", quiet=args.quiet)
        for future in drawn:
            for path in future.result():
                if not args.quiet:
                    print(path)
    # Theory meets data: the theory fitted to the LLM stores, held-out inflections predicted, overlays drawn
    # (into OUT/compare). The theory stores are the linear model's own curves: fitting it back to them is
    # the tests' recovery check, which the main job need not repeat; `ovt compare --results OUT/theory`
    # fits them on request.
    if not args.theory_only:
        for path in compare.compare([args.out / "llm"], args.out / "compare", quiet=args.quiet):
            if not args.quiet:
                print(path)
    return 0


def _negative_values(argv: list[str]) -> list[str]:
    """``--flag -5K`` as ``--flag=-5K``: argparse takes a value that starts with "-" for an option (unless
    it is a plain number), and would say "expected one argument" without naming the value; joined, the
    flag's reader sees it and names it."""
    joined, skip = [], False
    for i, item in enumerate(argv):
        if skip:
            skip = False
            continue
        following = argv[i + 1] if i + 1 < len(argv) else ""
        if item.startswith("--") and "=" not in item and re.fullmatch(r"-\.?\d.*", following):
            joined.append(f"{item}={following}")
            skip = True
        else:
            joined.append(item)
    return joined


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line; ``ovt theory`` and the ``ovt llm`` runs take FIELD=VALUE overrides
    anywhere on it, also after options."""
    args, extras = _parser().parse_known_args(_negative_values(sys.argv[1:] if argv is None else list(argv)))
    if hasattr(args, "overrides"):  # ovt theory, ovt llm pretrain|perturb|finetune
        args.overrides += [item for item in extras if not item.startswith("-")]
        extras = [item for item in extras if item.startswith("-")]
    if extras:
        raise UsageError(f"unrecognized arguments: {' '.join(extras)}")
    return args


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is (a scheduler's kill, ``timeout``, ``kill PID``), so that a
    run ends as an interrupt does: its status "interrupted", one line, resumable."""


def _terminated(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM raises ``Terminated`` in the main thread for the call's duration (elsewhere, or where
    signals cannot be set, the default stays)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# Workers terminated mid-unit (a failure, Ctrl-C, SIGTERM) cannot unregister the semaphores they
# made (tqdm's lock); the resource tracker unlinks them at exit, as it is built to, and would print a
# warning about them that is not the one line an ending prints. The tracker takes its warning filters
# from this process's when it starts (on the first semaphore), so this is set before any.
_QUIET_TRACKER = "ignore::UserWarning:multiprocessing.resource_tracker"


def main(argv: list[str] | None = None) -> int:
    if _QUIET_TRACKER not in sys.warnoptions:
        sys.warnoptions.append(_QUIET_TRACKER)
    with _sigterm_interrupts():
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    try:
        args = _parse(argv)
        return {
            "theory": _theory,
            "figures": _figures,
            "reproduce": _reproduce,
            "llm": llm_cli.run,
            "compare": compare.run,
            "advise": advise.run,
        }[args.command](args)
    except (UsageError, ValueError) as err:
        # Config checks raise ValueError before anything is written; both are bad input.
        print(f"ovt: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        how = "terminated (SIGTERM)" if isinstance(interrupt, Terminated) else "interrupted"
        print(f"ovt: {how}; rerun the same command to resume", file=sys.stderr)
        return 143 if isinstance(interrupt, Terminated) else 130
    except Exception as err:  # a failure while running: one line, the traceback only on request
        if os.environ.get("OVT_TRACEBACK"):
            raise
        if out_of_space(err):
            print(f"ovt: failed: {err}; free space and rerun the same command to resume", file=sys.stderr)
        else:
            print(f"ovt: failed: {type(err).__name__}: {err} (set OVT_TRACEBACK=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
