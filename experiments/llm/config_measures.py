"""``CurvatureRun`` and ``QuantizeRun``, the configs of ``ovt llm curvature`` and ``ovt llm quantize``:
``SeriesRun``s whose fields are declared as ``experiments.llm.config``'s are (``knob``), in a module of
their own beside it.

    CurvatureRun  ``ovt llm curvature``: Hessian trace and top eigenvalue, and the small-noise excess
    QuantizeRun   ``ovt llm quantize``: perplexity with every linear weight quantized, on every checkpoint
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from experiments.arguments import choice, listed, whole
from experiments.llm.config import COUNT, GAMMAS, MAX_PROBES, SCALES, SeriesRun, knob

ROUNDINGS, BIT_RANGE = ("nearest", "stochastic"), (2, 16)  # llm_validation.quantize's, without importing torch


@dataclasses.dataclass(frozen=True)
class CurvatureRun(SeriesRun):
    """Curvature of the held-out loss on every checkpoint, beside the small-noise excess it predicts."""

    REQUIRED: ClassVar[tuple[str, ...]] = (*SeriesRun.REQUIRED, "gammas")

    gammas: tuple[float, ...] | None = knob(None, "small noise scales at which the excess is measured directly", GAMMAS)
    draws: int = knob(8, "antithetic pairs of draws per gamma (draw k of perturb and its mirror image)", COUNT)
    probes: int = knob(32, "Hutchinson probes of the sigma-weighted Hessian trace", lambda n: whole(n, 1, MAX_PROBES))
    iterations: int = knob(30, "power iterations for the top Hessian eigenvalue", lambda n: whole(n, 1, MAX_PROBES))
    scale: str = knob("init", "sigma per tensor: init std (the paper's), tensor RMS, or 1", choices=SCALES)


@dataclasses.dataclass(frozen=True)
class QuantizeRun(SeriesRun):
    """Post-training quantization on every checkpoint: its perplexity per (bits, rounding, draw)."""

    bits: tuple[int, ...] = knob((8, 4, 3), "bit widths (2 to 16)", lambda n: listed(whole(n, *BIT_RANGE)))
    rounding: tuple[str, ...] = knob(("nearest",), "nearest and/or stochastic", lambda n: listed(choice(n, ROUNDINGS)))
    seeds: int = knob(1, "stochastic rounding draws per bit width, seeds 0..K-1 (nearest: one)", COUNT)
