"""The command line's number types, in one place: every number is parsed here, checked finite and
within its bounds, and refused with one line naming the flag, the value and what is allowed.

``integer`` and ``number`` are argparse ``type=`` factories; ``numbers`` and ``token_counts`` parse
comma lists. Token counts take SI-style units: ``1e9``, ``2.3T``, ``500M``, ``320K``.
"""

from __future__ import annotations

import argparse
import math
import operator
import re

from experiments.run import UsageError

UNITS = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}
_COUNT = re.compile(r"(?P<number>[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)(?P<unit>[KMBT]?)")
MAX_VALUES = 100  # values in one comma list (a grid of gammas or lrs)
MAX_TOKENS = 10**15  # token counts: 1000T, beyond any public pre-training run


def bounded(flag: str, text: str, value, least=None, most=None, above=None, below=None):
    """``value`` (parsed from ``text``) if it is finite and within the bounds (``least <= value <=
    most``, ``above < value < below``, each optional); else UsageError naming the flag, the value and
    what is allowed."""
    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"{flag} {text!r} must be a finite number")
    rules = ((">=", least, operator.ge), ("<=", most, operator.le),
             (">", above, operator.gt), ("<", below, operator.lt))
    if any(bound is not None and not holds(value, bound) for _, bound, holds in rules):
        allowed = " and ".join(f"{sign} {_show(bound)}" for sign, bound, _ in rules if bound is not None)
        raise UsageError(f"{flag} {text} must be {allowed}")
    return value


def _show(bound) -> str:
    return f"{bound:,}" if isinstance(bound, int) and bound < 10**7 else f"{bound:g}"


def _argument(parse):
    """An argparse ``type`` from a parser raising UsageError (argparse reports ArgumentTypeError as is)."""
    def convert(text: str):
        try:
            return parse(text)
        except UsageError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return convert


def integer(flag: str, least: int | None = None, most: int | None = None):
    """argparse type: an integer in [least, most]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise UsageError(f"{flag} {text!r} is not an integer") from None
        return bounded(flag, text, value, least, most)

    return _argument(parse)


def number(flag: str, **bounds):
    """argparse type: a finite number within ``bounds`` (``bounded``'s keywords)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise UsageError(f"{flag} {text!r} is not a number") from None
        return bounded(flag, text, value, **bounds)

    return _argument(parse)


def numbers(flag: str, text: str, **bounds) -> list[float]:
    """Comma-separated finite numbers within ``bounds``, duplicates dropped, at most ``MAX_VALUES``."""
    items = [item.strip() for item in text.split(",")]
    if len(items) > MAX_VALUES:
        raise UsageError(f"{flag} has {len(items)} values; at most {MAX_VALUES} are allowed")
    values = []
    for item in items:
        try:
            value = float(item)
        except ValueError:
            raise UsageError(f"{flag} {item!r} is not a number; give comma-separated numbers") from None
        values.append(bounded(flag, item, value, **bounds))
    return unique(values)


def token_counts(text: str, flag: str = "--tokens") -> list[float]:
    """Comma-separated token counts (``1e9``, ``2.3T``, ``500M``), each finite and at most ``MAX_TOKENS``."""
    counts = []
    for item in (item.strip() for item in text.split(",")):
        match = _COUNT.fullmatch(item)
        if not match:
            raise UsageError(f"{flag} {item!r} is not a token count; allowed: numbers such as 1e9, 2.3T, 500M")
        counts.append(bounded(flag, item, float(match["number"]) * UNITS[match["unit"]], most=MAX_TOKENS))
    return counts


def human_tokens(tokens: float) -> str:
    """``1_230_000_000 -> '1.23B'``, ``5000 -> '5K'``, ``950 -> '950'`` (three significant digits)."""
    units = sorted(UNITS, key=UNITS.get)
    unit = max((u for u in units if tokens >= UNITS[u]), key=UNITS.get, default="")
    text = f"{tokens / UNITS[unit]:.3g}"
    if float(text) >= 1000 and unit != units[-1]:  # 999_999 -> '1M', not '1e+03K'
        unit = units[units.index(unit) + 1]
        text = f"{tokens / UNITS[unit]:.3g}"
    return f"{text}{unit}"


def unique(items) -> list:
    """``items`` in order, duplicates dropped."""
    return list(dict.fromkeys(items))
