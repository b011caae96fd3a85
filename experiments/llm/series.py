"""Which checkpoints a run over a series measures, and on which tokens: what ``ovt llm perturb`` and
``ovt llm finetune`` share before anything is written (``experiments.llm.lifecycle`` is what they share after).

A run's model is a hub id or a local folder series; its checkpoints are named by ``revisions``, the
nearest to each of ``tokens``, or (a folder series, neither given) all of them. Every input is checked
before the run directory is created (exit 2, one line, nothing written), numbers and flags before
torch is imported: the eval text is read, every chosen checkpoint's ``max_position_embeddings`` is
checked against ``seq_len``, and the eval text is tokenised with *each* checkpoint's own tokenizer,
refused when two give different token ids (their perplexities would not be comparable).

Bounds (exit 2 beyond them; each field's reader in ``experiments.llm.config`` checks every number where it is
read): ``seeds`` 1..10,000 draws per gamma; ``gammas`` / ``lrs`` at most 100 values; token counts
(``tokens``, ``budgets``) at most 1e15 (1000T); ``seq_len`` from 2 to every checkpoint's
``max_position_embeddings`` (its config.json; 128 or 512 for the model sizes); ``batch_size``
1..1,024; ``max_blocks`` 1..1,000,000; ``steps`` and ``warmup_steps`` at most 1,000,000 (and
pre-training budgets at most 1,000,000 steps each); ``threads`` 1..256; ``seed`` 0..2**63-1.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from experiments.llm.config import SeriesRun, identity, reader, record, require
from rundir import fingerprint
from rundir.lifecycle import UsageError, check_writable, path_from_run
from rundir.tokens import human_tokens

if TYPE_CHECKING:  # annotations only: torch loads when a command runs, after its input is checked
    import torch


def model_folder(model: str) -> Path | None:
    """The folder of a local series, or None for a hub id; UsageError for a file, or for a path (``./``,
    ``/``, ``~``, or more than one ``/``) that is not an existing folder."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise UsageError(f"model={model!r} is a file; give a folder series or a hub id ORG/NAME")
    if model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise UsageError(f"model={model!r} is not an existing folder; give a folder series or a hub id ORG/NAME")
    return None


def available_revisions(model: str):
    """(is_folder, revisions) of ``model``; bad input raises UsageError / CheckpointError."""
    from llm_validation.checkpoints import list_revisions
    from llm_validation.revisions import ALLOWED_FORMS

    folder = model_folder(model)
    revisions = list_revisions(folder if folder is not None else model)
    if not revisions:
        raise UsageError(f"model={model!r} has no checkpoint revisions; names allowed: {ALLOWED_FORMS}")
    return folder is not None, revisions


@dataclasses.dataclass
class SeriesPlan:
    """A run over the checkpoints of a series, checked before anything is written: its frozen config
    and what the checks resolved from it (``plan_checkpoints``). A kind that resolves more (fine-tuning
    data) subclasses it."""

    cfg: SeriesRun  # as given: every setting is read from here
    command: str  # ``llm KIND``, the manifest's command
    source: str  # hub id, or the folder's absolute path
    is_folder: bool
    setup: str  # the store's ``setup``: hub id, or the folder's name
    revisions: list  # [Revision], sorted by (stage, tokens, step)
    requested: dict  # revision name -> the token counts that chose it (tokens)
    warnings: list[str]  # printed on stderr when the run starts (the plan itself prints nothing)
    eval_path: Path
    eval_sha256: str
    blocks: torch.Tensor  # [n_blocks, seq_len]
    out: Path
    quiet: bool
    run_config: dict  # the typed config as given (``experiments.llm.config.record``)

    def resolved(self) -> dict:
        """What the numbers depend on beyond the config's fields: the checkpoints and token set the
        model, revisions and eval text resolved to (a kind adds its own inputs' fingerprints)."""
        return {
            "model": self.recorded_source,
            "revisions": [r.name for r in self.revisions],
            "eval_sha256": self.eval_sha256,
            "n_blocks": int(self.blocks.shape[0]),
        }

    def config(self) -> dict:
        """What the numbers depend on: a run directory holds one config, and a rerun of it resumes."""
        return identity(self.cfg) | self.resolved()

    def identity(self) -> dict:
        """The manifest fields a rerun must match to resume (``rundir.lifecycle.out_decision``)."""
        return {"command": self.command, "config": self.config()}

    def defaults(self) -> dict:
        """The declared defaults of the config's fields: a run written before a field existed, or by a
        version that left a default out of its identity, resumes (``rundir.lifecycle.same_config``)."""
        return field_defaults(type(self.cfg))

    @property
    def recorded_source(self) -> str:
        """The model as manifests record it: a hub id, or the folder relative to the run directory."""

        return path_from_run(self.source, self.out) if self.is_folder else self.source

    def __getstate__(self) -> dict:
        # A plan goes to worker processes by pickle: its token ids travel as bytes, not as a torch
        # tensor shared through a file descriptor that a worker terminated before fetching it leaves
        # the parent's serving thread to report as a reset connection.
        return {**self.__dict__, "blocks": self.blocks.numpy()}

    def __setstate__(self, state: dict) -> None:
        import torch

        self.__dict__.update(state, blocks=torch.from_numpy(state["blocks"]))


def field_defaults(cls: type) -> dict:
    """The declared defaults of the fields of ``cls`` that are part of a run's identity, as JSON holds them."""
    return {
        f.name: list(f.default) if isinstance(f.default, tuple) else f.default
        for f in dataclasses.fields(cls)
        if f.metadata.get("identity", True)
    }


def read_back(cfg, fields: tuple[str, ...]) -> None:
    """Each of ``fields`` of ``cfg`` (a config built in Python) read as a flag's text would be, refused
    in the same words (``image_tokens=0 must be >= 1 and <= 64``), and refused where reading changes
    it (a scalar for a tuple, a repeated value: ``lrs=0.001 is not allowed; give (0.001,)``)."""
    for name in fields:
        value = getattr(cfg, name)
        text = ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)
        parsed = reader(type(cfg), name, f"{name}=")(text)
        if parsed != value:
            raise UsageError(f"{name}={value!r} is not allowed; give {parsed!r}")


def light_checks(cfg: SeriesRun, out: Path) -> None:
    """The checks of a run over a series that need no torch (made before importing it): the required
    fields are set, a hub id comes with ``revisions`` or ``tokens``, and ``out`` is writable."""

    require(cfg)
    if cfg.revisions is None and cfg.tokens is None and model_folder(cfg.model) is None:
        raise UsageError(
            f"model={cfg.model} is not a local folder series: give revisions or tokens "
            "(only a folder series defaults to every checkpoint)"
        )
    check_writable(out)


def check_device(device: str) -> None:
    """``device cuda`` needs a CUDA device here; ``device tpu`` is the JAX backend's alone."""
    if device == "tpu":  # torch-xla on the registries does not match the pinned torch
        raise UsageError("device=tpu runs only with ovt llm perturb --backend jax; allowed here: cpu, cuda")
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("device=cuda: no CUDA device is available here; allowed: cpu")


def plan_checkpoints(cfg: SeriesRun, command: str, out: Path, quiet: bool) -> dict:
    """The fields of ``SeriesPlan`` (every run over a series shares them), checked: the model and its
    chosen revisions, each revision's position limit against ``seq_len``, and the eval token set
    (identical under every checkpoint's tokenizer)."""
    from llm_validation.evaluate import read_texts

    read_texts(cfg.eval_text)  # does not exist / not UTF-8 / holds no text: before any model is read
    is_folder, available = available_revisions(cfg.model)
    source = str(Path(cfg.model).expanduser().resolve()) if is_folder else cfg.model
    revisions, requested, warnings = _resolve_revisions(cfg, available)
    _check_positions(source, is_folder, revisions, cfg.seq_len)
    blocks = _token_blocks(cfg, source, is_folder, revisions)
    return dict(
        cfg=cfg,
        command=command,
        source=source,
        is_folder=is_folder,
        setup=Path(source).name if is_folder else cfg.model,
        revisions=revisions,
        requested=requested,
        warnings=warnings,
        eval_path=Path(cfg.eval_text).resolve(),
        eval_sha256=fingerprint.sha256(cfg.eval_text),
        blocks=blocks,
        out=Path(out),
        quiet=quiet,
        run_config=record(cfg, out),
    )


def _resolve_revisions(cfg: SeriesRun, available) -> tuple[list, dict, list[str]]:
    """(chosen revisions, {name: requested token counts}, warnings): by ``revisions`` names, the
    nearest to each ``tokens`` count, or (neither given; a folder series) every one."""
    from llm_validation.checkpoints import SERIES, nearest_revisions
    from llm_validation.revisions import parse_revision

    model, counts = cfg.model, cfg.tokens
    by_name = {r.name: r for r in (_of_stage(cfg, available) if cfg.stage else available)}  # names: any stage
    available = _of_stage(cfg, available)
    chosen, requested, warnings = list(available), {}, []
    if cfg.revisions is not None:
        chosen = []
        for name in cfg.revisions:
            wanted = parse_revision(name)  # ValueError naming the value and the allowed forms
            if name not in by_name:
                nearest = sorted(available, key=lambda r: (abs(r.tokens - wanted.tokens), r.tokens, r.step))[:3]
                raise UsageError(
                    f"revision={name!r} is not available for {model}; nearest available: "
                    f"{', '.join(r.name for r in nearest)}"
                )
            chosen.append(by_name[name])
    elif counts is not None:
        stage = SERIES[model].stage if model in SERIES and cfg.stage is None else None  # given: applied
        pool = [r for r in available if r.stage == stage] if stage else available
        if len({r.stage for r in pool}) > 1:
            raise UsageError(
                f"tokens= is ambiguous for {model}: its revisions span stages "
                f"{sorted({r.stage or '-' for r in pool})} whose token counts restart; use revisions="
            )
        if not pool:
            raise UsageError(f"tokens=: {model} has no {stage} revisions to choose from")
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
                f"ovt: warning: tokens {', '.join(far)}: the nearest checkpoint is more than 2x "
                f"away from the request (`ovt llm revisions {model}` lists them)"
            )
    chosen = sorted({r.name: r for r in chosen}.values(), key=lambda r: (r.stage or "", r.tokens, r.step))
    return chosen, requested, warnings


def _of_stage(cfg: SeriesRun, available) -> list:
    """The revisions ``stage`` admits: that stage's (``-``: those of no stage), or by default every
    one but a WSD series' trunk checkpoints (``revisions.TRUNK_STAGE``), which are asked for by name."""
    from llm_validation.revisions import TRUNK_STAGE

    if cfg.stage is None:
        return [r for r in available if r.stage != TRUNK_STAGE]
    pool = [r for r in available if (r.stage or "-") == cfg.stage]
    if not pool:
        stages = sorted({r.stage or "-" for r in available})
        raise UsageError(f"stage={cfg.stage!r}: {cfg.model} has no revisions of it; its stages: {', '.join(stages)}")
    return pool


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
                f"seq_len={seq_len} exceeds the {limit} positions of {revision.name} "
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


def _token_blocks(cfg: SeriesRun, source: str, is_folder: bool, revisions):
    """The eval blocks, tokenised with every checkpoint's tokenizer and required to be identical."""
    import torch

    from llm_validation.evaluate import load_token_blocks

    blocks, first = None, None
    cache: dict[tuple, torch.Tensor] = {}
    for revision in revisions:
        tokenizer = load_tokenizer(source, is_folder, revision.name)
        # Identical tokenizers (the usual case) tokenise the file once.
        backend = getattr(tokenizer, "backend_tokenizer", None)
        key = (type(tokenizer).__name__, tokenizer.eos_token_id, backend.to_str() if backend else revision.name)
        these = cache.get(key)
        if these is None:
            these = cache[key] = load_token_blocks(cfg.eval_text, tokenizer, cfg.seq_len, cfg.max_blocks)
        if blocks is None:
            blocks, first = these, revision.name
        elif not torch.equal(these, blocks):
            raise UsageError(
                f"revision={revision.name!r} tokenizes eval_text {cfg.eval_text} differently "
                f"from {first!r}: perplexities over different token sets are not comparable; "
                "evaluate such checkpoints in separate runs"
            )
    return blocks
