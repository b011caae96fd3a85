"""Argument checks of the public functions of ``theory``: each refuses bad input with one ValueError that
names the argument, shows the value and says what is allowed.

Values are checked where they are concrete, at the Python boundary. Inside ``jit``, ``vmap`` or
``grad`` they are tracers: shapes and dtypes (static) are still checked, values are not (the caller
outside the trace checks them), so every function stays traceable.
"""

from __future__ import annotations

import numbers
import operator

import jax
import jax.numpy as jnp
import numpy as np

_BOUNDS = ((">", "above", operator.gt), (">=", "least", operator.ge), ("<=", "most", operator.le))


def _traced(value) -> bool:
    return isinstance(value, jax.core.Tracer)


def _float(dtype=None):
    """The float dtype JAX computes ``dtype`` in: a float dtype as JAX holds it (float64 is float32
    unless x64 is enabled), anything else as JAX's default float."""
    if dtype is not None and np.dtype(dtype).kind == "f":
        return jax.dtypes.canonicalize_dtype(dtype)
    return jnp.result_type(float)


def numeric(name: str, value):
    """``value`` as a non-empty NumPy array of integers or floats (a traced value as is); refuses what
    ``_numbers`` refuses and an empty array. NaN and inf pass: this is the check of tables that may
    hold diverged runs."""
    if _traced(value):
        return value
    v = _numbers(name, value)
    if v.size == 0:
        raise ValueError(f"{name} is empty; give at least one number")
    return v


def _numbers(name: str, value) -> np.ndarray:
    """``value`` as a NumPy array of integers or floats; refuses None, strings, booleans (also inside a
    list), complex numbers, ragged lists and anything else that is not numbers."""
    refuse = f"{name}={_clip(value)} is not a number; give a number or an array of numbers"
    if value is None or isinstance(value, (str, bytes)):
        raise ValueError(refuse)
    try:
        v = np.asarray(value)
        if v.dtype == object:  # Python ints beyond int64, Fractions, ...
            if any(x is None or isinstance(x, (str, bytes)) for x in v.flat):  # astype would parse "1"
                raise ValueError(refuse)
            v = v.astype(np.float64)
    except OverflowError:
        raise ValueError(f"{name}={_clip(value)} is beyond float64's range") from None
    except (TypeError, ValueError):
        raise ValueError(refuse) from None
    if isinstance(value, (list, tuple)) and any(
        isinstance(x, (bool, np.bool_)) for x in np.asarray(value, object).flat
    ):
        raise ValueError(f"{name}={_clip(value)} holds booleans; give a number or an array of numbers")
    if v.dtype.kind not in "iuf":
        raise ValueError(f"{name}={_clip(value)} has dtype {v.dtype}; give a number or an array of numbers")
    return v


def floats(name: str, value, *, ndim=None, above=None, least=None, most=None, finite: bool = True):
    """``value`` as floats JAX computes in (an integer input is cast to JAX's float), after refusing:
    non-numbers (``_numbers``); an empty array; a number of axes other than ``ndim`` (an int or a tuple
    of them); NaN or inf (unless ``finite`` is False); a finite value beyond the float dtype's range
    or, nonzero, below its smallest normal number (it would overflow or flush to zero); and values
    outside the bounds ``above`` < x, ``least`` <= x <= ``most`` (each optional). A Python float is
    returned as is (weakly typed, as JAX treats it); a traced value has only its axes checked."""
    if _traced(value):
        _axes(name, value, ndim)
        return value if jnp.issubdtype(value.dtype, jnp.floating) else value.astype(_float())
    v = numeric(name, value)
    _axes(name, v, ndim)
    dtype = _float(v.dtype)
    x = v.astype(np.float64)
    if finite and not np.all(np.isfinite(x)):
        raise ValueError(f"{name}={_show(x, ~np.isfinite(x))} must be finite (no NaN or inf)")
    info = np.finfo(dtype)
    with np.errstate(invalid="ignore"):
        outside = np.isfinite(x) & ((np.abs(x) > info.max) | ((x != 0) & (np.abs(x) < info.tiny)))
    if np.any(outside):
        raise ValueError(
            f"{name}={_show(x, outside)} is outside the range of {np.dtype(dtype).name}, the dtype JAX computes "
            f"in: allowed 0 or {info.tiny:.4g} <= |{name}| <= {info.max:.4g}"
        )
    bounds = {"above": above, "least": least, "most": most}
    for _, key, holds in _BOUNDS:
        if bounds[key] is None:
            continue
        bad = ~np.isnan(x) & ~holds(x, bounds[key])
        if np.any(bad):
            allowed = " and ".join(f"{s} {bounds[k]:g}" for s, k, _ in _BOUNDS if bounds[k] is not None)
            raise ValueError(f"{name}={_show(x, bad)} must be {allowed}")
    if isinstance(value, float):
        return value
    if isinstance(value, numbers.Integral) and not isinstance(value, np.generic):
        return float(value)
    return value.astype(dtype) if isinstance(value, jax.Array) else jnp.asarray(v, dtype)


def _axes(name: str, value, ndim) -> None:
    """Refuses a number of axes other than ``ndim`` (None: any; an int or a tuple of allowed counts)."""
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if allowed is not None and np.ndim(value) not in allowed:
        what = " or ".join(
            {0: "a scalar", 1: "a 1-d array", 2: "a matrix"}.get(n, f"an array of {n} axes") for n in allowed
        )
        raise ValueError(f"{name} must be {what}, got shape {tuple(np.shape(value))}")


def positive(name: str, value, **kw):
    """``floats`` with every value > 0."""
    return floats(name, value, above=0, **kw)


def python_zero(value) -> bool:
    """Whether ``value`` is a Python 0 (not an array, not traced): the term it scales is then left out
    of the computation altogether, so a run without that term is the plain computation, number for
    number (a traced or array 0 keeps the term, multiplied by 0)."""
    return isinstance(value, (int, float)) and value == 0


def non_negative(name: str, value, **kw):
    """``floats`` with every value >= 0."""
    return floats(name, value, least=0, **kw)


def integer(name: str, value, least: int = 1) -> int:
    """``value`` as a Python int; refuses booleans, floats (16.7 and 16.0 alike), strings, None, and
    integers below ``least``."""
    if not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_)) or value < least:
        raise ValueError(f"{name}={_clip(value)} must be an integer >= {least}")
    return int(value)


def positive_int(name: str, value) -> int:
    """``integer`` >= 1."""
    return integer(name, value, 1)


def weights(name: str, Ws, batch_axes: int = 0) -> tuple:
    """A network's layers (W_1, ..., W_L) as float arrays: refuses anything but a non-empty tuple or
    list, layers that ``floats`` refuses or that are not matrices (with ``batch_axes`` leading axes
    shared by every layer), and shapes that do not chain (W_k: d_k x d_{k-1})."""
    if not isinstance(Ws, (tuple, list)):
        raise ValueError(f"{name} must be a tuple of weight matrices (W_1, ..., W_L), got {_clip(Ws)}")
    if not Ws:
        raise ValueError(f"{name} is empty; give at least one weight matrix")
    Ws = tuple(floats(f"{name}[{k}]", W, ndim=2 + batch_axes) for k, W in enumerate(Ws))
    shapes = [tuple(W.shape) for W in Ws]
    chained = all(W[-1] == prev[-2] and W[:batch_axes] == prev[:batch_axes] for prev, W in zip(shapes, shapes[1:]))
    if not chained:
        raise ValueError(f"{name} shapes do not chain (W_k: d_k x d_(k-1)): {shapes}")
    return Ws


def trajectory(Ws_T, A) -> tuple:
    """(Ws_T, A) checked: a trajectory of weights (layer k of shape (n_t, width_k, width_{k-1})) and the
    teacher it is measured on, d_out x d_in of the network."""
    Ws_T = weights("Ws_T", Ws_T, batch_axes=1)
    A = floats("A", A, ndim=2)
    shaped("A", A, (Ws_T[-1].shape[-2], Ws_T[0].shape[-1]), "d_out x d_in of the network")
    return Ws_T, A


def shaped(name: str, value, shape: tuple, what: str) -> None:
    """Refuses ``value`` unless its shape is ``shape`` (``what`` says where the shape comes from)."""
    if tuple(np.shape(value)) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(np.shape(value))}; allowed: {tuple(shape)} ({what})")


def same_shape(name_a: str, a, name_b: str, b) -> None:
    if np.shape(a) != np.shape(b):
        raise ValueError(f"{name_a} has shape {np.shape(a)} but {name_b} has shape {np.shape(b)}; they must match")


def broadcast(**arrays) -> None:
    """Refuses arrays whose shapes do not broadcast together, naming them all."""
    shapes = {name: tuple(np.shape(a)) for name, a in arrays.items()}
    try:
        np.broadcast_shapes(*shapes.values())
    except ValueError:
        shown = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"shapes do not broadcast together: {shown}") from None


def ordered(name: str, value, descending: bool = False) -> None:
    """Refuses values not sorted in ascending (or ``descending``) order along the last axis."""
    if _traced(value):
        return
    steps = np.diff(np.asarray(value), axis=-1)
    if np.any(steps > 0 if descending else steps < 0):
        raise ValueError(f"{name}={_show(value)} must be sorted in {'de' if descending else 'a'}scending order")


def one_of(name: str, value, allowed) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name}={value!r} is not allowed; choose one of: {', '.join(map(str, allowed))}")


def function(name: str, value) -> None:
    """Refuses anything that cannot be called."""
    if not callable(value):
        raise ValueError(f"{name}={_clip(value)} must be a function")


def instance(name: str, value, kind: type) -> None:
    """Refuses anything but a ``kind``."""
    if not isinstance(value, kind):
        raise ValueError(f"{name}={_clip(value)} must be of type {kind.__name__}")


def key_given(key, why: str) -> None:
    """Randomness is explicit: a function that draws takes its PRNG key from the caller, never a
    default. Refuses None (saying ``why`` one is needed) and what ``prng_key`` refuses."""
    if key is None:
        raise ValueError(f"key is required: {why}; pass key=jax.random.PRNGKey(seed)")
    prng_key("key", key)


def prng_key(name: str, key) -> None:
    """Refuses anything but a PRNG key: a typed key, or a raw uint32 key of shape (..., 2)."""
    dtype = getattr(key, "dtype", None)
    typed = dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)
    raw = dtype == np.uint32 and np.shape(key)[-1:] == (2,)
    if not (typed or raw):
        raise ValueError(f"{name}={_clip(key)} is not a PRNG key; pass {name}=jax.random.PRNGKey(seed)")


def permutation(name: str, value, n: int) -> np.ndarray:
    """``value`` as an int array; refuses anything but a permutation of 0..n-1."""
    v = _numbers(name, value)
    if v.dtype.kind not in "iu" or v.ndim != 1 or sorted(v.tolist()) != list(range(n)):
        raise ValueError(f"{name}={_clip(value)} must be a permutation of 0..{n - 1}")
    return v


def _show(v, where=None) -> str:
    """A value for a message: a scalar as it is, an array as its first entries (those ``where`` is True)."""
    v = np.asarray(v)
    if where is not None and v.ndim:
        v = v[where]
    if v.ndim == 0:
        return repr(v.item())
    bad = v.ravel()[:4]
    return f"[{', '.join(f'{x:g}' for x in bad)}{', ...' if v.size > 4 else ''}]"


def _clip(value, most: int = 60) -> str:
    """``repr(value)`` cut to ``most`` characters: one line, whatever was passed."""
    text = " ".join(repr(value).split())
    return text if len(text) <= most else text[: most - 3] + "..."
