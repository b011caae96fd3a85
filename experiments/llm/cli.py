"""``ovt llm ...``: the LLM command group (docs/ARCHITECTURE.md, "CLI contract").

    ovt llm revisions MODEL   (this module: revision, step, tokens, tokens/param of a hub id, offline cache or folder)
    ovt llm pretrain ...      (``experiments.llm.kinds.pretrain``: a mini pre-training series and its base perplexity)
    ovt llm perturb ...       (``experiments.llm.kinds.perturb``: perplexity under Gaussian noise on every checkpoint)
    ovt llm finetune ...      (``experiments.llm.kinds.finetune``: an lr grid of fine-tuning on every checkpoint)
    ovt llm curvature ...     (``kinds.curvature``: Hessian trace and top eigenvalue, small-noise excess)
    ovt llm quantize ...      (``kinds.quantize``: perplexity with every linear weight quantized per channel)

The three run commands read one shape: a typed config (``experiments.llm.config``) from ``--preset NAME``
(``experiments.llm.presets``; ``--list`` shows them, ``--quick`` their quick variant), then the flags, then
``FIELD=VALUE`` overrides; a comma list on a scalar field sweeps it (one run per value, in
``OUT/FIELD=VALUE``). Every run of a sweep is planned (all input checked, nothing written) before the
first one starts. ``--out`` defaults to the preset's run directory (``experiments.llm.presets.default_out``), a
variant's named after it (``results/llm/series-quick``). ``cli.py`` wires this in with
``experiments.llm.cli.add_parser(sub)`` and ``"llm": llm_cli.run``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from experiments.arguments import Parser, argument_type, directory, whole
from experiments.llm import cluster as llm_cluster
from experiments.llm import config as llm_config
from experiments.llm import presets as llm_presets
from experiments.llm import study as llm_study
from experiments.llm.batch import BY_CONFIG, RUNS, run_cells, run_config  # noqa: F401 (the run types' registry)
from experiments.llm.cluster import CLUSTERS
from experiments.llm.lifecycle import failures_while_running
from experiments.llm.series import available_revisions, model_folder
from rundir.lifecycle import UsageError, variant_dir
from rundir.tokens import human_tokens

LLM_COMMANDS = ("revisions", *RUNS, "study")
MAX_WORKERS = 256
MAX_MINUTES = 60 * 24 * 30


def add_parser(subparsers, parser_class: type[argparse.ArgumentParser] | None = None) -> argparse.ArgumentParser:
    """Add ``llm`` (with ``revisions``, ``pretrain``, ``perturb``, ``finetune``) to ``subparsers``; returns it.

    ``parser_class`` is the class of the nested subcommand parsers (default ``arguments.Parser``, whose
    ``error()`` raises ``UsageError``); the ``llm`` parser itself is of ``subparsers``' class.
    """
    parser_class = parser_class or Parser
    llm = subparsers.add_parser(
        "llm", help="LLM validation: checkpoint series, pre-training, perturbation, fine-tuning"
    )
    sub = llm.add_subparsers(
        dest="llm_command", metavar="{" + ",".join(LLM_COMMANDS) + "}", required=True, parser_class=parser_class
    )
    r = sub.add_parser("revisions", help="list the checkpoint revisions of a hub id or local folder series")
    r.add_argument("model", help="hub id (ORG/NAME; HF_HUB_OFFLINE=1 lists the local hub cache) or a folder series")
    for name, kind in RUNS.items():
        add_run_arguments(sub.add_parser(name, help=kind.HELP), name, kind.CONFIG)
    s = sub.add_parser("study", help="the controlled study: every size, seed and measurement, then the claims")
    s.add_argument("name", nargs="?", help="study preset (see --list)")
    s.add_argument("--list", action="store_true", help="list the studies")
    s.add_argument("--out", type=directory("--out"), help="study directory, resumable (default results/llm/NAME)")
    s.add_argument(
        "--until",
        choices=llm_study.STAGES,
        default=llm_study.STAGES[-1],
        help="stop after this stage (pre-training: the series alone; the same command without it goes on)",
    )
    add_workers(s)
    s.add_argument("--quiet", action="store_true", help="no progress, no summary")
    return llm


def add_run_arguments(p: argparse.ArgumentParser, kind: str, cls: type) -> None:
    """``--preset``, ``--list``, ``--quick``, ``FIELD=VALUE`` overrides, ``--out``, ``--quiet``, and
    one flag per config field."""
    p.add_argument("overrides", nargs="*", metavar="FIELD=VALUE", help="set any config field (lists: a,b,c)")
    p.add_argument("--preset", choices=list(llm_presets.PRESETS[kind]), help="a named config (see --list)")
    p.add_argument("--list", action="store_true", help="list the presets")
    p.add_argument("--quick", action="store_true", help="the preset's quick variant")
    out = "run directory, resumable (default: the preset's, results/llm/...)"
    p.add_argument("--out", type=directory("--out"), help=out)
    p.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    llm_config.add_arguments(p, cls)
    x = add_workers(p)
    x.add_argument("--cluster", choices=CLUSTERS, help="submit the units as a submitit job array")
    x.add_argument(
        "--partition", type=argument_type(llm_config.nonempty("--partition")), help="--cluster slurm: the partition"
    )
    x.add_argument("--time", type=argument_type(whole("--time", 1, MAX_MINUTES)), help="--cluster: minutes per job")
    x.add_argument("--gpus", type=argument_type(whole("--gpus", 0, 64)), help="--cluster: GPUs per job")


def add_workers(p: argparse.ArgumentParser):
    """The execution group with ``--workers``; returns the group."""
    x = p.add_argument_group("execution (where the units run; the numbers do not depend on it)")
    x.add_argument(
        "--workers",
        type=argument_type(whole("--workers", 1, MAX_WORKERS)),
        help="processes for independent units (budgets, checkpoints, sweep cells), one torch thread each "
        "unless --threads, the same numbers for any count (default: the machine's cores, or $OVT_WORKERS)",
    )
    return x


def run(args: argparse.Namespace) -> int:
    """Run the parsed ``ovt llm ...`` command; UsageError / ValueError mean bad input (exit 2)."""
    if getattr(args, "workers", None) is None and hasattr(args, "workers"):
        from llm_validation.parallel import default_workers

        default_workers()  # $OVT_WORKERS is input too: refused here, before anything is written
    if args.llm_command == "revisions":
        return _revisions(args)
    if args.llm_command == "study":
        return _study(args)
    return _run_command(args.llm_command, args)


def configured(kind: str, args: argparse.Namespace) -> list[tuple[llm_config.RunConfig, Path]]:
    """(config, run directory) of every run the command line asks for: the preset (or the type's
    defaults), then the flags given, then the overrides; a sweep gives one per cell."""
    cls = RUNS[kind].CONFIG
    if args.quick and not args.preset:
        raise UsageError(f"ovt llm {kind}: --quick needs a --preset")
    base = llm_presets.get(kind, args.preset, args.quick) if args.preset else cls()
    flags = {name: getattr(args, name) for name in llm_config.names(cls) if getattr(args, name) is not None}
    cfg, sweep = llm_config.configure(base, flags, args.overrides)
    out = args.out
    if out is None:
        if not args.preset:
            raise UsageError(f"ovt llm {kind}: give --out DIR (only a --preset has a default run directory)")
        given = llm_config.overrides_of(flags) + list(args.overrides)
        out = variant_dir(llm_presets.default_out(kind, args.preset), args.quick, given)
    return llm_config.cells(cfg, sweep, out)


def _run_command(name: str, args: argparse.Namespace) -> int:
    kind = RUNS[name]
    if args.list:
        if args.preset or args.overrides:
            raise UsageError(f"ovt llm {name}: --list takes no preset or overrides")
        print("\n".join(llm_presets.describe(name, preset) for preset in llm_presets.PRESETS[name]))
        return 0
    cluster = _cluster(args)
    runs = configured(name, args)
    plans = [kind.plan(cfg, out, args.quiet) for cfg, out in runs]
    if cluster is not None:
        return _submit(kind, runs, plans, cluster, args)
    with failures_while_running():  # the run directories exist now: whatever fails is a failure
        tables = run_cells([(kind, plan) for plan in plans], args.workers, args.quiet)  # a sweep's cells side by side
    for plan, table in zip(plans, tables):
        if not args.quiet:
            print(kind.report(plan, table))
    return 0


def _cluster(args: argparse.Namespace) -> llm_cluster.Cluster | None:
    """The ``--cluster`` options; UsageError for a Slurm option without Slurm."""
    given = {name: getattr(args, name) for name in ("partition", "time", "gpus") if getattr(args, name) is not None}
    if args.cluster is None:
        if given:
            raise UsageError(f"--{next(iter(given))} is an option of --cluster; give --cluster slurm|local|debug")
        return None
    if args.workers is not None:
        raise UsageError("--workers and --cluster exclude each other: a job array runs one unit a job")
    if "partition" in given and args.cluster != "slurm":
        raise UsageError(f"--partition is a Slurm option; --cluster {args.cluster} has none")
    return llm_cluster.Cluster(args.cluster, **given)


def _submit(kind, runs, plans, cluster: llm_cluster.Cluster, args) -> int:
    """Every run's pending units as a job array; ``local`` and ``debug`` wait for them and merge."""
    command = "ovt " + " ".join(a for a in sys.argv[1:] if a) if sys.argv[1:] else "the same command"
    with failures_while_running():
        submitted = [(plan, llm_cluster.submit(kind, cfg, plan, cluster)) for (cfg, _), plan in zip(runs, plans)]
        for plan, jobs in submitted:
            if cluster.name == "slurm":
                llm_cluster.announce(jobs, plan.out, command)
                continue
            llm_cluster.wait(jobs, plan.out)
            table = kind.execute(plan, 1)  # every unit stored: the table is written, nothing computed
            if not args.quiet:
                print(kind.report(plan, table))
    return 0


def _study(args) -> int:
    if args.list:
        if args.name:
            raise UsageError("ovt llm study: --list takes no study name")
        print("\n".join(llm_study.describe(name) for name in llm_study.STUDIES))
        return 0
    if not args.name:
        raise UsageError(f"ovt llm study: a study name is required; allowed: {', '.join(llm_study.STUDIES)}")
    llm_study.get(args.name)
    out = args.out or llm_presets.RESULTS / args.name
    report = llm_study.run_study(args.name, out, args.workers, args.quiet, until=args.until)
    if report is None:
        if not args.quiet:
            print(f"study {args.name}: stopped after {args.until} -> {out}")
        return 0
    if not args.quiet:
        from experiments.llm import study_power as llm_study_power
        from experiments.llm import study_report as llm_study_report

        if "power" in report:
            print(llm_study_power.summary(report["power"]) + f"\n-> {out / llm_study_power.POWER_FILE}")
        else:
            print(llm_study_report.summary(report, out))
    return 0


def _revisions(args) -> int:
    """The table of revisions, with tokens per parameter (the count of the last revision's config,
    built on the meta device), then one line naming the parameter count and the family."""
    from llm_validation.checkpoints import parameter_count
    from llm_validation.suites import SUITES

    is_folder, revisions = available_revisions(args.model)
    n_params = parameter_count(model_folder(args.model) if is_folder else args.model, revisions[-1].name)
    staged = any(r.stage for r in revisions)
    header = ("revision", "step", "tokens", "tokens/param") + (("stage",) if staged else ())
    rows = [
        (r.name, str(r.step), human_tokens(r.tokens), human_tokens(r.tokens / n_params))
        + ((r.stage or "",) if staged else ())
        for r in revisions
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:  # names left-aligned, numbers right-aligned
        cells = (c.ljust(w) if i in (0, 4) else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
        print("  ".join(cells).rstrip())
    suite = SUITES.get(args.model)
    family = f"; suite family {suite.family}" if suite else ""
    print(f"{len(revisions)} revisions; {n_params:,} parameters (config of {revisions[-1].name}){family}")
    return 0
