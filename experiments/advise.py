"""``ovt advise``: which checkpoint of a series to fine-tune, from cheap probes (docs/ADVISE.md).

    ovt advise --model M [--revisions R1,R2 | --tokens 1e9,2T] --eval-text FILE --lr LR --steps N
               (--data FILE --format F | --reference DIR[,DIR...]) --out DIR
               [--gammas 1] [--draws 2] [--probe-budget 0.1] [--probe-checkpoints 3] [--probe-steps K]
               [--max-blocks B] [--batch-size 8] [--seq-len 128] [--warmup-steps 0] [--seed 0] [--quiet]

The probes are runs of the existing kinds in sub-directories of ``--out``, so a killed advice resumes
with them (the same command):

    OUT/probes/perturb     ``ovt llm perturb``: base perplexity and ``draws`` paired Gaussian draws per
                           gamma on every checkpoint, on ``max_blocks`` eval blocks
    OUT/probes/finetune    ``ovt llm finetune``: ``probe_steps`` steps at lr and 2 lr on
                           ``probe_checkpoints`` checkpoints spread over the series (first and last
                           among them), without ``--reference``

``analysis.advice`` calibrates its eq. (1) on the fine-tuning probe, or (``--reference``) on result
stores of other series fine-tuned in full at ``--lr`` and ``--steps`` (a study's ``perturb`` and
``finetune/DATA`` folders; what ``benchmarks/advise_validation.py`` validates), predicts every
checkpoint's pre-training loss (log perplexity on the eval blocks) and in-task loss after the planned
fine-tuning with 95% intervals, and advises a checkpoint, or a short list. Output: the table on
stdout; ``OUT/advice.json`` (every prediction, the calibration, the decomposition's T*, the probes'
cost, the caveats); ``OUT/metrics.parquet`` and ``manifest.json`` (a run directory: ``ovt figures``
draws it); ``OUT/advice.png`` / ``.pdf`` (``paper_figures.advice``).

Probe budget: fine-tuning every checkpoint once costs F = checkpoints x steps x batch_size x seq_len
tokens. ``max_blocks`` (eval blocks of every probe evaluation) and ``probe_steps`` default to what
``probe_budget`` x F allows, half to the Gaussian probe and half to the fine-tuning probe (all of it
to the Gaussian probe with ``--reference``); the tokens the probes process are reported against F.
Bad input (exit 2, one line, nothing written): every check of the two probe runs, a budget that
leaves fewer than ``MIN_BLOCKS`` blocks or no probe step, fewer than two checkpoints, a missing
``--data`` without ``--reference``, a reference with no series at ``--lr`` and ``--steps``.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import advice as adv
from analysis.advice_series import series_of, transfer_fits
from experiments.arguments import directory, real, whole
from experiments.llm import config as cf
from experiments.llm.config import FinetuneRun, PerturbRun, SeriesRun, knob
from experiments.llm.lifecycle import failures_while_running
from rundir import lifecycle, store
from rundir.lifecycle import UsageError
from rundir.tokens import human_tokens

COMMAND = "advise"
MIN_BLOCKS = 4


def _folders(name: str):
    """A comma list of folders (each checked where the plan reads them)."""

    def parse(text: str) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p.strip() for p in cf.nonempty(name)(text).split(",") if p.strip()))

    return parse


@dataclasses.dataclass(frozen=True)
class AdviseRun(SeriesRun):
    """The planned fine-tuning and the probes that advise on it."""

    REQUIRED = (*SeriesRun.REQUIRED, "lr", "steps")

    max_blocks: int | None = knob(
        None, "eval blocks of every probe evaluation (default: what probe_budget allows)", lambda n: whole(n, 1, 10**6)
    )
    lr: float | None = knob(None, "the planned fine-tuning lr", lambda n: real(n, above=0))
    steps: int | None = knob(None, "the planned fine-tuning steps", lambda n: whole(n, 1, cf.MAX_STEPS))
    warmup_steps: int = knob(
        0, "the planned linear warmup steps (the probe's scaled to its steps)", lambda n: whole(n, 0)
    )
    data: str | None = knob(
        None, "fine-tuning data of the probe (as ovt llm finetune --data)", cf.nonempty, identity=False, path=True
    )
    format: str | None = knob(None, "its format (llm_validation.finetune_data)", choices=cf.FORMATS)
    reference: tuple[str, ...] | None = knob(
        None, "result stores of series fine-tuned in full at lr and steps, with their perturb stores: "
        "advise from them, with no fine-tuning probe", _folders, identity=False,
    )  # fmt: skip
    gammas: tuple[float, ...] = knob((1.0,), "noise scales of the Gaussian probe", cf.GAMMAS)
    draws: int = knob(2, "paired draws per gamma", cf.COUNT)
    probe_budget: float = knob(
        0.1, "probe tokens as a fraction of fine-tuning every checkpoint once", lambda n: real(n, above=0, most=1)
    )
    probe_checkpoints: int = knob(3, "checkpoints of the fine-tuning probe", lambda n: whole(n, 2, 1000))
    probe_steps: int | None = knob(
        None, "steps of the fine-tuning probe (default: what probe_budget allows)", lambda n: whole(n, 1, cf.MAX_STEPS)
    )
    seed: int = knob(0, "batch order of the probe, and the seed of the replicates", cf.SEED)


def add_parser(subparsers, parser_class=None):
    """Add ``advise`` to ``subparsers``; returns it."""
    del parser_class
    p = subparsers.add_parser("advise", help="which checkpoint to fine-tune: cheap probes, predicted loss, advice")
    p.add_argument("--out", type=directory("--out"), required=True, help="advice directory, resumable")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no table")
    cf.add_arguments(p, AdviseRun)
    return p


def run(args) -> int:
    """Run the parsed ``ovt advise``; UsageError / ValueError mean bad input (exit 2)."""
    cfg = AdviseRun(**{name: getattr(args, name) for name in cf.names(AdviseRun) if getattr(args, name) is not None})
    planned = plan(cfg, args.out, args.quiet)
    payload = execute(planned)
    if not args.quiet:
        print(report(payload))
        print(f"-> {planned.out / 'advice.json'}")
    return 0


# ------------------------------------------------------------------------------------------ plan


@dataclasses.dataclass
class AdvisePlan:
    cfg: AdviseRun
    out: Path
    perturb: object  # SeriesPlan of OUT/probes/perturb
    finetune: object | None  # FinetunePlan of OUT/probes/finetune, or None with a reference
    reference: list | None  # [analysis.advice.Series] fine-tuned at (lr, steps)
    cost: dict

    def identity(self) -> dict:
        """What a rerun must match to resume: the config and what the probes' plans resolved."""
        reference = [lifecycle.path_from_run(p, self.out) for p in self.cfg.reference or ()]
        found = self.perturb.resolved() | {"reference": reference}
        if self.finetune is not None:
            probe = self.finetune.resolved()
            found |= {"probe_revisions": probe["revisions"], "probe_steps": self.finetune.cfg.steps}
            found |= {"data_sha256": probe["data_sha256"]}
        return {"command": COMMAND, "config": cf.identity(self.cfg) | found}


def plan(cfg: AdviseRun, out: Path, quiet: bool = False) -> AdvisePlan:
    """Every input checked (nothing written): the probe runs' plans, the reference, the budget."""
    from experiments.llm.kinds.finetune import KIND as FINETUNE
    from experiments.llm.kinds.perturb import KIND as PERTURB
    from llm_validation.parallel import default_workers

    cf.require(cfg)
    default_workers()  # $OVT_WORKERS is input too
    out = Path(out)
    lifecycle.check_writable(out)
    if cfg.reference is None and (cfg.data is None or cfg.format is None):
        raise UsageError(
            "data and format are required for the fine-tuning probe (--data, --format); or give --reference"
        )
    reference = _reference(cfg) if cfg.reference is not None else None
    shared = {name: getattr(cfg, name) for name in cf.names(SeriesRun)}
    probe = PerturbRun(**shared | {"gammas": cfg.gammas, "seeds": cfg.draws})
    perturb = PERTURB.plan(probe, out / "probes" / "perturb", quiet)
    n = len(perturb.revisions)
    if n < 2 or any(r.tokens <= 0 for r in perturb.revisions):
        chosen = ", ".join(r.name for r in perturb.revisions)
        raise UsageError(f"model={cfg.model}: advice compares two or more checkpoints past 0 tokens; chosen: {chosen}")
    full = n * cfg.steps * cfg.batch_size * cfg.seq_len  # fine-tuning every checkpoint once
    evals = n * (1 + len(cfg.gammas) * cfg.draws)
    share = cfg.probe_budget * full / (1 if reference is not None else 2)
    blocks = cfg.max_blocks or min(int(perturb.blocks.shape[0]), int(share // (evals * cfg.seq_len)))
    if blocks < MIN_BLOCKS:
        raise UsageError(
            f"probe_budget={cfg.probe_budget:g} affords {blocks} eval block(s) per probe evaluation (at least "
            f"{MIN_BLOCKS}): raise --probe-budget, or set --max-blocks"
        )
    if blocks < perturb.blocks.shape[0] and cfg.max_blocks is None:
        perturb = PERTURB.plan(dataclasses.replace(probe, max_blocks=blocks), perturb.out, quiet)
    blocks = int(perturb.blocks.shape[0])
    finetune, probe_tokens = None, evals * blocks * cfg.seq_len
    if reference is None:
        finetune = _finetune_plan(cfg, perturb, blocks, share, FINETUNE, out, quiet)
        c, k = len(finetune.revisions), finetune.cfg.steps
        heldout = finetune.data["n_heldout"]
        probe_tokens += c * (2 * k * cfg.batch_size + 3 * (blocks + heldout)) * cfg.seq_len
    cost = {
        "probe_tokens": probe_tokens,
        "finetune_every_checkpoint_tokens": full,
        "fraction": probe_tokens / full,
        "eval_blocks": blocks,
        "rule": "tokens the probes process (evaluations and probe training) over checkpoints x steps x "
        "batch_size x seq_len of the planned fine-tuning",
    }
    planned = AdvisePlan(cfg, out, perturb, finetune, reference, cost)
    lifecycle.out_decision(out, planned.identity())
    return planned


def _finetune_plan(cfg, perturb, blocks, share, kind, out, quiet):
    """The fine-tuning probe: lr and 2 lr on checkpoints spread over the series, as many steps as the
    rest of the budget allows after its evaluations (at most the planned steps)."""
    n = len(perturb.revisions)
    picks = np.unique(np.round(np.linspace(0, n - 1, min(cfg.probe_checkpoints, n))).astype(int))
    shared = {name: getattr(cfg, name) for name in cf.names(SeriesRun)} | {"max_blocks": blocks, "tokens": None}
    shared |= {"revisions": tuple(perturb.revisions[i].name for i in picks), "data": cfg.data, "format": cfg.format}
    per_step = 2 * picks.size * cfg.batch_size * cfg.seq_len
    heldout, planned = 0, None
    while True:  # the held-out examples' evaluations count too: known once the data are read
        evals = 3 * picks.size * (blocks + heldout) * cfg.seq_len
        steps = cfg.probe_steps or min(cfg.steps, int((share - evals) // per_step))
        if steps < 1:
            raise UsageError(
                f"probe_budget={cfg.probe_budget:g} leaves no step for the fine-tuning probe on {picks.size} "
                "checkpoints: raise --probe-budget, set --probe-steps, or give --reference"
            )
        if planned is not None and planned.cfg.steps == steps:
            return planned
        warmup = round(cfg.warmup_steps * steps / cfg.steps)
        run = FinetuneRun(**shared, lrs=(cfg.lr, 2 * cfg.lr), steps=steps, warmup_steps=warmup, seed=cfg.seed)
        planned = kind.plan(run, out / "probes" / "finetune", quiet)
        heldout = planned.data["n_heldout"]


def _reference(cfg: AdviseRun) -> list:
    """The reference's series fine-tuned at (lr, steps); UsageError when it holds none."""
    for path in cfg.reference:
        if not Path(path).is_dir():
            raise UsageError(f"reference={path} is not an existing folder")
    try:
        series, _ = study_series([Path(p) for p in cfg.reference], cfg.gammas, cfg.draws)
    except ValueError as error:
        raise UsageError(f"reference: {error}") from None
    key = (float(cfg.lr), float(cfg.steps))
    found = [s for s in series if key in s.post]
    if not found:
        held = sorted({k for s in series for k in s.post})
        raise UsageError(
            f"reference={','.join(cfg.reference)} holds no series fine-tuned at lr={cfg.lr:g} and steps="
            f"{cfg.steps}; it holds: {', '.join(f'lr={lr:g} steps={s:g}' for lr, s in held) or 'none'}"
        )
    return found


# ----------------------------------------------------------------------------- reading the stores


def study_series(paths: list[Path], gammas, draws: int) -> tuple[list, dict]:
    """``analysis.advice_series.series_of`` the perturb and finetune stores under ``paths``, and the
    first manifest of each kind (``llm perturb``, ``llm finetune``: their settings)."""
    frames: dict[str, dict[str, list]] = {"llm perturb": {}, "llm finetune": {}}
    settings = {}
    for run_dir in (run for path in paths for run in store.find_runs(path)):
        manifest = store.read_manifest(run_dir)
        kind = manifest.get("command")
        if kind in frames:
            settings.setdefault(kind, manifest)
            for setup, rows in store.load(run_dir).groupby("setup"):
                frames[kind].setdefault(str(setup), []).append(rows)
    if not frames["llm perturb"]:
        raise ValueError(f"{', '.join(map(str, paths))} holds no ovt llm perturb store")
    joined = {kind: {k: pd.concat(v, ignore_index=True) for k, v in found.items()} for kind, found in frames.items()}
    return series_of(joined["llm perturb"], joined["llm finetune"], gammas, draws), settings


# --------------------------------------------------------------------------------------- execute


def execute(plan: AdvisePlan, workers: int | None = None) -> dict:
    """Run the probes (resuming), calibrate, predict, write; returns advice.json's payload."""
    from experiments.llm.kinds.finetune import KIND as FINETUNE
    from experiments.llm.kinds.perturb import KIND as PERTURB

    cfg, out = plan.cfg, plan.out
    record = {"run_config": cf.record(cfg, out), "started": lifecycle.now(), "git_commit": lifecycle.git_commit()}
    record |= {"versions": lifecycle.versions(), "status": "running"}
    manifest = lifecycle.begin_run(out, plan.identity(), lambda: plan.identity() | record)
    with lifecycle.marks_failure(out), failures_while_running():  # the directory exists: whatever fails is a failure
        probes = adv.probes_of(PERTURB.execute(plan.perturb, workers), cfg.gammas, cfg.draws)
        tuned = FINETUNE.execute(plan.finetune, workers) if plan.finetune is not None else None
        log_m = math.log(cfg.lr * cfg.steps)
        if tuned is None:
            forgetting, task = transfer_fits(plan.reference, (float(cfg.lr), float(cfg.steps)))
            points = None
        else:
            forgetting, task, points = adv.probe_fits(probes, tuned)
        result = adv.advise(probes, forgetting, log_m, task, seed=cfg.seed)
        payload = _payload(plan, result, task, points)
        store.write_json(out / "advice.json", payload)
        table = _rows(plan, result, points)
        _draw(out, table)
        lifecycle.complete_run(out, manifest | {"advice": payload["advice"]}, table)
    return payload


def _payload(plan: AdvisePlan, result: adv.Advice, task, points) -> dict:
    cfg = plan.cfg
    names_ = result.probes.names
    mode = "reference" if plan.reference is not None else "probe"
    return {
        "command": COMMAND,
        "created": lifecycle.now(),
        "model": plan.perturb.recorded_source,
        "planned": {"lr": cfg.lr, "steps": cfg.steps, "batch_size": cfg.batch_size, "seq_len": cfg.seq_len},
        "loss": "log perplexity (mean NLL, nats) on the probes' eval blocks; in-task: held-out fine-tuning loss",
        "advice": {
            "checkpoint": names_[result.choice],
            "short_list": [names_[i] for i in result.short_list],
            "predicted_loss": float(result.loss[result.choice]),
            "interval": result.loss_interval[result.choice].tolist(),
        },
        "checkpoints": result.rows(),
        "calibration": {
            "mode": mode,
            "reference_series": [s.name for s in plan.reference] if plan.reference is not None else None,
            "probe_points": points,
            "forgetting": result.forgetting.describe(),
            "task": task.describe() if task is not None else None,
        },
        "decomposition": result.decomposition,
        "probes": {"gammas": list(cfg.gammas), "draws": cfg.draws, **plan.cost},
        "caveats": list(result.caveats),
        "method": "analysis.advice (docs/ADVISE.md)",
    }


def _rows(plan: AdvisePlan, result: adv.Advice, points) -> pd.DataFrame:
    """The store's rows: per checkpoint the probes, the predictions and the choice; the
    decomposition's curve (checkpoint ``decomposition``); the fine-tuning probe's measured excess."""
    cfg, p, n = plan.cfg, result.probes, len(result.probes.names)

    def rows(metric, values, checkpoint=p.names, T=p.T, modification="finetune", lr=cfg.lr, steps=cfg.steps):
        fields = {"lr": float(lr), "steps": float(steps)} if modification == "finetune" else {}
        gamma = cfg.gammas[0] if modification == "gaussian" else np.nan
        return store.block(
            source="llm", setup=plan.perturb.setup, checkpoint=list(checkpoint), pretrain_time=np.asarray(T, float),
            modification=modification, gamma=gamma, seed=0, metric=metric, value=np.asarray(values, float), **fields,
        )  # fmt: skip

    blocks = [
        rows("base_loss", p.base, modification="none"),
        rows("gaussian_excess", np.exp(result.log_g), modification="gaussian"),
        rows("predicted_loss", result.loss),
        rows("predicted_loss_low", result.loss_interval[:, 0]),
        rows("predicted_loss_high", result.loss_interval[:, 1]),
        rows("p_best", result.p_best),
        rows("advised", np.arange(n) == result.choice),
        rows("short_list", np.isin(np.arange(n), result.short_list)),
    ]
    if result.task is not None:
        blocks.append(rows("predicted_task_loss", result.task))
    if result.decomposition is not None:
        curve = result.decomposition["curve"]
        blocks.append(rows("predicted_curve", curve["loss"], ["decomposition"] * len(curve["T"]), curve["T"]))
    for point in points or ():
        at, lr, steps = [float(p.T[p.names.index(point["checkpoint"])])], point["lr"], point["steps"]
        blocks.append(rows("probe_excess", [point["excess"]], [point["checkpoint"]], at, lr=lr, steps=steps))
    return pd.concat(blocks, ignore_index=True)


def _draw(out: Path, table: pd.DataFrame) -> None:
    from paper_figures import advice as figure

    try:
        figure.draw(store.validate(table.copy()), out, "advice")
    except ValueError as error:  # the inputs were accepted: a figure that fails is a failure (exit 1)
        raise RuntimeError(f"drawing the advice figure into {out}: {error}") from error


def report(payload: dict) -> str:
    """The table: per checkpoint its tokens, base loss, Gaussian excess, predicted loss after
    fine-tuning [95%], in-task loss, the share of replicates it is best in, and the mark (* advised, +
    short list); then the advice and the caveats."""
    rows = []
    for r in payload["checkpoints"]:
        lo, hi = r["interval"]
        rows.append(
            {
                "checkpoint": r["checkpoint"],
                "tokens": human_tokens(r["tokens"]),
                "base": f"{r['base_loss']:.4f}",
                "excess g": f"{r['gaussian_excess']:.3g}",
                "predicted [95%]": f"{r['predicted_loss']:.4f} [{lo:.4f}, {hi:.4f}]",
                "in-task": f"{r['predicted_task_loss']:.4f}" if "predicted_task_loss" in r else "-",
                "P(best)": f"{r['p_best']:.2f}",
                "": "*" if r["advised"] else "+" if r["short_list"] else "",
            }
        )
    a, probes = payload["advice"], payload["probes"]
    lines = [
        pd.DataFrame(rows).to_string(index=False),
        f"advice: fine-tune {a['checkpoint']} (predicted {a['predicted_loss']:.4f} "
        f"[{a['interval'][0]:.4f}, {a['interval'][1]:.4f}] nats after lr={payload['planned']['lr']:g} x "
        f"{payload['planned']['steps']} steps); short list: {', '.join(a['short_list'])}",
        f"probes: {probes['probe_tokens']:,} tokens = {probes['fraction']:.1%} of fine-tuning every checkpoint "
        f"({probes['finetune_every_checkpoint_tokens']:,}); calibration: {payload['calibration']['mode']}",
    ]
    return "\n".join(lines + [f"caveat: {c}" for c in payload["caveats"]])
