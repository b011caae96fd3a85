"""The tuned learning rate: per pre-training checkpoint, the lr of the lowest in-task loss after
fine-tuning (the paper's tuned analysis). One rule for the theory's stored grids and the LLM runs.

Examples
--------
>>> import numpy as np
>>> tuned_choice(np.array([[0.5, 0.2, np.nan], [np.inf, 0.3, 0.3]]), axis=1).tolist()
[1, 1]
"""

from __future__ import annotations

import numpy as np


def tuned_choice(finetune_losses: np.ndarray, axis: int = 0) -> np.ndarray:
    """Index of the lr minimising the in-task loss L_B after fine-tuning, along ``axis``.

    Non-finite losses (diverged runs) never win; ties go to the first index, so with the lrs in
    ascending order the smallest of the best lrs is chosen. Where every loss is non-finite the index
    is 0; ``tuned_lr`` answers NaN there.

    Parameters
    ----------
    finetune_losses : numpy array
        L_B after fine-tuning, one entry per lr along ``axis`` (lrs ascending).
    axis : int
        The lr axis.

    Returns
    -------
    numpy array of int
        The chosen index, with ``axis`` removed.
    """
    losses = np.asarray(finetune_losses)
    return np.argmin(np.where(np.isfinite(losses), losses, np.inf), axis=axis)


def tuned_lr(lrs, finetune_losses) -> float:
    """The lr of one checkpoint's grid with the lowest finite in-task loss; NaN when none is finite.

    Parameters
    ----------
    lrs : sequence of float
        The grid's learning rates.
    finetune_losses : sequence of float
        The held-out in-task loss after fine-tuning at each lr.

    Returns
    -------
    float

    Examples
    --------
    >>> tuned_lr([3e-3, 1e-3], [0.7, 0.7])
    0.001
    """
    order = np.argsort(np.asarray(lrs, float), kind="stable")
    lrs, losses = np.asarray(lrs, float)[order], np.asarray(finetune_losses, float)[order]
    return float(lrs[tuned_choice(losses)]) if np.isfinite(losses).any() else float("nan")
