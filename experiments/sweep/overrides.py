"""FIELD=VALUE texts as config values: each checked as the field's type (exact integers, finite float32
floats, true/false), a comma list sweeping a field, a field given twice refused.
"""

from __future__ import annotations

import dataclasses
import math
import typing

from experiments.arguments import FALSE, TRUE
from experiments.sweep.config import FIELDS, HINTS, TheoryConfig


def read_overrides(items: list[str]) -> dict[str, str]:
    """``FIELD=VALUE`` texts as {field: text}; refuses an item without ``=`` and a field given twice
    (a comma list sweeps a field: ``gamma=0.3,0.5``)."""
    overrides: dict[str, str] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep:
            raise ValueError(f"override {item!r} must look like FIELD=VALUE")
        if name in overrides:
            raise ValueError(
                f"{name} is given twice ({name}={overrides[name]} and {name}={text}); give it once "
                f"(a comma list sweeps it: {name}=a,b)"
            )
        overrides[name] = text
    return overrides


def parse_value(name: str, text: str):
    """Turn ``text`` into the type of field ``name`` (tuples from comma lists); ValueError names both."""
    if name not in FIELDS or name == "grid":
        raise ValueError(
            f"override key {name!r} is unknown; allowed: {', '.join(sorted(k for k in FIELDS if k != 'grid'))}"
        )
    hint = HINTS[name]
    try:
        if typing.get_origin(hint) is tuple:
            item = typing.get_args(hint)[0]
            return tuple(_scalar(item, t) for t in text.split(",") if t.strip())
        return _scalar(hint, text)
    except _NotFinite as error:
        kind = "a finite number" if "float" in str(hint) else "a whole number"
        raise ValueError(f"{name}={str(error)!r} must be {kind}") from None
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a valid {getattr(hint, '__name__', hint)}") from None


class _NotFinite(ValueError):
    """A float field given inf or nan (or a number that overflows to inf, 1e400)."""


def _scalar(kind, text: str):
    text = text.strip()
    if kind is bool:
        if text.lower() in TRUE + FALSE:
            return text.lower() in TRUE
        raise ValueError(text)
    if kind is int:
        try:
            return int(text)  # exact, however large (a float would round 2**53 + 1)
        except ValueError:
            pass
        value = float(text)
        if not math.isfinite(value):
            raise _NotFinite(text)
        if value != int(value):
            raise ValueError(text)
        return int(value)
    value = kind(text)
    if kind is float and not math.isfinite(value):
        raise _NotFinite(text)
    return value


def apply_overrides(cfg: TheoryConfig, overrides: dict[str, str]) -> TheoryConfig:
    """Override fields; a swept field given a comma list replaces the grid's values (repeats dropped),
    a scalar pins it. Refuses a comma list with no values (``gamma=,``)."""
    grid = dict(cfg.grid)
    fixed = {}
    for name, text in overrides.items():
        hint = HINTS.get(name)
        if hint is not None and typing.get_origin(hint) is not tuple and "," in text:
            values = tuple(dict.fromkeys(parse_value(name, t) for t in text.split(",") if t.strip()))
            if not values:
                raise ValueError(f"{name}={text!r} lists no values; a sweep needs at least one ({name}=a,b)")
            grid[name] = values
            continue
        fixed[name] = parse_value(name, text)
        grid.pop(name, None)
    return dataclasses.replace(cfg, grid=tuple(grid.items()), **fixed)
