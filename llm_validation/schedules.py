"""Learning-rate schedules of pre-training: linear warmup then cosine decay to 10% of the peak, and
warmup-stable-decay (WSD), whose constant trunk lets one run branch into every budget.
"""

from __future__ import annotations

import math

from llm_validation.pretrain_config import PretrainConfig


def learning_rate(t: int, *, peak: float, warmup_steps: int, total_steps: int) -> float:
    """The rate of update ``t + 1`` after ``t`` updates; the schedule ends at ``lr(T) = 0`` exactly.

        lr(t) = lr_peak * (t + 1) / t_w                                  for 0 <= t < t_w
        lr(t) = lr_peak * 0.5 * (1 + cos(pi * (t - t_w) / (T - t_w)))   for t_w <= t <= T

    Counting from the update about to be made keeps every one of the ``T`` updates useful: none is
    spent at lr 0 (the first warmup step is ``lr_peak / t_w``), and the value after the last is 0.
    """
    if t < warmup_steps:
        return peak * (t + 1) / warmup_steps
    return peak * 0.5 * (1.0 + math.cos(math.pi * (t - warmup_steps) / (total_steps - warmup_steps)))


def wsd_learning_rate(t: int, *, peak: float, warmup_steps: int, decay_start: int, total_steps: int) -> float:
    """Warmup-stable-decay, counted as ``learning_rate`` counts (the rate of update ``t + 1``):

        lr(t) = lr_peak * (t + 1) / t_w                      for 0 <= t < t_w
        lr(t) = lr_peak                                      for t_w <= t < t_d      (the trunk)
        lr(t) = lr_peak * (T - t) / (T - t_d)                for t_d <= t <= T       (a branch)

    so every branch update is made at a rate > 0 and the value after the last one, lr(T), is 0.
    """
    if t < warmup_steps:
        return peak * (t + 1) / warmup_steps
    if t < decay_start:
        return peak
    return peak * (total_steps - t) / (total_steps - decay_start) if total_steps > decay_start else 0.0


def warmup_steps(config: PretrainConfig, total_steps: int) -> int:
    """``floor(warmup_fraction * T)``: always below ``T``, so the cosine phase is never empty."""
    return int(config.warmup_fraction * total_steps)
