"""The command line's number types, in one place: every number is parsed here, checked finite and
within its bounds, and refused with one line naming the flag, the value and what is allowed.

``whole``, ``real`` and ``choice`` make parsers of one value, ``numbers`` and ``token_counts`` parse
comma lists; each raises ``UsageError`` naming what it reads: a flag (``--seeds 0 must be >= 1``) or
a config field (``seeds=0 must be >= 1``, when the name ends in ``=``). ``integer`` and ``number``
are the argparse ``type=`` forms. Token counts take SI-style units: ``1e9``, ``2.3T``, ``500M``, ``320K``.
"""

from __future__ import annotations

import argparse
import math
import operator
from pathlib import Path

from rundir.lifecycle import UsageError
from rundir.tokens import parse_tokens

MAX_VALUES = 100  # values in one comma list (a grid of gammas or lrs)
MAX_TOKENS = 10**15  # token counts: 1000T, beyond any public pre-training run


class Parser(argparse.ArgumentParser):
    """argparse whose errors are bad input: one line, exit 2 (``UsageError``), not a usage block."""

    def error(self, message):  # one line, exit 2, instead of argparse's usage block
        # main() prefixes "ovt: error:"; a subcommand names itself ("ovt theory: ...").
        raise UsageError(message if self.prog == "ovt" else f"{self.prog}: {message}")


def said(flag: str, text: str, quote: bool = False) -> str:
    """How a message names a value: ``--lr 'inf'`` for a flag, ``lr='inf'`` for a field (``flag`` ends in ``=``)."""
    shown = repr(text) if quote else text
    return f"{flag}{shown}" if flag.endswith("=") else f"{flag} {shown}"


def bounded(flag: str, text: str, value, least=None, most=None, above=None, below=None):
    """``value`` (parsed from ``text``) if it is finite and within the bounds (``least <= value <=
    most``, ``above < value < below``, each optional); else UsageError naming the flag, the value and
    what is allowed."""
    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"{said(flag, text, True)} must be a finite number")
    rules = (
        (">=", least, operator.ge),
        ("<=", most, operator.le),
        (">", above, operator.gt),
        ("<", below, operator.lt),
    )
    if any(bound is not None and not holds(value, bound) for _, bound, holds in rules):
        allowed = " and ".join(f"{sign} {_show(bound)}" for sign, bound, _ in rules if bound is not None)
        raise UsageError(f"{said(flag, text)} must be {allowed}")
    return value


def _show(bound) -> str:
    return f"{bound:,}" if isinstance(bound, int) and bound < 10**7 else f"{bound:g}"


def argument_type(parse):
    """An argparse ``type`` from a parser raising UsageError (argparse reports ArgumentTypeError as is)."""

    def convert(text: str):
        try:
            return parse(text)
        except UsageError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return convert


def directory(flag: str):
    """An argparse ``type`` for a directory flag: the path, refusing an empty one (which would name the
    current directory and write a run there)."""

    def parse(text: str) -> Path:
        if not text.strip():
            raise UsageError(f"{flag} is empty; give a directory")
        return Path(text)

    return argument_type(parse)


def whole(flag: str, least: int | None = None, most: int | None = None):
    """A parser of one integer in [least, most]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise UsageError(f"{said(flag, text, True)} is not an integer") from None
        return bounded(flag, text, value, least, most)

    return parse


def real(flag: str, **bounds):
    """A parser of one finite number within ``bounds`` (``bounded``'s keywords)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise UsageError(f"{said(flag, text, True)} is not a number") from None
        return bounded(flag, text, value, **bounds)

    return parse


TRUE, FALSE = ("true", "1", "yes"), ("false", "0", "no")  # how a text says a yes/no setting


def choice(flag: str, allowed: tuple[str, ...]):
    """A parser of one of ``allowed``."""

    def parse(text: str) -> str:
        if text not in allowed:
            raise UsageError(f"{said(flag, text, True)} is not allowed; choose one of: {', '.join(allowed)}")
        return text

    return parse


def listed(read):
    """A parser of a comma list whose every value ``read`` parses (a parser of one value: ``whole``,
    ``choice``, ...), duplicates dropped, as a tuple."""
    return lambda text: tuple(unique(read(item.strip()) for item in text.split(",")))


def integer(flag: str, least: int | None = None, most: int | None = None):
    """argparse type: an integer in [least, most]."""
    return argument_type(whole(flag, least, most))


def number(flag: str, **bounds):
    """argparse type: a finite number within ``bounds``."""
    return argument_type(real(flag, **bounds))


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
            raise UsageError(f"{said(flag, item, True)} is not a number; give comma-separated numbers") from None
        values.append(bounded(flag, item, value, **bounds))
    return unique(values)


def token_counts(text: str, flag: str = "--tokens") -> list[float]:
    """Comma-separated token counts (``1e9``, ``2.3T``, ``500M``), each finite and at most ``MAX_TOKENS``."""
    counts = []
    for item in (item.strip() for item in text.split(",")):
        count = parse_tokens(item)
        if count is None:
            raise UsageError(f"{said(flag, item, True)} is not a token count; allowed: numbers such as 1e9, 2.3T, 500M")
        counts.append(bounded(flag, item, count, most=MAX_TOKENS))
    return counts


def unique(items) -> list:
    """``items`` in order, duplicates dropped."""
    return list(dict.fromkeys(items))
