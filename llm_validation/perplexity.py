"""The perplexity record both backends return (torch: ``evaluate``; JAX: ``jax_backend.evaluate``).

    perplexity = exp(mean NLL per predicted token)

A mean NLL above ``MAX_LOSS`` = log(largest float) ~ 709.8 has no finite perplexity: it is ``inf``
(a diverged model), and a NaN loss stays NaN. Plain Python, so either backend imports it alone.
"""

from __future__ import annotations

import dataclasses
import math
import sys

MAX_LOSS = math.log(sys.float_info.max)  # ~709.78: the largest mean NLL with a finite perplexity


def perplexity_of(mean_nll: float) -> float:
    """exp(mean_nll); ``inf`` beyond ``MAX_LOSS`` (NaN stays NaN)."""
    return math.inf if mean_nll > MAX_LOSS else math.exp(mean_nll)


@dataclasses.dataclass(frozen=True)
class Perplexity:
    perplexity: float
    mean_nll: float
    n_tokens: int
    batch_size: int
    seq_len: int
    dtype: str
    device: str

    @property
    def diverged(self) -> bool:
        """The loss is NaN or its perplexity overflows (``MAX_LOSS``)."""
        return not math.isfinite(self.perplexity)
