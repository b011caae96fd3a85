"""The design of an ``ovt llm study``: ``Study``, every choice fixed before its data exist (the preset is
the pre-registration), and the named presets ``STUDIES`` (``ovt llm study --list``). Running one:
``experiments.llm.study``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from rundir.lifecycle import UsageError


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
    trunk_budgets: int | None = None  # ... at their smallest budgets (None: every one)
    trunk_gammas: tuple[float, ...] = ()  # the trunk's grids: a subset of gammas ...
    trunk_lrs: tuple[float, ...] = ()  # ... and of lrs (on the first dataset)
    multimodal_lrs: tuple[float, ...] = ()  # stage-2 lrs of multimodal adaptation (claims m, m') ...
    multimodal_seeds: tuple[tuple[str, tuple[int, ...]], ...] = ()  # ... on these (size, seeds)
    # Mitigations (claims k): pre-training arms, each (label, ((PretrainRun field, value), ...)) its own
    # series per (size, seed) fine-tuned at ``lrs`` on the first dataset; and replay fractions at ``reg_lr``
    # on the unmitigated series (replaying the corpus' training text), beside the L2 pull (``regs``).
    arms: tuple[tuple[str, tuple[tuple[str, float], ...]], ...] = ()
    replays: tuple[float, ...] = ()
    fit_gammas: int = 2  # the prediction step fits the largest gammas ...
    fit_lrs: int = 2  # ... and the smallest lrs, and predicts T* of the others
    pilot_for: str | None = None  # a pilot of this study: its analysis is the power analysis

    def series_name(self, size: str, seed: int, arm: str = "") -> str:
        """``20k_seed=0``; a pre-training arm's series ``5k_sam=0.05_seed=0``."""
        return f"{size}_{arm}_seed={seed}" if arm else f"{size}_seed={seed}"

    @property
    def mitigates(self) -> bool:
        """Whether the study compares mitigations (claims k) rather than the paper's claims."""
        return bool(self.arms or self.replays)

    def finetune_stage(self, data: str) -> str:
        """The stage folder of the fine-tuning runs on ``data``: ``finetune/shakespeare``."""
        return "finetune/" + (data.split(":", 1)[-1] if data.startswith("corpus:") else Path(data).stem)

    def seeds_of(self, size: str) -> tuple[int, ...]:
        """The pre-training seeds of ``size``: its own where ``size_seeds`` names it, else ``seeds``."""
        return dict(self.size_seeds).get(size, self.seeds)

    def has_trunk(self, size: str, seed: int) -> bool:
        """Whether the series (size, seed) saves and measures its WSD trunk (``trunk_seeds``)."""
        return seed in dict(self.trunk_seeds).get(size, ())

    def trunk_checkpoints(self, size: str, seed: int) -> int:
        """How many of the series' smallest budgets its trunk is saved at (0: no trunk)."""
        budgets = len(dict(self.sizes)[size])
        return min(budgets, self.trunk_budgets or budgets) if self.has_trunk(size, seed) else 0

    def adapts(self, size: str, seed: int) -> bool:
        """Whether the series (size, seed) is adapted to the synthetic visual world (``multimodal_seeds``)."""
        return bool(self.multimodal_lrs) and seed in dict(self.multimodal_seeds).get(size, ())

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
        # Claims q, m, i, j, sized by pilot-anneal (paper_figures/reference/pilot-anneal): its 2 series a
        # size (1 dof: a rough spread) gave the paired anneal gap at gamma 1 an sd of 0.003 nats (20k) and
        # 0.002 (5k), at lr 1e-3 0.010 at both, so 6 and 12 series give half-widths of 0.001-0.010
        # against gaps of 0.02-0.09.
        # Cut to stay near 2 + 1 hours on 2 cores: the trunk only to the 6 smallest budgets (20.5M tokens
        # at 20k, 10.2M at 5k, where its retraining stops), one gamma and one lr on it, stage 1 of the
        # multimodal recipe as long as stage 2, two of its lrs.
        quant_bits=(8, 4, 3),
        trunk_seeds=(("20k", tuple(range(6))), ("5k", tuple(range(12)))),
        trunk_budgets=6,
        trunk_gammas=(1.0,),
        trunk_lrs=(1e-3,),
        multimodal_lrs=(1e-3, 3e-3),
        multimodal_seeds=(("20k", tuple(range(6))), ("5k", tuple(range(12)))),
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


# Claims q, q', i, j, m, m' on their own series: the reference's design (seeds, corpus, schedule,
# fine-tuning regime, the extension's grids) at its 5 smallest budgets (20k to 10.2M tokens, 5k to
# 5.12M), so the run fits one 3-hour sitting of 2 cores: pre-training ~50 min (a 5k series to 5.12M
# with its trunk took 150 s, a 20k step costs 2.3x a 5k one), the measurements ~70 min (~95 CPU s per
# checkpoint: 4 fine-tunings, 4 of the multimodal recipe's stages, 24 evaluations). Cut from the
# reference's extension: budgets 6-9 (so no U-shape beyond 10.2M tokens can show) and every
# measurement that none of these claims reads (gammas other than 1, lrs other than 1e-3, the L2
# pull, curvature). The sizing of the pairs is pilot-anneal's (the ``study`` preset's comment).
STUDIES["extension"] = dataclasses.replace(
    STUDIES["study"],
    sizes=tuple((size, budgets[:5]) for size, budgets in STUDIES["study"].sizes),
    gammas=(1.0,),
    lrs=(1e-3,),
    regs=(),
    curvature_gammas=(),
    trunk_budgets=None,
)

# Claims k: the mitigations a theorist tests next, at the cheaper 5k size, 5 doubling budgets to 5.1M
# tokens, one batch order (the pilot: orders agree to 0.01-0.07 nats, the series carries the noise),
# fine-tuning at 1e-3 (a tenth of the pre-training peak) as the reference's L2 pull is. Pre-training arms:
# SAM at two radii, weight decay 0 and 1 beside the series' 0.1, the anneal over 10% and 50% of each
# budget beside 20%, and the trunk (no anneal); fine-tuning arms: replay of 10% and 30% of the corpus'
# training text, the L2 pull at 1. Series: pilot-anneal's 5k forgetting at lr 1e-3 and 5.12M tokens was
# 1.22 and 1.39 nats (sd 0.118 between series); taking no credit for the pairing (sd of a difference
# sqrt(2) x 0.118), 10 series give a Bonferroni (10 arms) half-width of 0.195 nats, <= 15% of the 1.30
# nats forgotten (``MITIGATION_POWER``, tested). Sized to <= 3 hours of 2 cores (docs/LLM.md).
MITIGATION_POWER = dict(sd=2**0.5 * 0.118, forgetting=1.30, share=0.15, arms=10)
STUDIES["mitigations"] = Study(
    sizes=(("5k", tuple(4096 * s for s in (78, 156, 312, 625, 1250))),),
    seeds=tuple(range(10)),
    max_train_chars=None,
    eval_blocks=512,
    gammas=(),
    finetune_data=("corpus:shakespeare",),
    lrs=(1e-3,),
    steps=400,
    warmup_steps=40,
    regs=(1.0,),
    reg_lr=1e-3,
    curvature_gammas=(),
    trunk_seeds=(("5k", tuple(range(10))),),
    trunk_lrs=(1e-3,),
    arms=(
        ("sam=0.05", (("sam_rho", 0.05),)),
        ("sam=0.2", (("sam_rho", 0.2),)),
        ("wd=0", (("weight_decay", 0.0),)),
        ("wd=1", (("weight_decay", 1.0),)),
        ("anneal=0.1", (("decay_fraction", 0.1),)),
        ("anneal=0.5", (("decay_fraction", 0.5),)),
    ),
    replays=(0.1, 0.3),
)


def get(name: str) -> Study:
    if name not in STUDIES:
        raise UsageError(f"study {name!r} is unknown; allowed: {', '.join(STUDIES)}")
    return STUDIES[name]


def describe(name: str) -> str:
    study = STUDIES[name]
    sizes = ", ".join(f"{size} {len(b)} budgets to {b[-1] / 1e6:.3g}M" for size, b in study.sizes)
    seeds = ", ".join(f"{size} {len(study.seeds_of(size))}" for size, _ in study.sizes)
    return f"{name:12s} {sizes}; series: {seeds}; gammas {study.gammas} x {study.draws} draws"
