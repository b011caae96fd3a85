"""Token counts as people write them: ``320K``, ``2.3T``, ``1e9``. One table of units for the command
line, the checkpoint names (``step1000-tokens4B``) and the figures' axes. Plain Python: no torch.
"""

from __future__ import annotations

import re

UNITS: dict[str, int] = {"K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}
_COUNT = re.compile(r"(?P<number>[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)(?P<unit>[KMBT]?)")


def parse_tokens(text: str) -> float | None:
    """``'2.3T' -> 2.3e12``, ``'1e9' -> 1e9``, ``'500' -> 500.0``; None when ``text`` is no token count.

    The result may be ``inf`` (``1e400``): callers bound it."""
    match = _COUNT.fullmatch(text.strip())
    if not match:
        return None
    return float(match["number"]) * UNITS.get(match["unit"], 1)


def human_tokens(tokens: float) -> str:
    """``1_230_000_000 -> '1.23B'``, ``5000 -> '5K'``, ``950 -> '950'`` (three significant digits)."""
    scale = {"": 1, **UNITS}
    units = list(scale)  # increasing
    unit = max((u for u in units if tokens >= scale[u]), key=scale.get, default="")
    text = f"{tokens / scale[unit]:.3g}"
    if float(text) >= 1000 and unit != units[-1]:  # 999_999 -> '1M', not '1e+03K'
        unit = units[units.index(unit) + 1]
        text = f"{tokens / scale[unit]:.3g}"
    if float(text) >= 1000:  # beyond the largest unit: whole units, '1000T' rather than '1e+03T'
        text = f"{tokens / scale[unit]:.0f}"
    return f"{text}{unit}"
