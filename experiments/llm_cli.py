"""``ovt llm ...``: the LLM side of the command line (docs/ARCHITECTURE.md, "CLI contract").

    ovt llm revisions MODEL
    ovt llm pretrain ...   (``llm_pretrain_cli``: a mini pre-training series and its base perplexity)
    ovt llm finetune ...   (``llm_finetune_cli``: an lr grid of fine-tuning on every checkpoint)
    ovt llm perturb --model M [--revisions R1,R2 | --tokens 1e9,2.3T] --eval-text FILE
                    --gammas G1,G2 --seeds K [--scale init|relative|absolute] --out DIR
                    [--seq-len 128] [--batch-size 8] [--max-blocks N] [--threads N]
                    [--dtype float32|bfloat16] [--device cpu|cuda] [--quiet]

``cli.py`` wires this in with ``llm_cli.add_parser(sub)`` and ``"llm": llm_cli.run``.

``perturb`` evaluates, for each checkpoint in turn (one model in memory at a time), the held-out
perplexity of the checkpoint itself (``modification='none'``, ``gamma`` NaN, ``seed`` 0) and of
``K`` Gaussian draws per gamma (``modification='gaussian'``, ``seed`` k = 0..K-1). Draw k uses the
noise of ``perturb.gaussian_noise(k, name, shape)`` on every checkpoint, so draws are paired across
checkpoints. The token set is the same for every checkpoint and draw: the eval text is tokenised
with *each* checkpoint's own tokenizer, and the run refuses (exit 2, before writing anything) when
two checkpoints' tokenizers give different token ids, since their perplexities would not be
comparable. An evaluation whose mean loss overflows the perplexity (``evaluate.MAX_LOSS``) or is
NaN is recorded, never a crash: value inf or NaN and ``diverged`` True (False on every other row).

Defaults: ``--scale init`` (the paper's choice); on a local folder series without ``--revisions``
or ``--tokens``, every checkpoint of the series (a hub id needs one of them); ``--threads``: torch's
own count (``--threads 1`` is fastest for small models on a busy machine). A ``--tokens`` value
whose nearest checkpoint is more than 2x away is reported in one warning line on stderr.

Bounds (exit 2 beyond them; ``_int``, ``_number``, ``_floats`` and ``_token_counts`` check every
number for finiteness and range where it is parsed): ``--seeds`` 1..10,000 draws per gamma;
``--gammas`` / ``--lrs`` at most 100 values; token counts (``--tokens``, ``--budgets``) at most
1e15 (1000T); ``--seq-len`` from 2 to every checkpoint's ``max_position_embeddings`` (its
config.json; 128 or 512 for the presets); ``--batch-size`` 1..1,024; ``--max-blocks``
1..1,000,000; ``--steps`` and ``--warmup-steps`` at most 1,000,000 (and pre-training budgets at
most 1,000,000 steps each); ``--threads`` 1..256; ``--seed`` 0..2**63-1.

Every input is checked before the run directory is created (exit 2, one line, nothing written),
numbers and flags before torch is imported. The run directory's lifecycle is ``experiments.run``'s
(``out_decision`` in the plan, ``begin_run`` and ``marks_failure`` around the run): anything that
goes wrong while running is a failure (exit 1) that marks the manifest ``failed`` with the reason;
finished checkpoints are kept under ``DIR/chunks/`` and the same command resumes after them, while
another config may replace a failed run (never a complete one).

The helpers here (revision resolution, the shared eval token set, number parsing, manifests)
serve ``perturb``, ``pretrain`` and ``finetune`` alike.
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
from experiments.arguments import MAX_VALUES, integer, numbers, token_counts, unique
from experiments.run import UsageError
from llm_validation.tokens import human_tokens

if TYPE_CHECKING:  # annotations only: torch loads when a command runs, after its input is checked
    import torch

LLM_COMMANDS = ("revisions", "pretrain", "perturb", "finetune")
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


# ---------------------------------------------------------------------------------------- parser


def _default_parser_class():
    from experiments.cli import _Parser  # lazily: cli imports this module

    return _Parser


def add_parser(subparsers, parser_class: type[argparse.ArgumentParser] | None = None) -> argparse.ArgumentParser:
    """Add ``llm`` (with ``revisions``, ``pretrain``, ``perturb``, ``finetune``) to ``subparsers``; returns it.

    ``parser_class`` is the class of the nested subcommand parsers (default ``cli._Parser``, whose
    ``error()`` raises ``UsageError``); the ``llm`` parser itself is of ``subparsers``' class.
    """
    from experiments import llm_finetune_cli, llm_pretrain_cli  # lazily: they import this module

    parser_class = parser_class or _default_parser_class()
    llm = subparsers.add_parser(
        "llm", help="LLM validation: checkpoint series, pre-training, perturbation, fine-tuning"
    )
    sub = llm.add_subparsers(
        dest="llm_command", metavar="{" + ",".join(LLM_COMMANDS) + "}", required=True, parser_class=parser_class
    )

    r = sub.add_parser("revisions", help="list the checkpoint revisions of a hub id or local folder series")
    r.add_argument("model", help="hub id (ORG/NAME; HF_HUB_OFFLINE=1 lists the local hub cache) or a folder series")

    p = sub.add_parser("perturb", help="perplexity of Gaussian-perturbed checkpoints into a result store")
    add_checkpoint_arguments(p)
    p.add_argument(
        "--eval-text", required=True, type=Path, help="held-out text (.txt: one document; .jsonl: 'text' per line)"
    )
    p.add_argument("--gammas", required=True, help=f"comma-separated noise scales >= 0 (at most {MAX_VALUES})")
    p.add_argument(
        "--seeds",
        required=True,
        type=integer("--seeds", 1, MAX_SEEDS),
        help=f"draws per gamma, seeds 0..K-1 (K <= {MAX_SEEDS:,})",
    )
    p.add_argument(
        "--scale",
        default="init",
        choices=("init", "relative", "absolute"),
        help="sigma per tensor: init std (default, the paper's), tensor RMS, or 1",
    )
    p.add_argument(
        "--noise-device",
        default="cpu",
        choices=("cpu", "param"),
        help="where noise is drawn: cpu (same numbers on any device) or param (on the weights' "
        "device: much faster for 1B+ models on a GPU; still paired across checkpoints)",
    )
    p.add_argument("--out", required=True, type=Path, help="run directory (resumable)")
    add_size_arguments(p, "eval blocks per forward pass")
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.add_argument("--device", choices=DEVICES, default="cpu")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no summary")

    llm_pretrain_cli.add_arguments(
        sub.add_parser(
            "pretrain", help="train a mini OLMo checkpoint series (one run per token budget) and store its perplexity"
        )
    )
    llm_finetune_cli.add_arguments(
        sub.add_parser(
            "finetune",
            help="fine-tune every checkpoint over an lr grid: forgetting and in-task metrics into a result store",
        )
    )
    return llm


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


def run(args: argparse.Namespace) -> int:
    """Run the parsed ``ovt llm ...`` command; UsageError / ValueError mean bad input (exit 2)."""
    from experiments import llm_finetune_cli, llm_pretrain_cli

    commands = {
        "revisions": _revisions,
        "perturb": _perturb,
        "pretrain": llm_pretrain_cli.command,
        "finetune": llm_finetune_cli.command,
    }
    return commands[args.llm_command](args)


# ------------------------------------------------------------------------------------- revisions


def _available(model: str):
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


def _revisions(args) -> int:
    _, revisions = _available(args.model)
    staged = any(r.stage for r in revisions)
    header = ("revision", "step", "tokens") + (("stage",) if staged else ())
    rows = [(r.name, str(r.step), human_tokens(r.tokens)) + ((r.stage or "",) if staged else ()) for r in revisions]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:  # names left-aligned, numbers right-aligned
        cells = (c.ljust(w) if i in (0, 3) else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
        print("  ".join(cells).rstrip())
    return 0


# --------------------------------------------------------------------------------------- perturb


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
        from experiments.run import path_from_run

        return path_from_run(self.source, self.out) if self.is_folder else self.source


@dataclasses.dataclass
class Plan(SeriesPlan):
    """Everything ``perturb`` needs, checked before anything is written."""

    gammas: list[float]
    seeds: int
    scale: str
    noise_device: str
    batch_size: int
    dtype: str

    def config(self) -> dict:
        """What the numbers depend on: a run directory holds one config, and a rerun of it resumes."""
        config = {
            "model": self.recorded_source,
            "revisions": [r.name for r in self.revisions],
            "gammas": self.gammas,
            "seeds": self.seeds,
            "scale": self.scale,
            "eval_sha256": self.eval_sha256,
            "seq_len": int(self.blocks.shape[1]),
            "n_blocks": int(self.blocks.shape[0]),
            "batch_size": self.batch_size,
            "dtype": self.dtype,
            "device": self.device,
        }
        if self.noise_device != "cpu":  # the default is left out, so older run directories still resume
            config["noise_device"] = self.noise_device
        return config

    def identity(self) -> dict:
        """The manifest fields a rerun must match to resume (``experiments.run.out_decision``)."""
        return {"command": "llm perturb", "config": self.config()}

    def new_manifest(self) -> dict:
        return _new_manifest(self)


def light_checks(args) -> list[float] | None:
    """The checks of a checkpoint-series command that need no torch (run before importing it): a hub
    id needs ``--revisions`` or ``--tokens``, and ``--out`` must be writable. Returns the parsed
    ``--tokens`` (None without)."""
    from experiments.run import check_writable

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
    is_folder, available = _available(args.model)
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


def plan_perturb(args) -> Plan:
    """Check every input of ``perturb`` (raising UsageError / ValueError) without writing anything;
    numbers and flags first, before torch is imported."""
    from experiments.run import out_decision

    gammas = numbers("--gammas", args.gammas, least=0)
    counts = light_checks(args)
    check_device(args.device)
    plan = Plan(
        **plan_checkpoints(args, counts),
        gammas=gammas,
        seeds=args.seeds,
        scale=args.scale,
        noise_device=args.noise_device,
        batch_size=args.batch_size,
        dtype=args.dtype,
    )
    out_decision(plan.out, plan.identity())  # a run of another config: refused unless it may be replaced
    return plan


def start(plan) -> dict:
    """Start a planned checkpoint-series run: print the plan's warnings, then ``begin_run`` with
    the plan's identity (resume, replace or new; the manifest written, status running)."""
    from experiments.run import begin_run

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


def revision_commit(plan: Plan, revision: str, model=None) -> str | None:
    """The hub commit a revision resolved to (the hub cache's ``refs/REVISION``); None for folders."""
    if plan.is_folder:
        return None
    from huggingface_hub import constants

    ref = Path(constants.HF_HUB_CACHE) / f"models--{plan.source.replace('/', '--')}" / "refs" / revision
    if ref.is_file():
        return ref.read_text().strip() or None
    return getattr(getattr(model, "config", None), "_commit_hash", None)


def _sigma_summary(plan: Plan, checkpoint: str, sigmas: dict[str, float]) -> dict:
    values = sorted(sigmas.values())
    return {
        "scale": plan.scale,
        "checkpoint": checkpoint,
        "n_tensors": len(values),
        "min": values[0],
        "median": values[len(values) // 2],
        "max": values[-1],
        "mean": sum(values) / len(values),
        "by_parameter": sigmas,
        "policy": "Linear and Embedding weights perturbed (a tied embedding once, under its first name); "
        "norm weights and biases unchanged (zero init variance)",
    }


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
    from experiments.run import git_commit, now, path_from_run, versions

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


def _new_manifest(plan: Plan) -> dict:
    n_blocks, seq_len = plan.blocks.shape
    return manifest_head(plan, "llm perturb") | {
        "n_tokens": int(n_blocks * (seq_len - 1)),
        "seq_len": int(seq_len),
        "batch_size": plan.batch_size,
        "dtype": plan.dtype,
        "device": plan.device,
        "scale": plan.scale,
        "gammas": plan.gammas,
        "n_seeds": plan.seeds,
        "threads": plan.threads,
        "sigma": None,  # draws are seeds 0..n_seeds-1
    }


def _rows(plan: Plan, revision, results: list[tuple[str, float, int, object]]) -> pd.DataFrame:
    return store.block(
        source="llm",
        setup=plan.setup,
        checkpoint=revision.name,
        pretrain_time=float(revision.tokens),
        modification=[m for m, *_ in results],
        gamma=[g for _, g, _, _ in results],
        seed=[s for _, _, s, _ in results],
        metric="perplexity",
        value=[p.perplexity for *_, p in results],
        mean_nll=[p.mean_nll for *_, p in results],
        n_tokens=[p.n_tokens for *_, p in results],
        diverged=[p.diverged for *_, p in results],
    )


def evaluate_checkpoint(plan: Plan, revision, model, progress=None) -> tuple[pd.DataFrame, dict[str, float]]:
    """Base perplexity, then every (gamma, seed) draw of one loaded checkpoint; returns (rows, sigmas)."""
    from llm_validation.evaluate import perplexity
    from llm_validation.perturb import Perturbation

    results = [("none", float("nan"), 0, perplexity(model, plan.blocks, plan.batch_size))]
    if progress is not None:
        progress.update()
    perturbation = Perturbation(model, plan.scale, plan.noise_device)  # one exact copy serves every draw
    for gamma in plan.gammas:
        for seed in range(plan.seeds):
            with perturbation.draw(gamma, seed):
                results.append(("gaussian", gamma, seed, perplexity(model, plan.blocks, plan.batch_size)))
            if progress is not None:
                progress.update()
    return _rows(plan, revision, results), perturbation.sigmas


def run_perturb(plan: Plan) -> pd.DataFrame:
    """Evaluate every planned checkpoint not yet stored under ``plan.out``; write the final table."""
    import torch
    from tqdm import tqdm

    from experiments import store
    from experiments.run import marks_failure
    from llm_validation.checkpoints import load_checkpoint

    manifest_path = plan.out / store.MANIFEST
    manifest = start(plan)
    done = store.stored_chunks(plan.out)
    todo = [(i, r) for i, r in enumerate(plan.revisions) if i not in done]
    per_checkpoint = 1 + len(plan.gammas) * plan.seeds
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[plan.dtype]
    with marks_failure(plan.out), torch_threads(plan.threads), quiet_transformers(plan.quiet):
        with tqdm(
            total=len(todo) * per_checkpoint,
            desc=f"perturb {plan.setup}",
            unit="eval",
            disable=plan.quiet,
            file=sys.stderr,
        ) as progress:
            for index, revision in todo:
                progress.set_postfix_str(revision.name)
                try:
                    model, _ = load_checkpoint(plan.source, revision.name, dtype, plan.device)
                    rows, sigmas = evaluate_checkpoint(plan, revision, model, progress)
                except ValueError as error:  # bad checkpoint files found mid-run: a failure, not bad input
                    raise RunFailure(
                        f"{plan.model}@{revision.name}: {error}; {len(store.stored_chunks(plan.out))} "
                        f"checkpoint(s) stored in {plan.out}; rerun to resume"
                    ) from error
                store.write_table(store.chunk_path(plan.out, index), rows)
                entry = manifest["revisions"][index]
                entry["commit"] = entry.get("commit") or revision_commit(plan, revision.name, model)
                if manifest.get("sigma") is None and index == 0:
                    manifest["sigma"] = _sigma_summary(plan, revision.name, sigmas)
                store.write_json(manifest_path, manifest)
                del model
        from experiments.llm_analysis import perturb_inflection_rows

        return finish_run(plan.out, len(plan.revisions), manifest, perturb_inflection_rows)


def finish_run(out: Path, n_checkpoints: int, manifest: dict, derive) -> pd.DataFrame:
    """Write ``metrics.parquet`` = every checkpoint's stored chunk plus ``derive(chunks)``, and mark the
    manifest complete. Derived rows come from the stored chunks alone, so a resumed run ends with the
    same table as an uninterrupted one."""
    from experiments import store
    from experiments.run import now

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


def summary(table: pd.DataFrame) -> str:
    """Per checkpoint: base perplexity and the mean perplexity over seeds at each gamma; then T* of each gamma."""
    rows, infl = table[table.checkpoint != "inflection"], table[table.checkpoint == "inflection"]
    base = rows[rows.modification == "none"].set_index("checkpoint")["value"].rename("none")
    noisy = (
        rows[rows.modification == "gaussian"]
        .groupby(["checkpoint", "gamma"])["value"]
        .mean()
        .unstack("gamma")
        .rename(columns=lambda g: f"gamma={g:g}")
    )
    position = rows.groupby("checkpoint")["pretrain_time"].first().sort_values()
    frame = pd.concat([position.map(human_tokens).rename("tokens"), base, noisy], axis=1).loc[position.index]
    return (
        frame.to_string(float_format=lambda v: f"{v:.4g}")
        + "\n"
        + t_star_line((f"gamma={g:g}" for g in infl.gamma), infl.value)
    )


def _perturb(args) -> int:
    plan = plan_perturb(args)  # bad input: UsageError / ValueError before anything is written
    try:
        table = run_perturb(plan)
    except ValueError as error:  # the run directory exists now: whatever fails is a failure (exit 1)
        raise RunFailure(str(error)) from error
    if not plan.quiet:
        print(f"perplexity (mean over {plan.seeds} seed(s)), {len(table)} rows -> {plan.out}")
        print(summary(table))
    return 0
