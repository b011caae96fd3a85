"""Typed configs of the LLM runs: one frozen dataclass per run type, read alike from a preset
(``experiments.llm.presets``), flags (``--seq-len 64``) and ``field=value`` overrides (``seq_len=64``).

    PretrainRun   ``ovt llm pretrain``: a mini OLMo checkpoint series and its base perplexity
    PerturbRun    ``ovt llm perturb``: perplexity under Gaussian noise on every checkpoint
    FinetuneRun   ``ovt llm finetune``: an lr grid of fine-tuning on every checkpoint

and in modules of their own beside it, declared alike: ``CurvatureRun`` and ``QuantizeRun``
(``config_measures``), ``MultimodalRun`` (``config_multimodal``).

A field is the one place a setting is declared (``knob``): its default, its help, its reader, and
whether the numbers depend on it. The flag, the override, the plan's identity and the manifest's
record all come from the field: the flag and the override are parsed and bounded by the same reader,
so they refuse the same values in the same words (the flag named ``--seq-len``, the field
``seq_len=``). A comma list given to a scalar field is a sweep, as ``ovt theory`` takes it: one run
per value (the product over swept fields), each in its own sub-directory ``OUT/seed=1``. Fields left
``None`` are unset; ``REQUIRED`` ones must be set by the preset, a flag or an override before a run
is planned. Bounds: ``experiments.llm.series``' module docstring.
"""

from __future__ import annotations

import dataclasses
import itertools
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from experiments.arguments import argument_type, choice, numbers, real, said, token_counts, unique, whole
from llm_validation.corpora import CORPORA
from llm_validation.models import PRESETS as MODEL_SIZES
from llm_validation.pretrain_config import MODES
from rundir.lifecycle import UsageError, path_from_run
from rundir.store import safe_name

DTYPES = ("float32", "bfloat16")
DEVICES = ("cpu", "cuda", "tpu")  # tpu: ``perturb --backend jax`` only (``experiments.llm.series.check_device``)
BACKENDS = ("torch", "jax")  # perturb: the torch half, or ``llm_validation.jax_backend``
SCALES = ("init", "relative", "absolute")
NOISE_DEVICES = ("cpu", "param")
FORMATS = ("hh", "messages", "text", "mc")  # llm_validation.finetune_data.FORMATS, without importing torch
# The bounds of the LLM runs' numbers (exit 2 beyond them).
MAX_SEEDS = 10_000  # Gaussian draws per gamma
MAX_BATCH = 1_024
MAX_BLOCKS = 1_000_000
MAX_STEPS = 1_000_000  # fine-tuning steps, warmup steps, and the steps of each pre-training budget
MAX_THREADS = 256
MAX_SEED = 2**63 - 1
MAX_VOCAB = 1_000_000
MAX_PROBES = 100_000  # Hutchinson probes and power iterations


def knob(default: Any, help: str, read=None, choices: tuple[str, ...] | None = None, **meta) -> Any:
    """A config field, declared once: its default, its help text (the flag's and ``--list``'s), and
    how a text becomes its value: ``read(name) -> (text -> value)``, ``name`` being how messages call
    it (``--seq-len`` or ``seq_len=``), or ``choices`` (one of these names). ``meta``: ``identity=False``
    for a field the numbers do not depend on (a rerun may change it and resume; what it resolves to,
    the revisions or the eval text's sha256, is the plan's part of the identity), ``path=True`` for a
    field that may name a local file or folder."""
    if choices is not None:
        read = lambda name: choice(name, choices)  # noqa: E731
    return dataclasses.field(default=default, metadata={"help": help, "read": read, "choices": choices, **meta})


# The readers that several fields share.
SEQ_LEN = lambda name: whole(name, 2)  # noqa: E731
BATCH = lambda name: whole(name, 1, MAX_BATCH)  # noqa: E731
BLOCKS = lambda name: whole(name, 1, MAX_BLOCKS)  # noqa: E731
THREADS = lambda name: whole(name, 1, MAX_THREADS)  # noqa: E731
SEED = lambda name: whole(name, 0, MAX_SEED)  # noqa: E731
COUNT = lambda name: whole(name, 1, MAX_SEEDS)  # noqa: E731
GAMMAS = lambda name: lambda text: tuple(numbers(name, text, least=0))  # noqa: E731


def nonempty(name: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if not text.strip():
            raise UsageError(f"{said(name, text, True)} is empty")
        return text

    return parse


def _names(name: str) -> Callable[[str], tuple[str, ...]]:
    return lambda text: tuple(unique(part.strip() for part in text.split(",") if part.strip()))


def _budgets(name: str) -> Callable[[str], tuple]:
    """Token counts as ints where they are whole up to float rounding (``2.3T``); others stay as given,
    for ``PretrainConfig`` to refuse by value."""

    def parse(text: str) -> tuple:
        budgets = []
        for count in token_counts(text, name):
            rounded = round(count)
            budgets.append(rounded if abs(count - rounded) <= 1e-9 * max(1.0, count) else count)
        return tuple(budgets)

    return parse


@dataclasses.dataclass(frozen=True)
class PretrainRun:
    """A controlled pre-training series: one checkpoint per token budget (``PretrainConfig``)."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("budgets",)

    size: str = knob("smoke", "model size: a llm_validation.models.PRESETS name", choices=tuple(MODEL_SIZES))
    budgets: tuple[int, ...] | None = knob(None, "token budgets (320K,1.3M,10M), one checkpoint each", _budgets)
    corpus: str = knob("shakespeare", "training corpus", choices=CORPORA)
    mode: str = knob(
        "separate",
        "separate: every budget its own run annealed to 0; single: one run; "
        "wsd: a constant-lr trunk and a decay branch per budget",
        choices=MODES,
    )
    decay_fraction: float = knob(
        0.2, "mode wsd: each branch decays to 0 over this fraction of its budget", lambda n: real(n, above=0, most=0.9)
    )
    seq_len: int = knob(128, "tokens per sequence (at most the size's max_position_embeddings)", SEQ_LEN)
    batch_size: int = knob(8, "sequences per step", BATCH)
    lr: float = knob(1e-2, "peak learning rate", lambda n: real(n, above=0))
    weight_decay: float = knob(0.1, "AdamW's decoupled weight decay", lambda n: real(n, least=0))
    sam_rho: float = knob(0.0, "sharpness-aware minimisation's radius (0: plain AdamW)", lambda n: real(n, least=0))
    seed: int = knob(0, "initialisation and data order", SEED)
    vocab_size: int | None = knob(None, "BPE vocabulary (default: the size's)", lambda n: whole(n, 1, MAX_VOCAB))
    max_train_chars: int | None = knob(
        None, "cap the training split at whole documents of this many characters", lambda n: whole(n, 1)
    )
    max_epochs: float | None = knob(
        None, "refuse a largest budget of more passes than this over the training tokens", lambda n: real(n, above=0)
    )
    trunk_checkpoints: int = knob(0, "wsd: save the trunk too at the N smallest budgets", lambda n: whole(n, 0))
    max_blocks: int | None = knob(None, "evaluate on the first N blocks of the held-out text (default all)", BLOCKS)
    eval_text: str | None = knob(
        None, "score the checkpoints on this text (default: the corpus' held-out split)", nonempty, path=True
    )
    threads: int | None = knob(
        None, "torch threads per process (default 1; another count changes the last bits)", THREADS, identity=False
    )


@dataclasses.dataclass(frozen=True)
class SeriesRun:
    """What every run over the checkpoints of a series shares: the model, which checkpoints, the
    held-out token set and the hardware."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("model", "eval_text")

    model: str | None = knob(None, "hub id (ORG/NAME) or local folder series", nonempty, identity=False, path=True)
    revisions: tuple[str, ...] | None = knob(None, "revision names (or tokens=, not both)", _names, identity=False)
    tokens: tuple[float, ...] | None = knob(
        None,
        "token counts (1e9, 2.3T): the nearest revisions (a folder series defaults to every checkpoint)",
        lambda n: lambda text: tuple(token_counts(text, n)),
        identity=False,
    )
    stage: str | None = knob(
        None,
        "the checkpoints of this stage only (trunk: a WSD series' un-annealed trunk; default: every stage but trunk)",
        nonempty,
        identity=False,
    )
    eval_text: str | None = knob(
        None,
        "held-out pre-training text (.txt: one document; .jsonl: 'text' per line)",
        nonempty,
        identity=False,
        path=True,
    )
    seq_len: int = knob(128, "tokens per block (at most each checkpoint's max_position_embeddings)", SEQ_LEN)
    batch_size: int = knob(8, "blocks or examples per step", BATCH)
    max_blocks: int | None = knob(None, "use the first N blocks of the eval text (default all)", BLOCKS, identity=False)
    threads: int | None = knob(
        None, "torch threads per process (default 1; another count changes the last bits)", THREADS, identity=False
    )
    dtype: str = knob(
        "float32", "float32, or bfloat16 (fine-tuning: mixed precision, float32 master weights)", choices=DTYPES
    )
    device: str = knob("cpu", "cpu or cuda (tpu: perturb --backend jax only)", choices=DEVICES)

    def __post_init__(self):
        exclusive(self, "revisions", "tokens")


@dataclasses.dataclass(frozen=True)
class PerturbRun(SeriesRun):
    """The Gaussian protocol on every checkpoint: base perplexity and ``seeds`` draws per gamma."""

    REQUIRED: ClassVar[tuple[str, ...]] = (*SeriesRun.REQUIRED, "gammas", "seeds")

    gammas: tuple[float, ...] | None = knob(None, "noise scales >= 0", GAMMAS)
    seeds: int | None = knob(None, "draws per gamma, seeds 0..K-1", COUNT)
    scale: str = knob("init", "sigma per tensor: init std (the paper's), tensor RMS, or 1", choices=SCALES)
    noise_device: str = knob(
        "cpu", "where noise is drawn: cpu (same numbers anywhere) or param (the weights' device)", choices=NOISE_DEVICES
    )
    backend: str = knob(
        "torch", "torch (transformers), or jax (flax.nnx OLMo-1, draws vmapped and sharded)", choices=BACKENDS
    )


@dataclasses.dataclass(frozen=True)
class FinetuneRun(SeriesRun):
    """An lr grid of fine-tuning on every checkpoint: forgetting and in-task metrics."""

    REQUIRED: ClassVar[tuple[str, ...]] = (*SeriesRun.REQUIRED, "data", "format", "lrs", "steps")

    data: str | None = knob(
        None,
        "fine-tuning data: JSONL, text file or folder, corpus:NAME (text), or hf:ORG/NAME",
        nonempty,
        identity=False,
        path=True,
    )
    format: str | None = knob(None, "data format (llm_validation.finetune_data)", choices=FORMATS)
    lrs: tuple[float, ...] | None = knob(
        None, "learning rates > 0", lambda n: lambda text: tuple(numbers(n, text, above=0))
    )
    steps: int | None = knob(None, "AdamW steps per run", lambda n: whole(n, 1, MAX_STEPS))
    reg: float = knob(0.0, "L2 pull lambda toward the checkpoint (0: none)", lambda n: real(n, least=0))
    replay: float = knob(
        0.0, "weight r of replayed pre-training text in the loss (0: none)", lambda n: real(n, least=0, below=1)
    )
    replay_data: str | None = knob(
        None, "the text replay draws from: a text file or folder, or corpus:NAME", nonempty, identity=False, path=True
    )
    heldout_fraction: float | None = knob(
        None,
        "hold out the last fraction of data for the in-task loss (0.1)",
        lambda n: real(n, above=0, below=1),
        identity=False,
    )
    heldout_data: str | None = knob(
        None, "held-out in-task examples, in format (then all of data trains)", nonempty, identity=False, path=True
    )
    mc_data: str | None = knob(
        None, "multiple-choice JSONL to score (accuracy, accuracy_norm)", nonempty, identity=False, path=True
    )
    warmup_steps: int = knob(0, "linear warmup steps", lambda n: whole(n, 0, MAX_STEPS))
    seed: int = knob(0, "batch order", SEED)
    repeats: int = knob(
        1, "runs per (checkpoint, lr): batch orders seed..seed+repeats-1, the same at every checkpoint", COUNT
    )

    def __post_init__(self):
        super().__post_init__()
        exclusive(self, "heldout_fraction", "heldout_data")
        if (self.replay > 0) != (self.replay_data is not None):
            raise UsageError(f"replay={self.replay:g} and replay_data={self.replay_data!r}: give both or neither")


RunConfig = PretrainRun | SeriesRun  # every run of a checkpoint series is a SeriesRun


def exclusive(cfg, a: str, b: str) -> None:
    if getattr(cfg, a) is not None and getattr(cfg, b) is not None:
        raise UsageError(f"{a} and {b} exclude each other; give one of them")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def is_list(cls: type, name: str) -> bool:
    """A field that holds a comma list (``gammas``): a comma in its value is not a sweep."""
    hint = typing.get_type_hints(cls)[name]
    return any(typing.get_origin(arg) is tuple for arg in (hint, *typing.get_args(hint)))


def names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def reader(cls: type, name: str, label: str) -> Callable[[str], Any]:
    """The parser of field ``name`` of ``cls``, its messages naming it ``label`` (``--seq-len`` or ``seq_len=``)."""
    return next(f for f in dataclasses.fields(cls) if f.name == name).metadata["read"](label)


def paths(cls: type) -> list[str]:
    """The fields of ``cls`` that may name a local file or folder."""
    return [f.name for f in dataclasses.fields(cls) if f.metadata.get("path")]


def identity(cfg: RunConfig) -> dict[str, Any]:
    """The fields the numbers depend on, as a manifest records them (lists for tuples): with what the
    plan resolved (revisions, sha256 of the inputs), what a rerun must match to resume."""
    recorded = _listed(cfg)
    return {f.name: recorded[f.name] for f in dataclasses.fields(cfg) if f.metadata.get("identity", True)}


def _listed(cfg: RunConfig) -> dict[str, Any]:
    """The config's fields as JSON holds them: lists for tuples."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def add_arguments(parser, cls: type) -> None:
    """One flag per field of ``cls``, read by the field's reader; unset flags stay None, so the
    preset's value (or the field's default) holds."""
    for field in dataclasses.fields(cls):
        help, choices = field.metadata["help"], field.metadata["choices"]
        if choices is not None:
            parser.add_argument(flag(field.name), choices=choices, default=None, help=help)
        else:
            parser.add_argument(
                flag(field.name), type=argument_type(reader(cls, field.name, flag(field.name))), help=help
            )


def configure(base: RunConfig, flags: dict[str, Any], overrides: list[str]) -> tuple[RunConfig, dict[str, tuple]]:
    """``base`` with the given flags (parsed values) and ``field=value`` overrides (texts) applied,
    and the sweep: {field: values} of the scalar fields given a comma list. A field set twice is
    refused."""
    cls, fixed, sweep = type(base), dict(flags), {}
    for item in overrides:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep:
            raise UsageError(f"override {item!r} must look like FIELD=VALUE")
        if name not in names(cls):
            raise UsageError(f"override key {name!r} is unknown; allowed: {', '.join(sorted(names(cls)))}")
        if name in fixed or name in sweep:
            raise UsageError(f"{name} is given twice ({flag(name)} and {name}=, or twice as {name}=)")
        read = reader(cls, name, f"{name}=")
        if "," in text and not is_list(cls, name):
            sweep[name] = tuple(unique(read(part.strip()) for part in text.split(",") if part.strip()))
            if not sweep[name]:
                raise UsageError(f"{name}={text!r} lists no values; a sweep needs at least one")
        else:
            fixed[name] = read(text)
    try:
        return dataclasses.replace(base, **fixed), sweep
    except ValueError as error:  # a library check in __post_init__ (PretrainConfig's, say)
        raise UsageError(str(error)) from None


def cells(cfg: RunConfig, sweep: dict[str, tuple], out: Path) -> list[tuple[RunConfig, Path]]:
    """(config, run directory) of every cell of the sweep: ``out`` itself without one, else
    ``out/FIELD=VALUE_FIELD=VALUE`` (the product, the last field varying fastest)."""
    if not sweep:
        return [(cfg, out)]
    runs = []
    for combo in itertools.product(*sweep.values()):
        changes = dict(zip(sweep, combo))
        name = "_".join(f"{k}={_shown(v)}" for k, v in changes.items())
        runs.append((dataclasses.replace(cfg, **changes), out / safe_name(name)))
    return runs


def _shown(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def require(cfg: RunConfig) -> None:
    """UsageError naming the first required field left unset."""
    for name in cfg.REQUIRED:
        if getattr(cfg, name) is None:
            raise UsageError(f"{name} is required: give {flag(name)} or {name}=VALUE (or a --preset that sets it)")


def record(cfg: RunConfig, out: Path) -> dict:
    """The config as the manifest in ``out`` records it: lists for tuples, and local paths relative to
    ``out`` (as every path a manifest holds), so a results tree names no machine."""
    fields = _listed(cfg)
    for name in paths(type(cfg)):
        value = fields.get(name)
        if value is not None and Path(value).expanduser().exists():
            fields[name] = path_from_run(Path(value).expanduser(), out)
    return fields


def changes(cfg: RunConfig, base: RunConfig | None = None) -> dict[str, Any]:
    """The fields of ``cfg`` that differ from ``base`` (default: the type's defaults)."""
    base = base or type(cfg)()
    return {name: getattr(cfg, name) for name in names(type(cfg)) if getattr(cfg, name) != getattr(base, name)}


def overrides_of(values: dict[str, Any]) -> list[str]:
    """``["budgets=65536,262144", "seq_len=64"]``: fields as overrides would give them."""
    return [f"{k}={','.join(map(_shown, v)) if isinstance(v, tuple) else _shown(v)}" for k, v in values.items()]


def shown(values: dict[str, Any]) -> str:
    """``budgets=65536,262144 seq_len=64``: fields as an override would give them."""
    return " ".join(overrides_of(values))
