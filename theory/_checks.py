"""Argument checks shared by the public functions: one ValueError naming the argument."""

from __future__ import annotations

import numpy as np


def _concrete(value):
    """A NumPy view of ``value`` when it is concrete, else None (inside jit nothing can be checked)."""
    try:
        return np.asarray(value)
    except Exception:  # a jax tracer: checks happen in the un-jitted caller
        return None


def positive(name: str, value) -> None:
    v = _concrete(value)
    if v is not None and not np.all(v > 0):
        raise ValueError(f"{name}={_show(v)} must be > 0")


def non_negative(name: str, value) -> None:
    v = _concrete(value)
    if v is not None and not np.all(v >= 0):
        raise ValueError(f"{name}={_show(v)} must be >= 0")


def positive_int(name: str, value) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name}={value!r} must be a positive integer")


def sorted_descending(name: str, value) -> None:
    v = _concrete(value)
    if v is not None and np.any(np.diff(v) > 0):
        raise ValueError(f"{name}={_show(v)} must be sorted in descending order")


def one_of(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not allowed; choose one of: {', '.join(map(str, allowed))}")


def same_shape(name_a: str, a, name_b: str, b) -> None:
    if np.shape(a) != np.shape(b):
        raise ValueError(f"{name_a} has shape {np.shape(a)} but {name_b} has shape {np.shape(b)}; they must match")


def key_given(key, why: str) -> None:
    """Randomness is explicit: a function that draws takes its PRNG key from the caller, never a default."""
    if key is None:
        raise ValueError(f"key is required: {why}; pass key=jax.random.PRNGKey(seed)")


def _show(v) -> str:
    v = np.asarray(v)
    if v.ndim == 0:
        return repr(v.item())
    bad = v.ravel()[:4]
    return f"[{', '.join(f'{x:g}' for x in bad)}{', ...' if v.size > 4 else ''}]"
