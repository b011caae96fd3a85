"""The config of a controlled pre-training series (``llm_validation.pretrain``), and its checks.

Kept apart from the training code so that it imports no torch: the command line checks a series'
config (preset, corpus, mode, sizes, budgets) before anything heavy is loaded.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import NamedTuple

from llm_validation.corpora import CORPORA
from llm_validation.models import PRESETS

MODES = ("separate", "single", "wsd")
# A series folder's config record, and each checkpoint's (``checkpoints`` writes and reads the folder).
SERIES_FILE, CHECKPOINT_FILE = "series.json", "checkpoint.json"
MIN_VOCAB = 258  # a byte-level BPE needs 256 bytes + 2 special tokens


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """Everything that determines a series' weights. ``budgets`` are tokens; they are sorted.

    A budget ``B`` is trained for ``B / (batch_size * seq_len)`` steps rounded half up; ``checkpoint.json``
    records the exact token count ``steps * batch_size * seq_len``. ``vocab_size`` defaults to the
    preset's; ``max_train_chars`` caps the training split (see ``corpora.load_corpus``).
    ``max_epochs``: at most this many passes over the training tokens at the largest budget
    (``check_repetition``, once the data are tokenised; data-constrained scaling finds up to ~4
    passes close to fresh data). ``checkpoint.json`` records every checkpoint's ``epochs``.
    """

    preset: str = "smoke"
    budgets: tuple[int, ...] = (16_384, 65_536)
    corpus: str = "shakespeare"
    mode: str = "separate"
    seq_len: int = 128
    batch_size: int = 8
    lr: float = 1e-2  # best of 3e-3, 1e-2, 3e-2 for the 20k preset at 1.3M tokens (held-out loss)
    decay_fraction: float = 0.2  # mode wsd: each branch decays to 0 over this fraction of its budget
    warmup_fraction: float = 0.05
    weight_decay: float = 0.1
    sam_rho: float = 0.0  # sharpness-aware minimisation's radius (0: plain AdamW); see ``pretrain.sam_gradient``
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    seed: int = 0
    vocab_size: int | None = None
    max_train_chars: int | None = None
    max_epochs: float | None = None  # refuse a largest budget of more passes over the training tokens
    trunk_checkpoints: int = 0  # mode wsd: also save the trunk (un-annealed) at its first N budgets

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ValueError(f"preset={self.preset!r} is unknown; allowed: {', '.join(PRESETS)}")
        if self.corpus not in CORPORA:
            raise ValueError(f"corpus={self.corpus!r} is unknown; allowed: {', '.join(CORPORA)}")
        if self.mode not in MODES:
            raise ValueError(f"mode={self.mode!r} is unknown; allowed: {', '.join(MODES)}")
        max_len = PRESETS[self.preset].max_position_embeddings
        if not 2 <= self.seq_len <= max_len:
            raise ValueError(f"seq_len={self.seq_len} must lie in [2, {max_len}] for preset {self.preset!r}")
        if not 0 < self.decay_fraction <= 0.9:
            raise ValueError(f"decay_fraction={self.decay_fraction} must lie in (0, 0.9]")
        for name in ("weight_decay", "sam_rho"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be >= 0")
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size} must be >= 1")
        if not self.lr > 0 or not 0 <= self.warmup_fraction < 1 or not self.grad_clip > 0:
            raise ValueError(
                f"lr={self.lr}, grad_clip={self.grad_clip} must be > 0 and "
                f"warmup_fraction={self.warmup_fraction} in [0, 1)"
            )
        if self.model_vocab_size < MIN_VOCAB:
            raise ValueError(f"vocab_size={self.model_vocab_size} (preset {self.preset!r}) must be >= {MIN_VOCAB}")
        if self.max_train_chars is not None and self.max_train_chars <= 0:
            raise ValueError(f"max_train_chars={self.max_train_chars} must be positive")
        n = self.trunk_checkpoints
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= len(self.budgets):
            raise ValueError(f"trunk_checkpoints={n!r} must be a whole number of budgets, 0 to {len(self.budgets)}")
        if n and self.mode != "wsd":
            raise ValueError(
                f"trunk_checkpoints={n} is allowed only with mode wsd (mode={self.mode!r} has no constant-lr trunk)"
            )
        if self.max_epochs is not None and not self.max_epochs > 0:
            raise ValueError(f"max_epochs={self.max_epochs} must be > 0")
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        object.__setattr__(self, "budgets", _check_budgets(self.budgets, self.tokens_per_step))

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def model_vocab_size(self) -> int:
        return self.vocab_size or PRESETS[self.preset].vocab_size

    def targets(self) -> list[Target]:
        """One checkpoint per budget: its step, exact token count and folder name."""
        from llm_validation.revisions import format_revision

        targets = []
        for budget in self.budgets:
            step = budget_steps(budget, self.tokens_per_step)
            tokens = step * self.tokens_per_step
            targets.append(Target(budget, step, tokens, format_revision(step, tokens)))
        return targets

    def trunk_targets(self) -> list[Target]:
        """The WSD trunk's checkpoints at the steps of the ``trunk_checkpoints`` smallest budgets,
        un-annealed (lr at its peak), named ``trunk-<revision>`` (``revisions.TRUNK_STAGE``)."""
        return [t._replace(revision=f"trunk-{t.revision}") for t in self.targets()[: self.trunk_checkpoints]]


def config_record(config: PretrainConfig) -> dict:
    """The config as plain JSON values (tuples become lists), as ``series.json`` stores it."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def changed_fields(stored: dict, record: dict) -> list[str]:
    """The fields in which the config ``record`` differs from a ``stored`` series' record; a
    ``separate`` or ``wsd`` series may gain budgets (each is its own run, or branch, from the shared
    initialisation, tokenizer and data order), so there its budgets are free."""
    free = {"budgets"} if record.get("mode") == stored.get("mode") in ("separate", "wsd") else set()
    # A WSD series may gain trunk checkpoints: the trunk is retrained from the shared initialisation
    # and data order (the same weights at every branch's start), its finished branches unchanged.
    free |= {"trunk_checkpoints"} if record.get("mode") == stored.get("mode") == "wsd" else set()
    # A field added since the series was written holds its default there.
    defaults = {f.name: f.default for f in dataclasses.fields(PretrainConfig)}
    return sorted(key for key in record if key not in free and stored.get(key, defaults.get(key)) != record[key])


class Target(NamedTuple):
    budget: int
    step: int
    tokens: int
    revision: str


def budget_steps(budget: int, tokens_per_step: int) -> int:
    """The updates a budget of ``budget`` tokens trains: ``budget / tokens_per_step`` rounded half up."""
    return (budget + tokens_per_step // 2) // tokens_per_step


def _check_budgets(budgets: Iterable, tokens_per_step: int) -> tuple[int, ...]:
    """Budgets as sorted distinct ints; ValueError for one that is not a positive whole number of
    tokens, is under half a step, or lands on the same step as another."""
    checked = []
    for budget in budgets:
        if isinstance(budget, bool) or not float(budget).is_integer() or budget <= 0:
            raise ValueError(f"budget={budget!r} must be a positive whole number of tokens")
        if budget_steps(int(budget), tokens_per_step) < 1:
            raise ValueError(
                f"budget={budget} is less than half a step of {tokens_per_step} tokens (batch_size x seq_len)"
            )
        checked.append(int(budget))
    if not checked:
        raise ValueError("budgets=() is empty; give at least one token budget")
    checked = sorted(set(checked))
    steps = [budget_steps(budget, tokens_per_step) for budget in checked]
    for (a, step_a), (b, step_b) in zip(zip(checked, steps), zip(checked[1:], steps[1:])):
        if step_a == step_b:
            raise ValueError(f"budgets {a} and {b} both round to step {step_a} at {tokens_per_step} tokens per step")
    return tuple(checked)


def check_repetition(config: PretrainConfig, train_tokens: int) -> float:
    """Passes over the ``train_tokens`` training tokens at the largest budget; ValueError beyond
    ``config.max_epochs``."""
    from llm_validation.corpora import repetition

    epochs = repetition(train_tokens, config.targets()[-1].tokens)
    if config.max_epochs is not None and epochs > config.max_epochs:
        raise ValueError(
            f"budget {config.targets()[-1].tokens:,} tokens is {epochs:.2f} passes over the {train_tokens:,} training "
            f"tokens of corpus={config.corpus!r}; at most max_epochs={config.max_epochs:g} are allowed "
            "(a larger max_train_chars or a smaller budget)"
        )
    return epochs
