"""Typed configs of the LLM runs: one frozen dataclass per run type, read alike from a preset
(``experiments.llm.presets``), flags (``--seq-len 64``) and ``field=value`` overrides (``seq_len=64``).

    PretrainRun   ``ovt llm pretrain``: a mini OLMo checkpoint series and its base perplexity
    PerturbRun    ``ovt llm perturb``: perplexity under Gaussian noise on every checkpoint
    FinetuneRun   ``ovt llm finetune``: an lr grid of fine-tuning on every checkpoint
    CurvatureRun  ``ovt llm curvature``: Hessian trace and top eigenvalue, and the small-noise excess

Every field has one reader (``READERS``): the flag and the override are parsed and bounded by the
same function, so they refuse the same values in the same words (the flag named ``--seq-len``, the
field ``seq_len=``). A comma list given to a scalar field is a sweep, as ``ovt theory`` takes it:
one run per value (the product over swept fields), each in its own sub-directory ``OUT/seed=1``.
Fields left ``None`` are unset; ``REQUIRED`` ones must be set by the preset, a flag or an override
before a run is planned. Bounds: ``experiments.llm.series``' module docstring.
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


def knob(default: Any, help: str) -> Any:
    """A config field with its help text (the flag's, and ``--list``'s)."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class PretrainRun:
    """A controlled pre-training series: one checkpoint per token budget (``PretrainConfig``)."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("budgets",)

    size: str = knob("smoke", "model size: a llm_validation.models.PRESETS name")
    budgets: tuple[int, ...] | None = knob(None, "token budgets (320K,1.3M,10M), one checkpoint each")
    corpus: str = knob("shakespeare", "training corpus")
    mode: str = knob(
        "separate",
        "separate: every budget its own run annealed to 0; single: one run; "
        "wsd: a constant-lr trunk and a decay branch per budget",
    )
    decay_fraction: float = knob(0.2, "mode wsd: each branch decays to 0 over this fraction of its budget")
    seq_len: int = knob(128, "tokens per sequence (at most the size's max_position_embeddings)")
    batch_size: int = knob(8, "sequences per step")
    lr: float = knob(1e-2, "peak learning rate")
    seed: int = knob(0, "initialisation and data order")
    vocab_size: int | None = knob(None, "BPE vocabulary (default: the size's)")
    max_train_chars: int | None = knob(None, "cap the training split at whole documents of this many characters")
    max_epochs: float | None = knob(None, "refuse a largest budget of more passes than this over the training tokens")
    max_blocks: int | None = knob(None, "evaluate on the first N blocks of the held-out text (default all)")
    eval_text: str | None = knob(None, "score the checkpoints on this text (default: the corpus' held-out split)")
    threads: int | None = knob(None, "torch threads per process (default 1; another count changes the last bits)")


@dataclasses.dataclass(frozen=True)
class SeriesRun:
    """What every run over the checkpoints of a series shares: the model, which checkpoints, the
    held-out token set and the hardware."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("model", "eval_text")

    model: str | None = knob(None, "hub id (ORG/NAME) or local folder series")
    revisions: tuple[str, ...] | None = knob(None, "revision names (or tokens=, not both)")
    tokens: tuple[float, ...] | None = knob(
        None, "token counts (1e9, 2.3T): the nearest revisions (a folder series defaults to every checkpoint)"
    )
    eval_text: str | None = knob(None, "held-out pre-training text (.txt: one document; .jsonl: 'text' per line)")
    seq_len: int = knob(128, "tokens per block (at most each checkpoint's max_position_embeddings)")
    batch_size: int = knob(8, "blocks or examples per step")
    max_blocks: int | None = knob(None, "use the first N blocks of the eval text (default all)")
    threads: int | None = knob(None, "torch threads per process (default 1; another count changes the last bits)")
    dtype: str = knob("float32", "float32, or bfloat16 (fine-tuning: mixed precision, float32 master weights)")
    device: str = knob("cpu", "cpu or cuda (tpu: perturb --backend jax only)")

    def __post_init__(self):
        exclusive(self, "revisions", "tokens")


@dataclasses.dataclass(frozen=True)
class PerturbRun(SeriesRun):
    """The Gaussian protocol on every checkpoint: base perplexity and ``seeds`` draws per gamma."""

    REQUIRED: ClassVar[tuple[str, ...]] = (*SeriesRun.REQUIRED, "gammas", "seeds")

    gammas: tuple[float, ...] | None = knob(None, "noise scales >= 0")
    seeds: int | None = knob(None, "draws per gamma, seeds 0..K-1")
    scale: str = knob("init", "sigma per tensor: init std (the paper's), tensor RMS, or 1")
    noise_device: str = knob("cpu", "where noise is drawn: cpu (same numbers anywhere) or param (the weights' device)")
    backend: str = knob("torch", "torch (transformers), or jax (flax.nnx OLMo-1, draws vmapped and sharded)")


@dataclasses.dataclass(frozen=True)
class FinetuneRun(SeriesRun):
    """An lr grid of fine-tuning on every checkpoint: forgetting and in-task metrics."""

    REQUIRED: ClassVar[tuple[str, ...]] = (*SeriesRun.REQUIRED, "data", "format", "lrs", "steps")

    data: str | None = knob(None, "fine-tuning data: JSONL, text file or folder, corpus:NAME (text), or hf:ORG/NAME")
    format: str | None = knob(None, "data format (llm_validation.finetune_data)")
    lrs: tuple[float, ...] | None = knob(None, "learning rates > 0")
    steps: int | None = knob(None, "AdamW steps per run")
    reg: float = knob(0.0, "L2 pull lambda toward the checkpoint (0: none)")
    heldout_fraction: float | None = knob(None, "hold out the last fraction of data for the in-task loss (0.1)")
    heldout_data: str | None = knob(None, "held-out in-task examples, in format (then all of data trains)")
    mc_data: str | None = knob(None, "multiple-choice JSONL to score (accuracy, accuracy_norm)")
    warmup_steps: int = knob(0, "linear warmup steps")
    seed: int = knob(0, "batch order")
    repeats: int = knob(1, "runs per (checkpoint, lr): batch orders seed..seed+repeats-1, the same at every checkpoint")

    def __post_init__(self):
        super().__post_init__()
        exclusive(self, "heldout_fraction", "heldout_data")


@dataclasses.dataclass(frozen=True)
class CurvatureRun(SeriesRun):
    """Curvature of the held-out loss on every checkpoint, beside the small-noise excess it predicts."""

    REQUIRED: ClassVar[tuple[str, ...]] = (*SeriesRun.REQUIRED, "gammas")

    gammas: tuple[float, ...] | None = knob(None, "small noise scales at which the excess is measured directly")
    draws: int = knob(8, "antithetic pairs of draws per gamma (draw k of perturb and its mirror image)")
    probes: int = knob(32, "Hutchinson probes of the sigma-weighted Hessian trace")
    iterations: int = knob(30, "power iterations for the top Hessian eigenvalue")
    scale: str = knob("init", "sigma per tensor: init std (the paper's), tensor RMS, or 1")


RunConfig = PretrainRun | PerturbRun | FinetuneRun | CurvatureRun


def exclusive(cfg, a: str, b: str) -> None:
    if getattr(cfg, a) is not None and getattr(cfg, b) is not None:
        raise UsageError(f"{a} and {b} exclude each other; give one of them")


def nonempty(flag: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if not text.strip():
            raise UsageError(f"{said(flag, text, True)} is empty")
        return text

    return parse


def _names(flag: str) -> Callable[[str], tuple[str, ...]]:
    return lambda text: tuple(unique(name.strip() for name in text.split(",") if name.strip()))


def _budgets(flag: str) -> Callable[[str], tuple]:
    """Token counts as ints where they are whole up to float rounding (``2.3T``); others stay as given,
    for ``PretrainConfig`` to refuse by value."""

    def parse(text: str) -> tuple:
        budgets = []
        for count in token_counts(text, flag):
            rounded = round(count)
            budgets.append(rounded if abs(count - rounded) <= 1e-9 * max(1.0, count) else count)
        return tuple(budgets)

    return parse


# field -> (its name in messages: "--seq-len" or "seq_len=") -> (text -> value); one per field of every run type.
READERS: dict[str, Callable[[str], Callable[[str], Any]]] = {
    "size": lambda flag: choice(flag, tuple(MODEL_SIZES)),
    "budgets": _budgets,
    "corpus": lambda flag: choice(flag, CORPORA),
    "mode": lambda flag: choice(flag, MODES),
    "lr": lambda flag: real(flag, above=0),
    "decay_fraction": lambda flag: real(flag, above=0, most=0.9),
    "vocab_size": lambda flag: whole(flag, 1, MAX_VOCAB),
    "max_train_chars": lambda flag: whole(flag, 1),
    "max_epochs": lambda flag: real(flag, above=0),
    "model": nonempty,
    "revisions": _names,
    "tokens": lambda flag: lambda text: tuple(token_counts(text, flag)),
    "eval_text": nonempty,
    "seq_len": lambda flag: whole(flag, 2),
    "batch_size": lambda flag: whole(flag, 1, MAX_BATCH),
    "max_blocks": lambda flag: whole(flag, 1, MAX_BLOCKS),
    "threads": lambda flag: whole(flag, 1, MAX_THREADS),
    "dtype": lambda flag: choice(flag, DTYPES),
    "device": lambda flag: choice(flag, DEVICES),
    "gammas": lambda flag: lambda text: tuple(numbers(flag, text, least=0)),
    "seeds": lambda flag: whole(flag, 1, MAX_SEEDS),
    "scale": lambda flag: choice(flag, SCALES),
    "noise_device": lambda flag: choice(flag, NOISE_DEVICES),
    "backend": lambda flag: choice(flag, BACKENDS),
    "data": nonempty,
    "format": lambda flag: choice(flag, FORMATS),
    "lrs": lambda flag: lambda text: tuple(numbers(flag, text, above=0)),
    "steps": lambda flag: whole(flag, 1, MAX_STEPS),
    "reg": lambda flag: real(flag, least=0),
    "heldout_fraction": lambda flag: real(flag, above=0, below=1),
    "heldout_data": nonempty,
    "mc_data": nonempty,
    "warmup_steps": lambda flag: whole(flag, 0, MAX_STEPS),
    "seed": lambda flag: whole(flag, 0, MAX_SEED),
    "repeats": lambda flag: whole(flag, 1, MAX_SEEDS),
    "draws": lambda flag: whole(flag, 1, MAX_SEEDS),
    "probes": lambda flag: whole(flag, 1, MAX_PROBES),
    "iterations": lambda flag: whole(flag, 1, MAX_PROBES),
}
CHOICES = {
    "size": tuple(MODEL_SIZES),
    "corpus": CORPORA,
    "mode": MODES,
    "dtype": DTYPES,
    "device": DEVICES,
    "scale": SCALES,
    "noise_device": NOISE_DEVICES,
    "backend": BACKENDS,
    "format": FORMATS,
}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def is_list(cls: type, name: str) -> bool:
    """A field that holds a comma list (``gammas``): a comma in its value is not a sweep."""
    hint = typing.get_type_hints(cls)[name]
    return any(typing.get_origin(arg) is tuple for arg in (hint, *typing.get_args(hint)))


def names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def add_arguments(parser, cls: type) -> None:
    """One flag per field of ``cls``, read by the field's reader; unset flags stay None, so the
    preset's value (or the field's default) holds."""
    for field in dataclasses.fields(cls):
        help = field.metadata["help"]
        if field.name in CHOICES:
            parser.add_argument(flag(field.name), choices=CHOICES[field.name], default=None, help=help)
        else:
            reader = argument_type(READERS[field.name](flag(field.name)))
            parser.add_argument(flag(field.name), type=reader, default=None, help=help)


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
        read = READERS[name](f"{name}=")
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


PATHS = ("model", "eval_text", "data", "heldout_data", "mc_data")  # fields that may name a local file or folder


def record(cfg: RunConfig, out: Path) -> dict:
    """The config as the manifest in ``out`` records it: lists for tuples, and local paths relative to
    ``out`` (as every path a manifest holds), so a results tree names no machine."""
    fields = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}
    for name in PATHS:
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
