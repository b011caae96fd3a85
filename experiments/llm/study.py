"""``ovt llm study NAME``: the controlled LLM study, the whole protocol from one command.

    ovt llm study --list
    ovt llm study study-quick [--out DIR] [--workers N] [--quiet]

A study (``Study``; presets ``STUDIES``) pre-trains, at every model size and seed, a budget series
on a corpus large enough that no training token is seen more than ``max_epochs`` times, then runs
on every series the protocol's four measurements, each an ordinary run directory:

    DIR/series/SIZE_seed=S            ``ovt llm pretrain`` (WSD: every checkpoint annealed)
    DIR/perturb/SIZE_seed=S           ``ovt llm perturb``: ``draws`` paired draws per gamma
    DIR/finetune/DATA/SIZE_seed=S     ``ovt llm finetune``: the lr grid on each fine-tuning dataset
    DIR/finetune-reg/DATA/SIZE_seed=S the L2 pull: ``regs`` at ``reg_lr`` on the first dataset
    DIR/curvature/SIZE_seed=S         ``ovt llm curvature``: Hessian trace, top eigenvalue, excess
    DIR/quantize/SIZE_seed=S          ``ovt llm quantize``: round-to-nearest at ``quant_bits``
    DIR/trunk/KIND/SIZE_seed=S        the series of ``trunk_seeds`` save their WSD trunk (un-annealed) at
                                      every budget too; perturb (``trunk_gammas``), finetune on the first
                                      dataset (``trunk_lrs``) and quantize run on those checkpoints
    DIR/eval.txt                      the held-out text every evaluation scores (the first held-out
                                      documents of the corpus, ``eval_chars`` characters)

and ends with the analysis (``experiments.llm.study_report``): predictions made on the fit sizes first, then the
claims table. Every stage's runs go side by side in ``workers`` processes (longest first); every run
resumes, so the same command after a kill continues where it stopped. ``DIR/study.json`` records
the preset, its fields, each stage's wall time and the status.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

from experiments.llm.config import CurvatureRun, FinetuneRun, PerturbRun, PretrainRun, QuantizeRun
from rundir import store
from rundir.lifecycle import UsageError, check_writable, claim, now, release

STUDY_FILE = "study.json"
STAGES = ("pre-training", "measurements", "analysis")


@dataclasses.dataclass(frozen=True)
class Study:
    """Every choice of a study, fixed before its data exist (the preset is the pre-registration)."""

    sizes: tuple[tuple[str, tuple[int, ...]], ...]  # (model size, token budgets), the costliest first
    seeds: tuple[int, ...] = (0, 1, 2)  # pre-training series of every size ...
    size_seeds: tuple[tuple[str, tuple[int, ...]], ...] = ()  # ... but these sizes' (the power analysis' n)
    corpus: str = "sitepackages"
    max_train_chars: int | None = 40_000_000
    max_epochs: float = 4.0
    mode: str = "wsd"
    seq_len: int = 64
    batch_size: int = 64
    lr: float = 1e-2
    eval_chars: int = 400_000
    eval_blocks: int = 1024  # x (seq_len - 1) predicted tokens: 64,512 at seq_len 64
    gammas: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
    draws: int = 8
    finetune_data: tuple[str, ...] = ("corpus:shakespeare", "corpus:synthetic")
    lrs: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
    steps: int = 100
    warmup_steps: int = 0  # linear warmup of every fine-tuning run
    finetune_repeats: int = 1  # batch orders per (checkpoint, lr, dataset), the same at every checkpoint
    finetune_batch: int = 16
    regs: tuple[float, ...] = (0.1, 1.0)
    reg_lr: float = 1e-2
    curvature_gammas: tuple[float, ...] = (0.25, 0.5)
    probes: int = 32
    iterations: int = 20
    curvature_blocks: int = 256
    quant_bits: tuple[int, ...] = ()  # round-to-nearest bit widths on every series (claims q, q')
    trunk_seeds: tuple[tuple[str, tuple[int, ...]], ...] = ()  # (size, seeds) measured on the trunk too (i, j)
    trunk_gammas: tuple[float, ...] = ()  # the trunk's grids: a subset of gammas ...
    trunk_lrs: tuple[float, ...] = ()  # ... and of lrs (on the first dataset)
    fit_gammas: int = 2  # the prediction step fits the largest gammas ...
    fit_lrs: int = 2  # ... and the smallest lrs, and predicts T* of the others
    pilot_for: str | None = None  # a pilot of this study: its analysis is the power analysis

    def series_name(self, size: str, seed: int) -> str:
        return f"{size}_seed={seed}"

    def finetune_stage(self, data: str) -> str:
        """The stage folder of the fine-tuning runs on ``data``: ``finetune/shakespeare``."""
        return "finetune/" + (data.split(":", 1)[-1] if data.startswith("corpus:") else Path(data).stem)

    def seeds_of(self, size: str) -> tuple[int, ...]:
        """The pre-training seeds of ``size``: its own where ``size_seeds`` names it, else ``seeds``."""
        return dict(self.size_seeds).get(size, self.seeds)

    def has_trunk(self, size: str, seed: int) -> bool:
        """Whether the series (size, seed) saves and measures its WSD trunk (``trunk_seeds``)."""
        return seed in dict(self.trunk_seeds).get(size, ())

    def series(self) -> list[tuple[str, int, tuple[int, ...]]]:
        """(size, seed, budgets) of every series, the costliest size first."""
        return [(size, seed, budgets) for size, budgets in self.sizes for seed in self.seeds_of(size)]


STUDIES: dict[str, Study] = {
    # The reference: 9 doubling budgets per size (256x in tokens), 20k to 163.8M tokens (8,050 tokens
    # per parameter), 5k to 81.9M (16,980); the whole pinned corpus trains (max_epochs caps the passes).
    # Fine-tuning in the paper's regime: lrs at and below the pre-training peak, with warmup. The
    # series and orders are the pilot's plan (paper_figures/reference/pilot/power.json): 6 series of
    # 20k and 12 of the noisier, cheaper 5k, 2 orders; Shakespeare alone, to stay near 6 hours.
    "study": Study(
        sizes=(
            ("20k", tuple(4096 * s for s in (156, 312, 625, 1250, 2500, 5000, 10000, 20000, 40000))),
            ("5k", tuple(4096 * s for s in (78, 156, 312, 625, 1250, 2500, 5000, 10000, 20000))),
        ),
        seeds=tuple(range(6)),
        size_seeds=(("5k", tuple(range(12))),),
        finetune_data=("corpus:shakespeare",),
        max_train_chars=None,
        lrs=(1e-4, 3e-4, 1e-3, 3e-3),
        steps=400,
        warmup_steps=40,
        finetune_repeats=2,
        reg_lr=1e-3,
    ),
    # The pilot that sized the reference's fine-tuning (``analysis.power``; ``ovt llm study pilot --until
    # measurements``): 2 series per size of the reference's design, 5 budgets to 20.5M tokens, the
    # candidate lr grid up to the peak, 400 steps with 40 of warmup, 2 batch orders; Shakespeare only,
    # and the other measurements at their smallest.
    "pilot": Study(
        sizes=(
            ("20k", tuple(4096 * s for s in (312, 625, 1250, 2500, 5000))),
            ("5k", tuple(4096 * s for s in (312, 625, 1250, 2500, 5000))),
        ),
        seeds=(100, 101),
        max_train_chars=None,
        gammas=(1.0,),
        draws=2,
        finetune_data=("corpus:shakespeare",),
        lrs=(1e-4, 1e-3, 3e-3, 1e-2),
        steps=400,
        warmup_steps=40,
        finetune_repeats=2,
        regs=(),
        curvature_gammas=(0.25,),
        probes=2,
        iterations=2,
        curvature_blocks=8,
        pilot_for="study",
    ),
    # make reproduce's: the same protocol at sizes a few minutes afford (8x in tokens, 2 seeds, fewer
    # draws and lrs, shorter fine-tuning in 2 orders); its claims may be INCONCLUSIVE, and say so.
    "study-quick": Study(
        sizes=(
            ("20k", tuple(4096 * s for s in (40, 80, 160, 320))),
            ("5k", tuple(4096 * s for s in (40, 80, 160, 320))),
        ),
        seeds=(0, 1),
        max_train_chars=2_000_000,
        eval_chars=100_000,
        eval_blocks=256,
        gammas=(0.5, 1.0, 2.0, 4.0),
        draws=4,
        finetune_data=("corpus:shakespeare",),
        lrs=(1e-3, 3e-3, 1e-2),
        steps=40,
        warmup_steps=4,
        finetune_repeats=2,
        regs=(1.0,),
        reg_lr=3e-3,
        curvature_gammas=(0.5,),
        probes=32,
        iterations=10,
        curvature_blocks=64,
    ),
}


# The pilot of claims q, i and j on the pilot's series: their trunks, every modification on them at the
# pilot's grids, and quantization at 8, 4 and 3 bits (a study, not a power analysis: its gaps' spread sizes
# the reference's extension).
STUDIES["pilot-anneal"] = dataclasses.replace(
    STUDIES["pilot"], quant_bits=(8, 4, 3), trunk_gammas=(1.0,), trunk_lrs=(1e-4, 1e-3, 3e-3, 1e-2), pilot_for=None,
    trunk_seeds=(("20k", (100, 101)), ("5k", (100, 101))),
)  # fmt: skip


def get(name: str) -> Study:
    if name not in STUDIES:
        raise UsageError(f"study {name!r} is unknown; allowed: {', '.join(STUDIES)}")
    return STUDIES[name]


def describe(name: str) -> str:
    study = STUDIES[name]
    sizes = ", ".join(f"{size} {len(b)} budgets to {b[-1] / 1e6:.3g}M" for size, b in study.sizes)
    seeds = ", ".join(f"{size} {len(study.seeds_of(size))}" for size, _ in study.sizes)
    return f"{name:12s} {sizes}; series: {seeds}; gammas {study.gammas} x {study.draws} draws"


def pretrain_runs(study: Study, out: Path) -> list[tuple[PretrainRun, Path]]:
    return [
        (
            PretrainRun(
                size=size,
                budgets=budgets,
                corpus=study.corpus,
                mode=study.mode,
                seq_len=study.seq_len,
                batch_size=study.batch_size,
                lr=study.lr,
                seed=seed,
                max_train_chars=study.max_train_chars,
                max_epochs=study.max_epochs,
                trunk_checkpoints=study.has_trunk(size, seed),
                max_blocks=study.eval_blocks,
                eval_text=str(out / "eval.txt"),
                threads=1,
            ),
            out / "series" / study.series_name(size, seed),
        )
        for size, seed, budgets in study.series()
    ]


def _on_series(study: Study, out: Path, size: str, seed: int, blocks: int) -> dict:
    return dict(
        model=str(out / "series" / study.series_name(size, seed)),
        eval_text=str(out / "eval.txt"),
        seq_len=study.seq_len,
        max_blocks=blocks,
        threads=1,
    )


def _tuning(study: Study, data: str) -> dict:
    """The fine-tuning fields every run of a study shares."""
    return dict(
        data=data,
        format="text",
        steps=study.steps,
        warmup_steps=study.warmup_steps,
        repeats=study.finetune_repeats,
        batch_size=study.finetune_batch,
    )


def measurement_runs(study: Study, out: Path) -> list[tuple[object, Path]]:
    """Every run over the series: perturb, the fine-tuning grids, the L2 pull, curvature."""
    runs = []
    for size, seed, _ in study.series():
        name = study.series_name(size, seed)
        on = _on_series(study, out, size, seed, study.eval_blocks)
        runs.append((PerturbRun(**on, gammas=study.gammas, seeds=study.draws, batch_size=32), out / "perturb" / name))
        for data in study.finetune_data:
            tune = _tuning(study, data)
            runs.append((FinetuneRun(**on, **tune, lrs=study.lrs), out / study.finetune_stage(data) / name))
        for reg in study.regs:
            tune = _tuning(study, study.finetune_data[0])
            reg_out = out / "finetune-reg" / f"reg={reg:g}" / name
            runs.append((FinetuneRun(**on, **tune, lrs=(study.reg_lr,), reg=reg), reg_out))
        curvature = _on_series(study, out, size, seed, study.curvature_blocks)
        runs.append(
            (
                CurvatureRun(
                    **curvature,
                    gammas=study.curvature_gammas,
                    draws=study.draws,
                    probes=study.probes,
                    iterations=study.iterations,
                    batch_size=32,
                ),
                out / "curvature" / name,
            )
        )
        runs += _modifications(study, out, name, on, study.has_trunk(size, seed))
    return runs


def _modifications(study: Study, out: Path, name: str, on: dict, trunk: bool) -> list[tuple[object, Path]]:
    """Quantization of the annealed checkpoints; on a series with a trunk, every modification of
    the trunk's checkpoints (``DIR/trunk/...``)."""
    runs = []
    if study.quant_bits:
        runs.append((QuantizeRun(**on, bits=study.quant_bits, batch_size=32), out / "quantize" / name))
    if not trunk:
        return runs
    on = on | {"stage": "trunk"}
    if study.trunk_gammas:
        perturb = PerturbRun(**on, gammas=study.trunk_gammas, seeds=study.draws, batch_size=32)
        runs.append((perturb, out / "trunk" / "perturb" / name))
    if study.trunk_lrs:
        tune = _tuning(study, study.finetune_data[0])
        runs.append(
            (
                FinetuneRun(**on, **tune, lrs=study.trunk_lrs),
                out / "trunk" / study.finetune_stage(study.finetune_data[0]) / name,
            )
        )
    if study.quant_bits:
        runs.append((QuantizeRun(**on, bits=study.quant_bits, batch_size=32), out / "trunk" / "quantize" / name))
    return runs


def write_eval_text(study: Study, out: Path) -> Path:
    """``DIR/eval.txt``: the corpus' first held-out documents, ``eval_chars`` characters at least
    (whole documents), joined by newlines; never training text (``corpora`` splits by document)."""
    from llm_validation.corpora import load_corpus

    path = out / "eval.txt"
    if path.is_file():
        return path
    chosen, total = [], 0
    for document in load_corpus(study.corpus, max_chars=study.max_train_chars).heldout:
        chosen.append(document)
        total += len(document)
        if total >= study.eval_chars:
            break
    with store.atomic_path(path) as tmp:
        tmp.write_text("\n".join(chosen), encoding="utf-8")
    return path


def run_study(
    name: str, out: Path, workers: int | None = None, quiet: bool = False, until: str = STAGES[-1]
) -> dict | None:
    """Run (or resume) the study ``name`` into ``out``; returns its report (``experiments.llm.study_report``), or
    None when ``until`` stops it after an earlier stage (status ``stopped``, resumed by the next call)."""
    if until not in STAGES:
        raise ValueError(f"until={until!r} is unknown; allowed: {', '.join(STAGES)}")
    from experiments.llm import study_report as llm_study_report
    from experiments.llm.batch import BY_CONFIG, run_cells
    from experiments.llm.lifecycle import failures_while_running

    study = get(name)
    out = Path(out)
    check_writable(out)
    path = out / STUDY_FILE
    record = store.read_object(path, "delete it or give another --out") if path.is_file() else {}
    if record and record.get("study") != name:
        raise UsageError(f"--out {out} holds study {record.get('study')!r}; give a new folder for {name!r}")
    claim(out)  # the study's folder for this process (its runs lock their own)
    if record:
        record.setdefault("resumed", []).append(now())
    record = record or {"study": name, "started": now(), "stages": {}}
    record["config"] = dataclasses.asdict(study)  # the preset as it runs (its runs check their own configs)
    if any(s.pilot_for == name for s in STUDIES.values()):
        from experiments.llm import study_power as llm_study_power

        record["power"] = {"pilot": llm_study_power.reference_record(), "used": llm_study_power.used(study)}
    record.update(status="running")
    record.pop("error", None)
    store.write_json(path, record)

    def stage(label: str, work) -> None:
        start = time.perf_counter()
        try:
            work()
        finally:  # an interrupted stage's time counts too: the wall time is the study's cost
            record["stages"][label] = record["stages"].get(label, 0.0) + time.perf_counter() - start
            store.write_json(path, record)

    def runs_of(label: str, runs: list):
        def work() -> None:
            if not quiet:
                print(f"study {name}: {label} ({len(runs)} runs)", file=sys.stderr)
            plans = [(BY_CONFIG[type(cfg)], BY_CONFIG[type(cfg)].plan(cfg, run_out, True)) for cfg, run_out in runs]
            with failures_while_running():
                run_cells(plans, workers, quiet)

        return work

    report: dict = {}

    def analyse() -> None:
        if study.pilot_for:
            from experiments.llm import study_power as llm_study_power

            report.update(study=name, power=llm_study_power.write(out, study, get(study.pilot_for)))
        else:
            report.update(llm_study_report.write(study, name, out))

    try:
        write_eval_text(study, out)
        for label, runs in (("pre-training", pretrain_runs), ("measurements", measurement_runs)):
            stage(label, runs_of(label, runs(study, out)))
            if until == label:
                record["status"] = "stopped"
                store.write_json(path, record)
                return None
        stage("analysis", analyse)
    except BaseException as error:
        interrupted = isinstance(error, KeyboardInterrupt)
        record.update(status="interrupted" if interrupted else "failed", stopped=now())
        if not interrupted:
            record["error"] = f"{type(error).__name__}: {error}"
        store.write_status(path, record)
        raise
    finally:
        release(out)
    record.update(status="complete", finished=now(), wall_seconds=sum(record["stages"].values()))
    store.write_json(path, record)
    return report
