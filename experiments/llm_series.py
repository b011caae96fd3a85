"""What every ``ovt llm`` command on a checkpoint series shares (``perturb``, ``finetune``; ``pretrain``
uses the option helpers and bounds): the options that pick a model and its checkpoints, the checks
made before anything is written, revision resolution, the held-out token set that every checkpoint
must tokenise identically, manifests, and the finish of a run.

Bounds (exit 2 beyond them; ``experiments.arguments`` checks every number for finiteness and range
where it is parsed): ``--seeds`` 1..10,000 draws per gamma; ``--gammas`` / ``--lrs`` at most 100
values; token counts (``--tokens``, ``--budgets``) at most 1e15 (1000T); ``--seq-len`` from 2 to
every checkpoint's ``max_position_embeddings`` (its config.json; 128 or 512 for the presets);
``--batch-size`` 1..1,024; ``--max-blocks`` 1..1,000,000; ``--steps`` and ``--warmup-steps`` at most
1,000,000 (and pre-training budgets at most 1,000,000 steps each); ``--threads`` 1..256; ``--seed``
0..2**63-1.

Every input is checked before the run directory is created (exit 2, one line, nothing written),
numbers and flags before torch is imported. The run directory's lifecycle is ``experiments.run``'s
(``out_decision`` in the plan, ``begin_run`` and ``marks_failure`` around the run): anything that
goes wrong while running is a failure (exit 1) that marks the manifest ``failed`` with the reason;
finished checkpoints are kept under ``DIR/chunks/`` and the same command resumes after them, while
another config may replace a failed run (never a complete one).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from experiments import store
from experiments.arguments import integer, token_counts, unique
from experiments.run import UsageError, begin_run, check_writable, git_commit, now, path_from_run, versions
from llm_validation.tokens import human_tokens

if TYPE_CHECKING:  # annotations only: torch loads when a command runs, after its input is checked
    import torch

DTYPES = ("float32", "bfloat16")
DEVICES = ("cpu", "cuda")
# The bounds of the LLM commands' numbers (module docstring; exit 2 beyond them).
MAX_SEEDS = 10_000  # --seeds: Gaussian draws per gamma
MAX_BATCH = 1_024  # --batch-size
MAX_BLOCKS = 1_000_000  # --max-blocks
MAX_STEPS = 1_000_000  # --steps, --warmup-steps, and the steps of each pre-training budget
MAX_THREADS = 256  # --threads
MAX_SEED = 2**63 - 1  # --seed


class RunFailure(RuntimeError):
    """A failure after the run directory was created (exit 1; the stored checkpoints are kept)."""


def add_checkpoint_arguments(p: argparse.ArgumentParser) -> None:
    """``--model`` and which of its checkpoints (``--revisions`` | ``--tokens``; a folder series: all by default)."""
    p.add_argument("--model", required=True, help="hub id (ORG/NAME) or local folder series")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--revisions", help="comma-separated revision names")
    which.add_argument(
        "--tokens",
        help="comma-separated token counts (1e9, 2.3T); the nearest revisions are used "
        "(one of the two is required for a hub id; default for a folder series: "
        "every checkpoint)",
    )


def add_size_arguments(p: argparse.ArgumentParser, batch: str) -> None:
    """``--seq-len``, ``--batch-size``, ``--max-blocks``, ``--threads``, with their bounds."""
    p.add_argument(
        "--seq-len",
        type=integer("--seq-len", 2),
        default=128,
        help="tokens per block (default 128; at most each checkpoint's max_position_embeddings)",
    )
    p.add_argument(
        "--batch-size",
        type=integer("--batch-size", 1, MAX_BATCH),
        default=8,
        help=f"{batch} (default 8, at most {MAX_BATCH:,})",
    )
    p.add_argument(
        "--max-blocks",
        type=integer("--max-blocks", 1, MAX_BLOCKS),
        default=None,
        help=f"use the first N blocks of the eval text (default all, N <= {MAX_BLOCKS:,})",
    )
    add_threads_argument(p)


def add_threads_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threads",
        type=integer("--threads", 1, MAX_THREADS),
        default=None,
        help=f"torch threads (default: torch's own; 1 is fastest for small models on a busy machine; "
        f"at most {MAX_THREADS})",
    )


def available_revisions(model: str):
    """(is_folder, revisions) of ``model``; bad input raises UsageError / CheckpointError."""
    from llm_validation.checkpoints import ALLOWED_FORMS, list_revisions

    path = Path(model).expanduser()
    if path.exists() and not path.is_dir():
        raise UsageError(f"model={model!r} is a file; give a folder series or a hub id ORG/NAME")
    if not path.is_dir() and model.startswith((".", "/", "~")):
        raise UsageError(f"model={model!r} is not an existing folder; give a folder series or a hub id ORG/NAME")
    revisions = list_revisions(path if path.is_dir() else model)
    if not revisions:
        raise UsageError(f"model={model!r} has no checkpoint revisions; names allowed: {ALLOWED_FORMS}")
    return path.is_dir(), revisions


@dataclasses.dataclass
class SeriesPlan:
    """The plan fields of every checkpoint-series command (``plan_checkpoints``), checked before
    anything is written."""

    model: str  # as given
    source: str  # hub id, or the folder's absolute path
    is_folder: bool
    setup: str  # the store's ``setup``: hub id, or the folder's name
    revisions: list  # [Revision], sorted by (stage, tokens, step)
    requested: dict  # revision name -> the token counts that chose it (--tokens)
    warnings: list[str]  # printed on stderr when the run starts (the plan itself prints nothing)
    eval_path: Path
    eval_sha256: str
    blocks: torch.Tensor  # [n_blocks, seq_len]
    device: str
    threads: int | None
    out: Path
    quiet: bool
    args: dict

    @property
    def recorded_source(self) -> str:
        """The model as manifests record it: a hub id, or the folder relative to the run directory."""

        return path_from_run(self.source, self.out) if self.is_folder else self.source


def light_checks(args) -> list[float] | None:
    """The checks of a checkpoint-series command that need no torch (run before importing it): a hub
    id needs ``--revisions`` or ``--tokens``, and ``--out`` must be writable. Returns the parsed
    ``--tokens`` (None without)."""

    if args.revisions is None and args.tokens is None and not Path(args.model).expanduser().is_dir():
        raise UsageError(
            f"--model {args.model} is not a local folder series: give --revisions or --tokens "
            "(only a folder series defaults to every checkpoint)"
        )
    counts = token_counts(args.tokens) if args.tokens is not None else None
    check_writable(args.out)
    return counts


def check_device(device: str) -> None:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available here; allowed: cpu")


def plan_checkpoints(args, counts: list[float] | None) -> dict:
    """The fields of ``SeriesPlan`` (every checkpoint-series command shares them), checked:
    the model and its chosen revisions, each revision's position limit against ``--seq-len``, and
    the eval token set (identical under every checkpoint's tokenizer)."""
    from llm_validation.evaluate import read_texts

    read_texts(args.eval_text)  # does not exist / not UTF-8 / holds no text: before any model is read
    is_folder, available = available_revisions(args.model)
    source = str(Path(args.model).expanduser().resolve()) if is_folder else args.model
    revisions, requested, warnings = _resolve_revisions(args, available, counts)
    _check_positions(source, is_folder, revisions, args.seq_len)
    blocks = _token_blocks(args, source, is_folder, revisions, args.seq_len, args.max_blocks)
    return dict(
        model=args.model,
        source=source,
        is_folder=is_folder,
        setup=Path(source).name if is_folder else args.model,
        revisions=revisions,
        requested=requested,
        warnings=warnings,
        eval_path=Path(args.eval_text).resolve(),
        eval_sha256=hashlib.sha256(Path(args.eval_text).read_bytes()).hexdigest(),
        blocks=blocks,
        device=args.device,
        threads=args.threads,
        out=Path(args.out),
        quiet=args.quiet,
        args={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if not callable(v)},
    )


def _resolve_revisions(args, available, counts: list[float] | None) -> tuple[list, dict, list[str]]:
    """(chosen revisions, {name: requested token counts}, warnings): by ``--revisions`` names, the
    nearest to each ``--tokens`` count, or (neither given; a folder series) every one."""
    from llm_validation.checkpoints import SERIES, nearest_revisions, parse_revision

    model = args.model
    by_name = {r.name: r for r in available}
    chosen, requested, warnings = list(available), {}, []
    if args.revisions is not None:
        chosen = []
        for name in unique(name.strip() for name in args.revisions.split(",")):
            wanted = parse_revision(name)  # ValueError naming the value and the allowed forms
            if name not in by_name:
                nearest = sorted(available, key=lambda r: (abs(r.tokens - wanted.tokens), r.tokens, r.step))[:3]
                raise UsageError(
                    f"revision={name!r} is not available for {model}; nearest available: "
                    f"{', '.join(r.name for r in nearest)}"
                )
            chosen.append(by_name[name])
    elif counts is not None:
        stage = SERIES[model].stage if model in SERIES else None
        pool = [r for r in available if r.stage == stage] if stage else available
        if len({r.stage for r in pool}) > 1:
            raise UsageError(
                f"--tokens is ambiguous for {model}: its revisions span stages "
                f"{sorted({r.stage or '-' for r in pool})} whose token counts restart; use --revisions"
            )
        if not pool:
            raise UsageError(f"--tokens: {model} has no {stage} revisions to choose from")
        chosen = nearest_revisions(pool, counts)
        for count, revision in zip(counts, chosen):
            requested.setdefault(revision.name, []).append(count)
        far = [
            f"{human_tokens(count)} -> {r.name}"
            for count, r in zip(counts, chosen)
            if max(count, r.tokens) > 2 * min(count, r.tokens)
        ]
        if far:
            warnings.append(
                f"ovt: warning: --tokens {', '.join(far)}: the nearest checkpoint is more than 2x "
                f"away from the request (`ovt llm revisions {model}` lists them)"
            )
    chosen = sorted({r.name: r for r in chosen}.values(), key=lambda r: (r.stage or "", r.tokens, r.step))
    return chosen, requested, warnings


def _check_positions(source: str, is_folder: bool, revisions, seq_len: int) -> None:
    """``--seq-len`` must fit every checkpoint's position table (config.json ``max_position_embeddings``)."""
    from transformers import AutoConfig

    from llm_validation.checkpoints import CheckpointError

    for revision in revisions:
        try:
            config = (
                AutoConfig.from_pretrained(str(Path(source) / revision.name))
                if is_folder
                else AutoConfig.from_pretrained(source, revision=revision.name)
            )
        except (OSError, ValueError) as error:
            raise CheckpointError(
                f"the config.json of {source}@{revision.name} could not be read: {_first_line(error)}"
            ) from None
        limit = getattr(config, "max_position_embeddings", None)
        if limit is not None and seq_len > limit:
            raise UsageError(
                f"--seq-len {seq_len} exceeds the {limit} positions of {revision.name} "
                f"(max_position_embeddings in its config.json); allowed: 2..{limit}"
            )


def load_tokenizer(source: str, is_folder: bool, revision: str):
    from transformers import AutoTokenizer

    from llm_validation.checkpoints import CheckpointError

    try:
        if is_folder:
            return AutoTokenizer.from_pretrained(str(Path(source) / revision))
        return AutoTokenizer.from_pretrained(source, revision=revision)
    except (OSError, ValueError) as error:
        raise CheckpointError(
            f"the tokenizer of {source}@{revision} could not be read: {_first_line(error)}"
        ) from error


def _first_line(error: Exception) -> str:
    """An error's message cut to its first line (transformers' are paragraphs; ours are one line)."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _token_blocks(plan_args, source: str, is_folder: bool, revisions, seq_len: int, max_blocks: int | None):
    """The eval blocks, tokenised with every checkpoint's tokenizer and required to be identical."""
    import torch

    from llm_validation.evaluate import load_token_blocks

    blocks, first = None, None
    cache: dict[tuple, object] = {}
    for revision in revisions:
        tokenizer = load_tokenizer(source, is_folder, revision.name)
        # Identical tokenizers (the usual case) tokenise the file once.
        backend = getattr(tokenizer, "backend_tokenizer", None)
        key = (type(tokenizer).__name__, tokenizer.eos_token_id, backend.to_str() if backend else revision.name)
        these = cache.get(key)
        if these is None:
            these = cache[key] = load_token_blocks(plan_args.eval_text, tokenizer, seq_len, max_blocks)
        if blocks is None:
            blocks, first = these, revision.name
        elif not torch.equal(these, blocks):
            raise UsageError(
                f"revision={revision.name!r} tokenizes --eval-text {plan_args.eval_text} differently "
                f"from {first!r}: perplexities over different token sets are not comparable; "
                "evaluate such checkpoints in separate runs"
            )
    return blocks


def start(plan) -> dict:
    """Start a planned checkpoint-series run: print the plan's warnings, then ``begin_run`` with
    the plan's identity (resume, replace or new; the manifest written, status running)."""

    for warning in plan.warnings:
        print(warning, file=sys.stderr)
    return begin_run(plan.out, plan.identity(), plan.new_manifest)


@contextlib.contextmanager
def quiet_transformers(quiet: bool):
    """transformers' own progress bars off while ``quiet`` (restored after)."""
    import transformers

    bars_were_on = transformers.utils.logging.is_progress_bar_enabled()
    if quiet:
        transformers.utils.logging.disable_progress_bar()
    try:
        yield
    finally:
        if quiet and bars_were_on:
            transformers.utils.logging.enable_progress_bar()


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """torch's intra-op threads set to ``threads`` for the block (None: unchanged)."""
    import torch

    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def revision_commit(plan: SeriesPlan, revision: str, model=None) -> str | None:
    """The hub commit a revision resolved to (the hub cache's ``refs/REVISION``); None for folders."""
    if plan.is_folder:
        return None
    from huggingface_hub import constants

    ref = Path(constants.HF_HUB_CACHE) / f"models--{plan.source.replace('/', '--')}" / "refs" / revision
    if ref.is_file():
        return ref.read_text().strip() or None
    return getattr(getattr(model, "config", None), "_commit_hash", None)


def revision_entries(plan, **extra) -> list[dict]:
    """The manifest's record of every resolved revision (step, tokens, what chose it, hub commit)."""
    return [
        {
            "name": r.name,
            "step": r.step,
            "tokens": r.tokens,
            "stage": r.stage,
            "requested_tokens": plan.requested.get(r.name),
            "commit": revision_commit(plan, r.name),
            **extra,
        }
        for r in plan.revisions
    ]


def manifest_head(plan, command: str, revision_extra: dict | None = None, eval_extra: dict | None = None) -> dict:
    """The manifest fields every checkpoint-series command shares: what ran, on which model and
    revisions, scored on which held-out token set, with which versions, since when."""

    n_blocks, seq_len = plan.blocks.shape
    return {
        "command": command,
        "source": "llm",
        "setup": plan.setup,
        "args": plan.args,
        "config": plan.config(),
        "model": plan.model,
        "model_source": plan.recorded_source,
        "model_kind": "folder" if plan.is_folder else "hub",
        "revisions": revision_entries(plan, **(revision_extra or {})),
        "eval": {
            "path": path_from_run(plan.eval_path, plan.out),
            "sha256": plan.eval_sha256,
            "n_blocks": int(n_blocks),
            "seq_len": int(seq_len),
            "n_tokens": int(n_blocks * (seq_len - 1)),
            **(eval_extra or {}),
            "tokenization": f"identical token ids under the tokenizers of all {len(plan.revisions)} checkpoints; "
            "documents EOS-separated and packed, remainder dropped",
        },
        "versions": versions(),
        "git_commit": git_commit(),
        "started": now(),
        "status": "running",
    }


def run_checkpoints(plan: SeriesPlan, manifest: dict, name: str, unit: str, per_checkpoint: int, measure) -> None:
    """Every planned checkpoint not yet stored under ``plan.out``, in turn (one model in memory):
    ``measure(index, revision, progress) -> (rows, model, notes)`` loads and measures it, advancing
    the progress bar by ``per_checkpoint`` units; its rows become the checkpoint's chunk and ``notes``
    join its manifest entry, with the hub commit it resolved to. A checkpoint that fails to load or
    measure (ValueError) is a failure while running, naming what is stored."""
    from tqdm import tqdm

    todo = [(i, r) for i, r in enumerate(plan.revisions) if i not in store.stored_chunks(plan.out)]
    bar = dict(desc=f"{name} {plan.setup}", unit=unit, disable=plan.quiet, file=sys.stderr)
    with tqdm(total=len(todo) * per_checkpoint, **bar) as progress:
        for index, revision in todo:
            progress.set_postfix_str(revision.name)
            try:
                rows, model, notes = measure(index, revision, progress)
            except ValueError as error:  # bad checkpoint files found mid-run: a failure, not bad input
                raise RunFailure(
                    f"{plan.model}@{revision.name}: {error}; {len(store.stored_chunks(plan.out))} "
                    f"checkpoint(s) stored in {plan.out}; rerun to resume"
                ) from error
            store.write_table(store.chunk_path(plan.out, index), rows)
            entry = manifest["revisions"][index]
            entry["commit"] = entry.get("commit") or revision_commit(plan, revision.name, model)
            entry.update(notes)
            store.write_json(plan.out / store.MANIFEST, manifest)
            del model  # before the next checkpoint loads


def finish_run(out: Path, n_checkpoints: int, manifest: dict, derive) -> pd.DataFrame:
    """Write ``metrics.parquet`` = every checkpoint's stored chunk plus ``derive(chunks)``, and mark the
    manifest complete. Derived rows come from the stored chunks alone, so a resumed run ends with the
    same table as an uninterrupted one."""

    table = pd.concat([pd.read_parquet(store.chunk_path(out, i)) for i in range(n_checkpoints)], ignore_index=True)
    table = pd.concat([table, derive(table)], ignore_index=True)
    store.write_table(out / store.METRICS, table)
    manifest.update(status="complete", finished=now(), n_rows=len(table))
    store.write_json(out / store.MANIFEST, manifest)
    return table


def t_star_line(labels, values) -> str:
    """``inflection T* (tokens) - gamma=2: 1.78M, gamma=4: none in range``: one curve's T* each."""
    shown = (
        f"{label}: {human_tokens(value) if math.isfinite(value) else 'none in range'}"
        for label, value in zip(labels, values)
    )
    return f"inflection T* (tokens) - {', '.join(shown)}"
