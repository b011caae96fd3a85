"""Pre-training mitigations of catastrophic overtraining that change the simulated training itself
(docs/THEORY.md, "Mitigations"): weight decay, as a term of the loss whose gradient flow the optimisers'
coupled decay follows, and sharpness-aware minimisation's gradient. Replay and the L2 pull change the
fine-tuning objective (``theory.finetune``); the WSD anneal is ``simulate.schedule``'s decay_fraction.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from theory import _checks
from theory.network import Params


def with_weight_decay(loss_fn: Callable[[Params], jax.Array], weight_decay) -> Callable[[Params], jax.Array]:
    """W -> loss_fn(W) + lambda/2 sum_k ||W_k||_F^2: coupled L2 decay of every layer, whose gradient flow
    is the flow of ``simulate.optimizer(weight_decay=lambda)`` under SGD (T = sum of lr). A Python 0 returns
    ``loss_fn`` itself. Refuses a ``loss_fn`` that cannot be called and weight_decay < 0.

    Parameters
    ----------
    loss_fn : callable
        Weights -> scalar loss.
    weight_decay : float
        lambda (>= 0).

    Returns
    -------
    callable
        Weights -> the decayed loss.
    """
    _checks.function("loss_fn", loss_fn)
    weight_decay = _checks.non_negative("weight_decay", weight_decay, ndim=0)
    if _checks.python_zero(weight_decay):
        return loss_fn
    return lambda W: loss_fn(W) + 0.5 * weight_decay * sum(jnp.sum(w**2) for w in W)


def sam_gradient(grad_fn: Callable, W: Params, batch, rho):
    """The gradient sharpness-aware minimisation (Foret et al. 2021) feeds its optimiser:

        g = grad L(W; batch),   g_SAM = grad L(W + rho g / ||g||; batch),

    ||g|| the global norm over every layer, the ascent step on the same batch as the descent. Where
    g = 0 (a stationary point) the ascent is 0 and g_SAM = g. Unchecked (called inside the scan of
    ``simulate.train``, which checks ``sam_rho``).

    Parameters
    ----------
    grad_fn : callable
        (W, batch) -> the gradient of the loss, a pytree like W.
    W : tuple of arrays
        The weights.
    batch : pytree
        The step's batch.
    rho : float
        The radius of the ascent step (>= 0).

    Returns
    -------
    tuple of arrays
        g_SAM, shaped like W.
    """
    g = grad_fn(W, batch)
    norm = jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree.leaves(g)))
    scale = jnp.where(norm > 0, rho / jnp.where(norm > 0, norm, 1.0), 0.0)
    return grad_fn(jax.tree.map(lambda w, x: w + scale * x, W, g), batch)
