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


# --------------------------------------------------------------------------------------------
# Numbers for people: counts, rates, money, shares and durations in words. Each has one
# use in mind (a sentence, a comment that reads back, an estimate); the names say which.
# --------------------------------------------------------------------------------------------

def count_short(x: float) -> str:
    """A count in a sentence: 50000 -> ``'50,000'``, 1.73e6 -> ``'1.73M'``."""
    if abs(x) >= 1e9:
        return f"{x / 1e9:.3g}B"
    if abs(x) >= 1e6:
        return f"{x / 1e6:.3g}M"
    return f"{x:,.0f}" if abs(x) >= 10 or float(x).is_integer() else f"{x:.2g}"


def count_words(x: float) -> str:
    """A large count in words: 3.2e6 -> ``'3.2 million'``, 50000 -> ``'50,000'``."""
    if x >= 1e12:
        return f"{x / 1e12:.3g} trillion"
    if x >= 1e9:
        return f"{x / 1e9:.3g} billion"
    if x >= 1e6:
        return f"{x / 1e6:.3g} million"
    return f"{x:,.0f}"


def count_exact(x: float) -> str:
    """A count in scenario syntax that reads back exactly: 200000 -> ``'200k'``, 2e6 ->
    ``'2M'``, 1234 -> ``'1234'``."""
    for suffix, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        text = f"{x / size:.4g}{suffix}"
        if abs(x) >= size and parse_count(text) == x:
            return text
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def rate_short(per_s: float) -> str:
    """A rate in a sentence, in the unit that reads best: ``'1,000/s'``, ``'3.2/min'``."""
    if per_s >= 1000:
        return f"{per_s:,.0f}/s"
    if per_s >= 1:
        return f"{per_s:.3g}/s"
    if per_s * 60 >= 1:
        return f"{per_s * 60:.3g}/min"
    return f"{per_s * 3600:.3g}/h"


def rate_rounded(per_s: float) -> str:
    """A rate to 3 significant digits in scenario syntax: 23.15/s -> ``'23.1/s'``."""
    return format_rate(float(f"{per_s:.3g}"))


def rate_estimate(per_s: float | None) -> str:
    """An estimated rate: ``'?'`` when unknown, millions per second as ``'3.2M/s'``."""
    if per_s is None:
        return "?"
    if per_s >= 1e6:
        return f"{per_s / 1e6:.3g}M/s"
    return round_rate(per_s, 3)


def usd_short(x: float) -> str:
    """Money in a sentence: ``'under $0.01'``, ``'$12.50'``, ``'$1,250'``."""
    if 0 < abs(x) < 0.005:
        return "under $0.01"
    return f"${x:,.2f}" if abs(x) < 100 else f"${x:,.0f}"


def share_text(x: float) -> str:
    """A share in a sentence: ``'100%'``, ``'12.5%'``, small ones to two digits."""
    if x >= 0.995 or x == 0:
        return f"{x:.0%}"
    return f"{x:.1%}" if x >= 0.001 else f"{x:.2g}%".replace("%", "") + "%"


def share_rounded(x: float) -> str:
    """A share in a table: ``'12%'``, below 10% to one decimal; ``'-'`` when missing."""
    if x != x:
        return "-"
    return f"{x:.0%}" if x >= 0.1 else f"{x:.1%}"


def duration_words(seconds: float) -> str:
    """A long duration in words: ``'3.5 hours'``, ``'12 days'``, ``'40 seconds'``."""
    for unit, size in (("years", 365.25 * 86400.0), ("days", 86400.0), ("hours", 3600.0),
                       ("minutes", 60.0)):
        if seconds >= 1.5 * size:
            return f"{seconds / size:.2g} {unit}" if seconds / size < 10 else \
                f"{seconds / size:,.0f} {unit}"
    return f"{seconds:.0f} seconds"


_ROUND_DURATIONS_S = (1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30,
                      60, 120, 300, 600, 900, 1800, 3600, 7200, 3 * 3600, 6 * 3600, 12 * 3600,
                      86400, 2 * 86400, 7 * 86400, 14 * 86400, 30 * 86400, 91 * 86400,
                      365 * 86400)


def duration_up(seconds: float) -> str:
    """A round duration at least ``seconds``, in scenario syntax: ``'10s'``, ``'15m'``,
    ``'1d'``."""
    for nice in _ROUND_DURATIONS_S:
        if nice >= seconds * (1 - 1e-9):
            return format_duration(nice)
    return format_duration(math.ceil(seconds / 86400.0) * 86400.0)
