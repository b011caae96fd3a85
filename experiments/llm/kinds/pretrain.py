"""``ovt llm pretrain``: a controlled mini pre-training series, and the base curve of its perplexity.

    ovt llm pretrain [--preset NAME [--quick]] [FIELD=VALUE ...] [--out DIR] [--quiet]
                     [--size tiny|smoke|20k|...] --budgets B1,B2,...
                     [--corpus shakespeare|python|synthetic|sitepackages]
                     [--mode separate|single|wsd] [--decay-fraction 0.2]
                     [--seq-len N] [--batch-size N] [--lr X] [--seed N] [--vocab-size N]
                     [--max-train-chars N] [--max-epochs X] [--max-blocks N]
                     [--threads N] [--workers N] [--cluster slurm|local|debug]

The run is a ``experiments.llm.config.PretrainRun``: every flag is also a field (``budgets=320K,1.3M``), a preset
sets several (``experiments.llm.presets``: one per model size, and ``validation``), and a comma list on a scalar
field sweeps it (``seed=0,1,2``: three series). ``plan(cfg, out)`` checks it, ``execute(plan)``
runs it (``experiments.llm.batch.run_config(cfg, out)`` does both).

Budgets are token counts (``320K,1.3M,10M``); each is trained for ``budget / (batch_size * seq_len)``
steps rounded half up (``PretrainConfig``), and the checkpoint is named by the exact count.
Defaults are the library's (``PretrainConfig``: seq_len 128, batch 8, lr 1e-2, seed 0; the size's
vocabulary, 320 for ``tiny``).

Bounds (exit 2 beyond them, before anything is written): budgets finite and at most 1e15 tokens
(``arguments.MAX_TOKENS``), and at most 1,000,000 steps each (``experiments.llm.config.MAX_STEPS``: a pre-flight
refusal, since a CPU trains the presets at thousands of steps a minute at best); ``seq_len`` 2..the
size's max_position_embeddings (128 for tiny and smoke, 512 for the others); ``batch_size``
1..1,024; ``vocab_size`` 258..1,000,000; ``lr`` > 0; ``max_blocks`` 1..1,000,000; ``threads``
1..256; ``seed`` 0..2**63-1. Every input is checked without importing torch
(``llm_validation.pretrain_config``).

DIR is at once a checkpoint series and a result store:

- the series (``llm_validation.pretrain``): ``series.json``, ``tokenizer/``, one ``save_pretrained``
  folder per budget named ``step{N}-tokens{M}`` with its ``checkpoint.json``;
- ``heldout.txt``: the corpus' held-out documents joined by newlines, the eval text to give
  ``ovt llm perturb`` and ``ovt llm finetune`` as ``--eval-text DIR/heldout.txt``, and the text the
  series' own perplexity is scored on, unless ``--eval-text`` names another (a study's shared one;
  then it is not written);
- ``manifest.json`` and ``metrics.parquet``: per checkpoint of the series, the perplexity of that
  text (``modification='none'``, ``metric='perplexity'``, ``pretrain_time`` = tokens, ``checkpoint``
  = revision name), packed into ``seq_len`` blocks as the series was trained (the first
  ``--max-blocks`` of them when given), so the base curve exists without a perturb run. With the same
  ``--seq-len`` and ``--max-blocks`` it is the ``none`` row perturb writes.

``list_revisions`` reads only subfolders named as revisions, so ``--model DIR`` reads DIR as a plain
series. Every input is checked before anything is written (exit 2, one line). The manifest is
written when the run starts (status ``running``) and marked ``failed`` with the reason if the run
stops on an error (exit 1), ``complete`` at the end. A rerun continues: finished checkpoints are
skipped, an unfinished run resumes from its last state, and checkpoints already evaluated on the
same token set keep their rows. A ``separate`` series may gain budgets; the store then covers every
checkpoint in DIR. Any other change of config is refused, unless the series holds no finished
checkpoint and its last command failed, was interrupted or never finished: then the new command
replaces it (what ``pretrain`` wrote there is removed first).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import pandas as pd

from experiments.llm.config import MAX_STEPS, PretrainRun, record, require
from experiments.llm.kinds.base import RunKind
from experiments.llm.lifecycle import RunFailure, quiet_transformers, torch_threads
from llm_validation.pretrain_config import (
    CHECKPOINT_FILE,
    SERIES_FILE,
    PretrainConfig,
    budget_steps,
    changed_fields,
    config_record,
)
from rundir import fingerprint, store
from rundir.lifecycle import (
    LOCK,
    UsageError,
    check_writable,
    claim,
    clear_run,
    complete_run,
    git_commit,
    marks_failure,
    now,
    path_from_run,
    versions,
)
from rundir.tokens import human_tokens

HELDOUT = "heldout.txt"
EVAL_BATCH_SIZE = 16  # perplexity does not depend on it (a sum over tokens); fixed and recorded
REPLACEABLE = ("failed", "interrupted", "running")  # a series in this state with no checkpoint holds nothing of value


@dataclasses.dataclass
class PretrainPlan:
    """Everything ``pretrain`` needs, checked before anything is written."""

    cfg: PretrainRun  # as given: every setting is read from here
    config: PretrainConfig  # the library's config of the series, built from ``cfg``
    out: Path
    eval_text: Path | None  # None: the corpus' held-out split (``heldout.txt``)
    quiet: bool
    run_config: dict  # the typed config as given (``experiments.llm.config.record``)

    @property
    def setup(self) -> str:
        return self.out.resolve().name


SERIES_FIELDS = ("budgets", "corpus", "mode", "seq_len", "batch_size", "lr", "decay_fraction", "weight_decay",
                 "sam_rho", "seed", "vocab_size", "max_train_chars", "max_epochs",
                 "trunk_checkpoints")  # fmt: skip  # the fields PretrainConfig shares


def plan(cfg: PretrainRun, out: Path, quiet: bool = False) -> PretrainPlan:
    """Check every input of a pretrain run (raising UsageError / ValueError) without writing
    anything, and without importing torch."""
    require(cfg)
    out = Path(out)
    check_writable(out)
    config = PretrainConfig(preset=cfg.size, **{name: getattr(cfg, name) for name in SERIES_FIELDS})
    for budget in config.budgets:
        steps = budget_steps(budget, config.tokens_per_step)
        if steps > MAX_STEPS:
            raise UsageError(
                f"budgets: {human_tokens(budget)} tokens is {steps:,} steps of {config.tokens_per_step:,} "
                f"tokens (batch_size x seq_len); at most {MAX_STEPS:,} steps per budget are allowed"
            )
    _check_series(out, config)
    eval_text = None
    if cfg.eval_text is not None:
        eval_text = Path(cfg.eval_text).expanduser()
        if not eval_text.is_file():
            raise UsageError(f"eval_text={cfg.eval_text!r} is not a file; give a held-out text or leave it unset")
    return PretrainPlan(cfg, config, out, eval_text, quiet, record(cfg, out))


def _check_series(out: Path, config) -> str:
    """What ``pretrain`` does with ``out`` (reads only): "new" (absent or empty), "resume" (this very
    series; a ``separate`` one may gain budgets) or "replace" (another config, or files without a
    series, where ``_replaceable``); UsageError for anything else."""
    path = out / SERIES_FILE
    if not path.is_file():
        if not out.is_dir() or not any(p.name != LOCK for p in out.iterdir()):  # our own lock: still empty
            return "new"
        if _replaceable(out):
            return "replace"
        raise UsageError(
            f"--out {out} is not empty and holds no {SERIES_FILE}; give a new or empty folder, or a series"
        )
    try:
        stored = json.loads(path.read_text())["config"]
    except (ValueError, KeyError, TypeError) as error:
        raise UsageError(f"--out {out}: {SERIES_FILE} is not readable ({error}); choose another --out") from None
    changed = changed_fields(stored, config_record(config))
    if not changed:
        return "resume"
    if _replaceable(out):
        return "replace"
    raise UsageError(
        f"--out {out} holds a series with other {', '.join(f'{k}={stored.get(k)!r}' for k in changed)}; "
        "use a new folder"
    )


def _replaceable(out: Path) -> bool:
    """A series folder that holds nothing of value: no finished checkpoint, and the manifest of a
    ``pretrain`` that failed, was interrupted or never finished."""

    if any(out.glob(f"*/{CHECKPOINT_FILE}")):
        return False
    try:
        manifest = store.read_manifest(out)
    except (OSError, ValueError):
        return False
    return manifest.get("command") == "llm pretrain" and manifest.get("status") in REPLACEABLE


def _clear_series(out: Path) -> None:
    """Remove what ``pretrain`` writes in ``out``, and nothing else: the store, ``series.json``, the
    tokenizer, the held-out text, resume states and temporaries."""

    clear_run(out)
    for path in [
        out / SERIES_FILE,
        out / HELDOUT,
        out / "tokenizer",
        *out.glob(".resume-*"),
        *out.glob(".tmp-*"),
        *out.glob(f"{SERIES_FILE}.tmp"),
    ]:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _begin(plan: PretrainPlan, previous: dict) -> dict:
    """The manifest of a starting run, written with status running: it continues ``previous`` (a
    resume, noted under ``resumed``) or starts afresh."""

    manifest = {
        "command": "llm pretrain",
        "source": "llm",
        "setup": plan.setup,
        "run_config": plan.run_config,
        "config": previous.get("config", {"series": config_record(plan.config)}),
        "model": ".",
        "model_kind": "folder",
        "seed": plan.config.seed,
        "threads": plan.cfg.threads,
        "versions": versions(),
        "git_commit": git_commit(),
        "started": previous.get("started", now()),
        "status": "running",
    }
    if previous:
        manifest["resumed"] = [*previous.get("resumed", []), now()]
    store.write_json(plan.out / store.MANIFEST, manifest)
    return manifest


def _write_heldout(plan: PretrainPlan) -> Path:
    from llm_validation.corpora import load_corpus

    heldout = load_corpus(plan.config.corpus, max_chars=plan.config.max_train_chars).heldout
    path = plan.out / HELDOUT
    with store.atomic_path(path) as tmp:
        tmp.write_text("\n".join(heldout), encoding="utf-8")
    return path


def _eval_record(plan: PretrainPlan, blocks, heldout: Path) -> dict:
    n_blocks, seq_len = blocks.shape
    return {
        "path": path_from_run(heldout, plan.out),
        "sha256": fingerprint.sha256(heldout),
        "seq_len": int(seq_len),
        "n_blocks": int(n_blocks),
        "max_blocks": plan.cfg.max_blocks,
        "n_tokens": int(n_blocks * (seq_len - 1)),
        "batch_size": EVAL_BATCH_SIZE,
        "dtype": "float32",
        "device": "cpu",
        "tokenization": "the series tokenizer; held-out documents joined by newlines into one text, "
        "packed into seq_len blocks, remainder dropped",
    }


def _rows(plan: PretrainPlan, revision, result) -> pd.DataFrame:
    return store.block(
        source=["llm"],
        setup=plan.setup,
        checkpoint=revision.name,
        pretrain_time=float(revision.tokens),
        modification="none",
        seed=plan.config.seed,
        metric="perplexity",
        value=result.perplexity,
        mean_nll=result.mean_nll,
        n_tokens=result.n_tokens,
        train_steps=revision.step,
        diverged=result.diverged,
    )


def prepare(plan: PretrainPlan) -> tuple[dict, dict]:
    """The run started: an unfinished series of another config cleared, the manifest written
    (status running); returns (the previous manifest or {}, the new one)."""
    out = plan.out
    claim(out)
    if _check_series(out, plan.config) == "replace":
        _clear_series(out)  # said even when quiet, as rundir.lifecycle.begin_run does: files are removed
        print(f"ovt: replacing the unfinished series of another config in {out}", file=sys.stderr)
    previous = store.read_manifest(out) if (out / store.MANIFEST).is_file() else {}
    return previous, _begin(plan, previous)


def prepare_units(plan: PretrainPlan) -> list[str | None]:
    """Start the run and return what still trains, each part independently of the others (a cluster
    array's jobs): the unsaved budgets of a ``separate`` series, else the whole series (``None``)
    unless it is done. The series' tokenizer is trained first, once."""
    from llm_validation.checkpoints import is_saved
    from llm_validation.pretrain import prepare_series

    prepare(plan)
    with marks_failure(plan.out):
        prepare_series(plan.config, plan.out)
    targets = [*plan.config.targets(), *plan.config.trunk_targets()]
    pending = [t.revision for t in targets if not is_saved(plan.out, t.revision)]
    return pending if plan.config.mode == "separate" or not pending else [None]


def execute_unit(plan: PretrainPlan, unit: str | None) -> None:
    """Train one budget of a ``separate`` series (or, ``None``, the whole series): a cluster job."""
    from llm_validation.pretrain import pretrain

    with quiet_transformers(True):
        pretrain(plan.config, plan.out, progress=False, threads=plan.cfg.threads, only=None if unit is None else [unit])


def execute(plan: PretrainPlan, workers: int | None = 1) -> pd.DataFrame:
    """Train the planned series into ``plan.out`` (resuming; runs that do not depend on each other in
    ``workers`` processes), then store the perplexity of every checkpoint in it on ``heldout.txt``;
    returns the table written to ``metrics.parquet``.

    Checkpoints already evaluated on the same token set (manifest ``config.eval``) keep their rows;
    the table is rewritten after each new one, so an interrupted evaluation resumes too.
    """
    from tqdm import tqdm
    from transformers import AutoTokenizer

    from llm_validation.checkpoints import list_revisions, load_checkpoint
    from llm_validation.evaluate import load_token_blocks, perplexity
    from llm_validation.parallel import worker_count
    from llm_validation.pretrain import pretrain

    out, metrics = plan.out, plan.out / store.METRICS
    previous, manifest = prepare(plan)
    processes = worker_count(workers, len(plan.config.budgets))
    manifest["workers"] = processes
    with marks_failure(out), torch_threads(plan.cfg.threads), quiet_transformers(plan.quiet):
        try:
            pretrain(plan.config, out, progress=not plan.quiet, threads=plan.cfg.threads, workers=processes)
            heldout = _write_heldout(plan) if plan.eval_text is None else plan.eval_text
            blocks = load_token_blocks(
                heldout, AutoTokenizer.from_pretrained(out / "tokenizer"), plan.config.seq_len, plan.cfg.max_blocks
            )
        except ValueError as error:  # past the plan, whatever fails is a failure while running (exit 1)
            raise RunFailure(f"{out}: {error}; rerun to resume") from error
        series = json.loads((out / SERIES_FILE).read_text())["config"]
        evaluation = _eval_record(plan, blocks, heldout)
        config = {"series": series, "eval": {k: evaluation[k] for k in ("sha256", "seq_len", "n_blocks")}}
        same_tokens = previous.get("config", {}).get("eval") == config["eval"] and metrics.is_file()
        stored = pd.read_parquet(metrics) if same_tokens else None
        revisions = list_revisions(out)
        manifest.update(
            config=config,
            eval=evaluation,
            revisions=[{"name": r.name, "step": r.step, "tokens": r.tokens} for r in revisions],
        )
        store.write_json(out / store.MANIFEST, manifest)
        frames = [stored[stored.checkpoint == r.name] for r in revisions] if stored is not None else []
        frames = [f for f in frames if len(f)]
        todo = [r for r in revisions if stored is None or r.name not in set(stored.checkpoint)]
        for revision in tqdm(todo, desc=f"perplexity {plan.setup}", unit="ckpt", disable=plan.quiet, file=sys.stderr):
            try:
                model, _ = load_checkpoint(out, revision.name)
            except ValueError as error:
                raise RunFailure(f"{out}@{revision.name}: {error}") from error
            frames.append(_rows(plan, revision, perplexity(model, blocks, EVAL_BATCH_SIZE)))
            store.write_table(metrics, pd.concat(frames, ignore_index=True))
        table = pd.concat(frames, ignore_index=True).sort_values("pretrain_time", kind="stable", ignore_index=True)
        return complete_run(out, manifest, table)


def report(plan: PretrainPlan, table: pd.DataFrame) -> str:
    """What ``ovt llm pretrain`` prints after a run: every checkpoint's tokens and perplexity."""
    frame = pd.DataFrame(
        {"checkpoint": table.checkpoint, "tokens": table.pretrain_time.map(human_tokens), "perplexity": table.value}
    )
    text = plan.eval_text or plan.out / HELDOUT
    return f"{len(table)} checkpoint(s) in {plan.out}; eval text {text}\n" + frame.to_string(
        index=False, float_format=lambda v: f"{v:.4g}"
    )


class Pretrain(RunKind):
    """``ovt llm pretrain``: its units are the budgets of a ``separate`` series, else the whole series."""

    name = "pretrain"
    CONFIG = PretrainRun
    HELP = "train a mini OLMo checkpoint series (one run per token budget) and store its perplexity"

    def plan(self, cfg: PretrainRun, out: Path, quiet: bool = False) -> PretrainPlan:
        return plan(cfg, out, quiet)

    def execute(self, plan: PretrainPlan, workers: int | None = 1) -> pd.DataFrame:
        return execute(plan, workers)

    def prepare_units(self, plan: PretrainPlan) -> list[str | None]:
        return prepare_units(plan)

    def execute_unit(self, plan: PretrainPlan, unit: str | None) -> None:
        execute_unit(plan, unit)

    def report(self, plan: PretrainPlan, table: pd.DataFrame) -> str:
        return report(plan, table)


KIND = Pretrain()
