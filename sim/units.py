"""Parsing and formatting of the quantities a scenario is written in.

Durations read as ``250ms``, ``30s``, ``15m``, ``6h``, ``7d`` (a bare number is seconds); rates as
``50/s``, ``3000/min``, ``4.3M/day`` (a bare number is per second); counts as ``200000``, ``200k``,
``31M``. Every parser returns SI floats (seconds, per second) and raises ``ValueError`` with a
message written for the person who typed the value.
"""

from __future__ import annotations

import math
import re

MINUTE_S = 60.0
HOUR_S = 3600.0
DAY_S = 86400.0
WEEK_S = 7 * DAY_S

DURATION_UNITS_S = {
    "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0,
    "h": 3600.0, "hr": 3600.0, "d": 86400.0, "day": 86400.0, "days": 86400.0, "w": 604800.0,
}
RATE_UNITS_S = {
    "s": 1.0, "sec": 1.0, "second": 1.0, "min": 60.0, "minute": 60.0, "m": 60.0,
    "h": 3600.0, "hour": 3600.0, "hr": 3600.0, "d": 86400.0, "day": 86400.0, "week": 604800.0,
}
COUNT_SUFFIX = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9}

_NUMBER = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
_DURATION_RE = re.compile(rf"^\s*{_NUMBER}\s*([a-zµ]*)\s*$")
_RATE_RE = re.compile(rf"^\s*{_NUMBER}\s*([kKMBG]?)\s*(?:/\s*([a-z]+))?\s*$")
_COUNT_RE = re.compile(rf"^\s*{_NUMBER}\s*([kKMBG]?)\s*$")


def parse_duration(value: object) -> float:
    """``'15m'`` -> 900.0 seconds. Bare numbers are seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 250ms, 30s, 15m, 6h or 7d (got {value!r})")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION_RE.match(value)
        if not match or match.group(2) not in DURATION_UNITS_S and match.group(2) != "":
            raise ValueError(
                f"expected a duration such as 250ms, 30s, 15m, 6h or 7d (got {value!r})")
        seconds = float(match.group(1)) * DURATION_UNITS_S.get(match.group(2), 1.0)
    else:
        raise ValueError(f"expected a duration such as 250ms, 30s, 15m, 6h or 7d (got {value!r})")
    if not math.isfinite(seconds):
        raise ValueError(f"expected a finite duration (got {value!r})")
    return seconds


def parse_rate(value: object) -> float:
    """``'4.3M/day'`` -> 49.77 per second. Bare numbers are per second."""
    message = f"expected a rate such as 50/s, 3000/min or 4.3M/day (got {value!r})"
    if isinstance(value, bool):
        raise ValueError(message)
    if isinstance(value, (int, float)):
        rate = float(value)
    elif isinstance(value, str):
        match = _RATE_RE.match(value)
        if not match:
            raise ValueError(message)
        number, suffix, unit = match.groups()
        unit = unit or "s"
        if unit not in RATE_UNITS_S:
            raise ValueError(message)
        rate = float(number) * COUNT_SUFFIX[suffix] / RATE_UNITS_S[unit]
    else:
        raise ValueError(message)
    if not math.isfinite(rate):
        raise ValueError(message)
    return rate


def parse_count(value: object) -> float:
    """``'31M'`` -> 31e6. Accepts plain numbers too."""
    message = f"expected a count such as 200000, 200k or 31M (got {value!r})"
    if isinstance(value, bool):
        raise ValueError(message)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        match = _COUNT_RE.match(value)
        if match:
            return float(match.group(1)) * COUNT_SUFFIX[match.group(2)]
    raise ValueError(message)


def format_duration(seconds: float) -> str:
    """A duration that reads well and parses back to the same value: 900 -> ``'15m'``,
    0.015 -> ``'15ms'``, 90000 -> ``'25h'``; seconds with full precision when no unit is exact."""
    seconds = float(seconds)
    if seconds == 0:
        return "0s"
    if not math.isfinite(seconds):
        return str(seconds)
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0), ("ms", 1e-3),
                       ("us", 1e-6)):
        value = seconds / size
        short = round(value, 3)
        if abs(value) >= 1 and short * size == seconds:
            return f"{_short(short)}{unit}"
    for unit, size in (("ms", 1e-3), ("s", 1.0)):  # 0.44ms, 1.5e-05s -> 0.015ms
        text = f"{_short(round(seconds / size, 6))}{unit}"
        if parse_duration(text) == seconds:
            return text
    return f"{seconds!r}s"


def format_rate(per_s: float) -> str:
    """A rate in the unit that reads best: 50 -> ``'50/s'``, 0.5 -> ``'30/min'``."""
    if per_s >= 1 or per_s == 0:
        return f"{_short(per_s)}/s"
    if per_s * 60 >= 1:
        return f"{_short(per_s * 60)}/min"
    if per_s * 3600 >= 1:
        return f"{_short(per_s * 3600)}/h"
    return f"{_short(per_s * 86400)}/day"


def _short(x: float) -> str:
    text = repr(float(x))
    return text[:-2] if text.endswith(".0") else text


def human_duration(seconds: float) -> str:
    """A duration rounded for reading in a table: 12600 -> ``'3.5h'``, 0.0153 -> ``'15.3ms'``."""
    if not math.isfinite(seconds):
        return "-"
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0), ("s", 1.0), ("ms", 1e-3)):
        if abs(seconds) >= size:
            return f"{seconds / size:.3g}{unit}"
    return f"{seconds / 1e-6:.3g}us" if seconds else "0s"


def _significant(x: float, digits: int) -> str:
    """``x`` to ``digits`` significant digits, without exponent or trailing zeros."""
    if x == 0 or not math.isfinite(x):
        return _short(x)
    text = f"{x:.{digits}g}"
    if "e" in text:
        text = f"{float(text):.{max(0, digits - 1 - int(math.floor(math.log10(abs(x)))))}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def round_duration(seconds: float, digits: int = 3) -> str:
    """A measured duration rounded to ``digits`` significant digits in the unit that reads best,
    in scenario syntax: 0.0142371 -> ``'14.2ms'``, 93.4 -> ``'93.4s'``, 5400 -> ``'90m'``."""
    seconds = float(seconds)
    if seconds == 0 or not math.isfinite(seconds):
        return format_duration(seconds)
    # each unit from the magnitude at which it reads better than the one below (90m, not 1.5h)
    for unit, size, from_s in (("d", 86400.0, 2 * 86400.0), ("h", 3600.0, 7200.0),
                               ("m", 60.0, 120.0), ("s", 1.0, 1.0), ("ms", 1e-3, 1e-3)):
        if abs(seconds) >= from_s:
            return f"{_significant(seconds / size, digits)}{unit}"
    return f"{_significant(seconds / 1e-6, digits)}us"


def round_rate(per_s: float, digits: int = 4) -> str:
    """A measured rate rounded to ``digits`` significant digits, in scenario syntax:
    0.00381944 -> ``'13.75/h'``, 52.5631 -> ``'52.56/s'``."""
    for unit, size in (("s", 1.0), ("min", 60.0), ("h", 3600.0)):
        if per_s * size >= 1:
            return f"{_significant(per_s * size, digits)}/{unit}"
    return f"{_significant(per_s * 86400.0, digits)}/day"


def format_usd(x: float, sign: bool = False) -> str:
    """US dollars as people read them: whole dollars from $100 up, cents below, no "-$0.00";
    ``sign`` adds ``+`` to gains; ``-`` for a missing value."""
    if x is None or x != x:
        return "-"
    x = round(float(x), 0 if abs(x) >= 100 else 2) + 0.0
    prefix = "-" if x < 0 else ("+" if sign and x > 0 else "")
    text = f"{abs(x):,.0f}" if abs(x) >= 100 else f"{abs(x):,.2f}"
    return f"{prefix}${text}"


def format_usd_range(low: float, high: float) -> str:
    """A money interval: ``$3,900–$4,300``, or ``-$120 to $80`` when a side is negative;
    ``no CI`` when either end is missing."""
    if low is None or high is None or low != low or high != high:
        return "no CI"
    if low >= 0:
        return f"{format_usd(low)}–{format_usd(high)}"
    return f"{format_usd(low)} to {format_usd(high)}"


def rate_text(per_s: float) -> str:
    """A request rate for people: ``20/s (1.73M a day)``."""
    per_day = per_s * DAY_S
    day = (f"{per_day / 1e9:.3g}B" if per_day >= 1e9 else f"{per_day / 1e6:.3g}M"
           if per_day >= 1e6 else f"{per_day / 1e3:.3g}k" if per_day >= 1e3 else f"{per_day:.3g}")
    return f"{per_s:.3g}/s ({day} a day)"
