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
    DIR/multimodal/SIZE_seed=S        ``ovt llm multimodal`` at ``multimodal_lrs`` on ``multimodal_seeds``
    DIR/series/SIZE_ARM_seed=S        a mitigation study's pre-training arms (``arms``: SAM, weight decay,
                                      the anneal's share), fine-tuned as the series are (finetune/DATA/...)
    DIR/finetune-replay/replay=R/...  fine-tuning that replays the corpus' training text (``replays``)
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

from experiments.llm.config import FinetuneRun, PerturbRun, PretrainRun
from experiments.llm.config_measures import CurvatureRun, QuantizeRun
from experiments.llm.config_multimodal import MultimodalRun
from experiments.llm.study_design import STUDIES, Study, describe, get  # noqa: F401  (the study's presets)
from rundir import store
from rundir.lifecycle import UsageError, check_writable, claim, now, release

STUDY_FILE = "study.json"
STAGES = ("pre-training", "measurements", "analysis")


def pretrain_runs(study: Study, out: Path) -> list[tuple[PretrainRun, Path]]:
    """Every series: the study's own, then each pre-training arm's (``Study.arms``: its fields changed,
    no trunk), the same sizes, seeds and budgets."""
    runs = []
    for size, seed, budgets in study.series():
        for arm, changed in (("", ()), *study.arms):
            cfg = PretrainRun(
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
                trunk_checkpoints=0 if arm else study.trunk_checkpoints(size, seed),
                max_blocks=study.eval_blocks,
                eval_text=str(out / "eval.txt"),
                threads=1,
            )
            runs.append(
                (dataclasses.replace(cfg, **dict(changed)), out / "series" / study.series_name(size, seed, arm))
            )
    return runs


def _on_series(study: Study, out: Path, size: str, seed: int, blocks: int, arm: str = "") -> dict:
    return dict(
        model=str(out / "series" / study.series_name(size, seed, arm)),
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
    """Every run over the series: perturb, the fine-tuning grids, the L2 pull, curvature (perturb and
    curvature where the study has gammas for them), the modifications, and the mitigations."""
    runs = []
    for size, seed, _ in study.series():
        name = study.series_name(size, seed)
        on = _on_series(study, out, size, seed, study.eval_blocks)
        if study.gammas:
            perturb = PerturbRun(**on, gammas=study.gammas, seeds=study.draws, batch_size=32)
            runs.append((perturb, out / "perturb" / name))
        for data in study.finetune_data:
            tune = _tuning(study, data)
            runs.append((FinetuneRun(**on, **tune, lrs=study.lrs), out / study.finetune_stage(data) / name))
        for reg in study.regs:
            tune = _tuning(study, study.finetune_data[0])
            reg_out = out / "finetune-reg" / f"reg={reg:g}" / name
            runs.append((FinetuneRun(**on, **tune, lrs=(study.reg_lr,), reg=reg), reg_out))
        if study.curvature_gammas:
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
        runs += _mitigations(study, out, size, seed)
        if study.adapts(size, seed):
            # stage 1 (the projector alone) as long as stage 2, in the study's fine-tuning regime
            tune = dict(steps=study.steps, warmup_steps=study.warmup_steps, repeats=study.finetune_repeats)
            tune |= dict(stage1_steps=study.steps)
            adapt = MultimodalRun(**on, **tune, lrs=study.multimodal_lrs, batch_size=study.finetune_batch)
            runs.append((adapt, out / "multimodal" / name))
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


def _mitigations(study: Study, out: Path, size: str, seed: int) -> list[tuple[object, Path]]:
    """Each pre-training arm's series fine-tuned as the study's own is, at ``lrs`` on the first dataset
    (``DIR/finetune/DATA/SIZE_ARM_seed=S``); each replay fraction on the study's own series at ``reg_lr``,
    replaying the corpus' training text (``DIR/finetune-replay/replay=R/SIZE_seed=S``)."""
    first = study.finetune_data[0]
    runs = []
    for arm, _ in study.arms:
        on = _on_series(study, out, size, seed, study.eval_blocks, arm)
        tune = FinetuneRun(**on, **_tuning(study, first), lrs=study.lrs)
        runs.append((tune, out / study.finetune_stage(first) / study.series_name(size, seed, arm)))
    on = _on_series(study, out, size, seed, study.eval_blocks)
    for r in study.replays:
        replay = dict(replay=r, replay_data=f"corpus:{study.corpus}")
        tune = FinetuneRun(**on, **_tuning(study, first), lrs=(study.reg_lr,), **replay)
        runs.append((tune, out / "finetune-replay" / f"replay={r:g}" / study.series_name(size, seed)))
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
        if study.mitigates:
            from experiments.llm import study_mitigations

            report.update(study_mitigations.write(study, name, out))
        elif study.pilot_for:
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
