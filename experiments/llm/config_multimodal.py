"""``MultimodalRun``, the config of ``ovt llm multimodal`` (``experiments.llm.kinds.multimodal``): a
``SeriesRun`` whose fields are declared as ``experiments.llm.config``'s are (``knob``), in a module of
its own beside it. Its defaults are the study's fine-tuning regime (docs/LLM.md, "Fine-tuning in the
paper's regime"): stage-2 lrs at and below the pre-training peak 1e-2, 400 AdamW steps with 40 of
linear warmup.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from experiments.arguments import numbers, real, whole
from experiments.llm.config import COUNT, MAX_STEPS, SEED, SeriesRun, knob, names

MAX_IMAGE_TOKENS = 64
MAX_VISION_DIM = 4_096
MAX_SCENES = 100_000
MAX_FEATURES = 100_000_000  # (scenes + heldout_scenes) x image_tokens x vision_dim: the encoder's table, 400 MB

STEPS = lambda least: lambda name: whole(name, least, MAX_STEPS)  # noqa: E731
LRS = lambda name: lambda text: tuple(numbers(name, text, above=0))  # noqa: E731


@dataclasses.dataclass(frozen=True)
class MultimodalRun(SeriesRun):
    """LLaVA's two stages on every checkpoint: a projector from a frozen vision encoder aligned to the
    frozen model (stage 1), then projector and model tuned together at each lr (stage 2)."""

    REQUIRED: ClassVar[tuple[str, ...]] = SeriesRun.REQUIRED

    lrs: tuple[float, ...] = knob((1e-4, 3e-4, 1e-3, 3e-3), "stage-2 learning rates > 0 (projector and model)", LRS)
    steps: int = knob(400, "stage-2 AdamW steps", STEPS(1))
    warmup_steps: int = knob(40, "linear warmup steps of each stage (stage 1: at most its steps)", STEPS(0))
    stage1_steps: int = knob(200, "stage-1 AdamW steps, the projector alone (0: no stage 1)", STEPS(0))
    stage1_lr: float = knob(1e-3, "stage-1 learning rate", lambda n: real(n, above=0))
    image_tokens: int = knob(
        4,
        "image tokens: encoder patches, each projected to one input embedding",
        lambda n: whole(n, 1, MAX_IMAGE_TOKENS),
    )
    vision_dim: int = knob(64, "features per patch of the frozen vision encoder", lambda n: whole(n, 1, MAX_VISION_DIM))
    scenes: int = knob(2_000, "training scenes, one caption each", lambda n: whole(n, 1, MAX_SCENES))
    heldout_scenes: int = knob(200, "held-out scenes, for the caption loss", lambda n: whole(n, 1, MAX_SCENES))
    world_seed: int = knob(0, "the scenes, the encoder's random map and the projector's init", SEED)
    seed: int = knob(0, "batch order (both stages)", SEED)
    repeats: int = knob(
        1, "runs per checkpoint: batch orders seed..seed+repeats-1, the same at every checkpoint", COUNT
    )


OWN = tuple(name for name in names(MultimodalRun) if name not in names(SeriesRun))
