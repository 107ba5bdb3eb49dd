"""The points of a sweep or a search: values parsed from the command line (:func:`parse_grid`,
:func:`parse_value`), the ranges a search or random design moves within (:class:`Knob`), one
configuration as dotted-key overrides with its canonical text and seed (:class:`Point`), and the
designs that produce them (:func:`plan_points`: a grid, a Latin hypercube or plain random
draws, :func:`random_unit`). Nothing here simulates.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import yaml

from sim.units import format_duration, format_rate, parse_count, parse_duration, parse_rate


class SweepError(ValueError):
    """A sweep that cannot run as asked; the message names the option and what was expected."""


def split_values(text: str) -> list[str]:
    """``'1,2,[3,4]'`` -> ``['1', '2', '[3,4]']``: commas inside brackets or braces do not split."""
    parts, depth, current = [], 0, []
    for char in text:
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth = max(0, depth - 1)
        if char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return parts


def parse_value(text: str) -> Any:
    """A value as YAML: ``3`` -> 3, ``0.5`` -> 0.5, ``6h`` -> ``'6h'`` (left to the scenario
    parser), ``{constant: 5ms}`` -> a mapping."""
    try:
        value = yaml.safe_load(text)
        canonical(value)  # YAML dates and the like stay text
    except (yaml.YAMLError, TypeError, ValueError):
        return text
    return value


def _split_option(text: str, option: str, example: str) -> tuple[str, str]:
    key, sep, rest = text.partition("=")
    key = key.strip()
    if not sep or not key or not rest.strip() or any(c.isspace() for c in key):
        raise SweepError(f"{option} {text!r}: expected {example}")
    return key, rest.strip()


def parse_grid(options: Iterable[str], option: str = "--grid") -> dict[str, list]:
    """``['a.b=1,2,3', 'c=6h,12h']`` -> ``{'a.b': [1, 2, 3], 'c': ['6h', '12h']}``."""
    grid: dict[str, list] = {}
    for text in options:
        key, rest = _split_option(text, option, "KEY=V1,V2,... such as "
                                  "architectures.online.serving.replicas=2,4,8")
        if key in grid:
            raise SweepError(f"{option} {text!r}: {key} is given twice")
        texts = split_values(rest)
        if any(t == "" for t in texts):
            raise SweepError(f"{option} {text!r}: an empty value in the list")
        values = [parse_value(t) for t in texts]
        if len({canonical(v) for v in values}) != len(values):
            raise SweepError(f"{option} {text!r}: a value is listed twice")
        grid[key] = values
    return grid


def magnitude(value: Any) -> float | None:
    """A number to order and plot a value by: numbers as they are, text as a duration (s), a
    rate (per s) or a count; None for anything else."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        for parse in (parse_duration, parse_rate, parse_count):
            try:
                return parse(value)
            except ValueError:
                continue
    return None


@dataclass(frozen=True)
class Knob:
    """A scenario key varied over ``[lo, hi]``.

    ``kind`` is ``int`` (whole numbers, e.g. replicas), ``float``, ``duration`` (seconds),
    ``rate`` (per second) or ``count`` (whole numbers). Values handed to the scenario are plain
    numbers (durations in seconds and rates per second, as a bare number means there), rounded
    to 6 significant digits so that the canonical point text stays readable.
    """

    key: str
    lo: float
    hi: float
    kind: str = "float"

    @property
    def integer(self) -> bool:
        return self.kind in ("int", "count")

    @property
    def size(self) -> int | None:
        """Values in the range for whole-number knobs, else None."""
        return int(self.hi - self.lo) + 1 if self.integer else None

    def value(self, x: float) -> int | float:
        """The knob's value nearest to ``x``, inside the range."""
        x = min(max(float(x), self.lo), self.hi)
        if self.integer:
            return int(round(x))
        return _round6(x)

    def at(self, u: float) -> int | float:
        """The value at a share ``u`` in [0, 1) of the range (integers: equal-width cells)."""
        if self.integer:
            return int(min(self.hi, self.lo + math.floor(u * (self.hi - self.lo + 1))))
        return self.value(self.lo + u * (self.hi - self.lo))

    def show(self, value: Any) -> str:
        """A value as a person reads it: 3, 0.25, 6h, 120/s."""
        if self.kind == "duration":
            return format_duration(float(value))
        if self.kind == "rate":
            return format_rate(float(value))
        return f"{value:g}" if isinstance(value, float) else str(value)

    @classmethod
    def from_bounds(cls, key: str, lo: Any, hi: Any, option: str = "--range") -> "Knob":
        """A knob from two bounds as written: numbers, or text with a unit (1h, 50/s, 10k)."""
        where = f"{option} {key}={lo}:{hi}"
        numbers = [isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, hi)]
        if all(numbers):
            kind = "int" if all(isinstance(v, int) for v in (lo, hi)) else "float"
            low, high = float(lo), float(hi)
        elif all(isinstance(v, str) for v in (lo, hi)):
            low = high = None
            kind = ""
            for kind, parse in (("duration", parse_duration), ("rate", parse_rate),
                                ("count", parse_count)):
                if kind == "rate" and not ("/" in lo and "/" in hi):
                    continue
                try:
                    low, high = parse(lo), parse(hi)
                    break
                except ValueError:
                    continue
            if low is None:
                raise SweepError(f"{where}: expected numbers, durations (1h:6h), rates "
                                 f"(10/s:50/s) or counts (10k:1M) as LO:HI")
            if kind == "count" and not (low.is_integer() and high.is_integer()):
                kind = "float"
        else:
            raise SweepError(f"{where}: LO and HI must both be numbers or both carry a unit")
        if not (math.isfinite(low) and math.isfinite(high)) or not low < high:
            raise SweepError(f"{where}: LO must be below HI")
        return cls(key, low, high, kind)

    @classmethod
    def parse(cls, text: str, option: str = "--range") -> "Knob":
        """``'architectures.online.serving.replicas=1:16'`` -> a Knob."""
        key, rest = _split_option(text, option, "KEY=LO:HI such as "
                                  "architectures.online.serving.replicas=1:16")
        lo, sep, hi = rest.partition(":")
        if not sep or not lo.strip() or not hi.strip():
            raise SweepError(f"{option} {text!r}: expected KEY=LO:HI such as "
                             f"architectures.online.serving.replicas=1:16")
        return cls.from_bounds(key, parse_value(lo.strip()), parse_value(hi.strip()), option)


def _round6(x: float) -> float:
    return float(f"{x:.6g}")


def canonical(value: Any) -> str:
    """The canonical text of a value: JSON, keys sorted, floats by repr."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def point_id(key: str) -> str:
    """The file-name-safe id of a point's canonical text."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class Point:
    """One configuration: overrides by dotted key, kept sorted by key."""

    __slots__ = ("values", "key", "id")

    def __init__(self, values: Mapping[str, Any]):
        # numpy scalars (from arrays of values) become the plain numbers they stand for
        self.values = {k: values[k].item() if isinstance(values[k], np.generic) else values[k]
                       for k in sorted(values)}
        self.key = "\n".join(f"{k}={canonical(v)}" for k, v in self.values.items())
        self.id = point_id(self.key)

    def seed(self, base_seed: int) -> int:
        """The point's seed: from the scenario seed and the canonical text, never from order.
        A point that sets ``seed`` itself uses that."""
        if "seed" in self.values:
            return int(self.values["seed"])
        digest = hashlib.sha256(f"predsim-sweep\n{base_seed}\n{self.key}".encode()).digest()
        return int.from_bytes(digest[:8], "big") >> 1  # 63 bits: fits an int64 column

    def __eq__(self, other):
        return isinstance(other, Point) and other.key == self.key

    def __hash__(self):
        return hash(self.key)

    def __repr__(self):
        return f"Point({self.values!r})"


def random_unit(n: int, d: int, seed: int, method: str = "lhs") -> np.ndarray:
    """``n`` points in [0, 1)^d: a Latin hypercube (each dimension's n equal strata hit once) or
    plain uniform, from a generator seeded by ``seed`` alone."""
    rng = np.random.default_rng(np.random.SeedSequence(
        seed, spawn_key=(zlib.crc32(b"sweep-random"),)))
    if method == "uniform":
        return rng.random((n, d))
    if method != "lhs":
        raise SweepError(f"--method: expected lhs or uniform (got {method!r})")
    u = np.empty((n, d))
    for j in range(d):
        u[:, j] = (rng.permutation(n) + rng.random(n)) / n
    return u


def plan_points(grid: Mapping[str, Sequence] | None = None, *, random: int = 0,
                ranges: Iterable[Knob] = (), method: str = "lhs", seed: int = 0) -> list[Point]:
    """The points of a sweep, in a canonical order: every combination of the grid's values,
    times ``random`` draws in the ranges (each grid combination with each draw). Duplicates
    (whole-number ranges can draw the same value twice) are dropped."""
    grid = dict(grid or {})
    knobs = list(ranges)
    if random < 0:
        raise SweepError(f"--random: expected a number of points >= 0 (got {random})")
    if random and not knobs:
        raise SweepError("--random: give the ranges to draw from with --range KEY=LO:HI")
    if knobs and not random:
        raise SweepError("--range: give the number of random points with --random N")
    both = sorted(set(grid) & {k.key for k in knobs})
    if both:
        raise SweepError(f"--range {both[0]}: also given with --grid; vary a key one way")
    if not grid and not knobs:
        raise SweepError("nothing to sweep: give --grid KEY=V1,V2,... or --random N with "
                         "--range KEY=LO:HI")
    for key, values in grid.items():
        if not len(values):
            raise SweepError(f"--grid {key}: no values")
    grid_points = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
    random_points = [{}]
    if knobs:
        u = random_unit(random, len(knobs), seed, method)
        random_points = [{k.key: k.at(u[i, j]) for j, k in enumerate(knobs)}
                         for i in range(random)]
    points, seen = [], set()
    for g in grid_points:
        for r in random_points:
            point = Point({**g, **r})
            if point.key not in seen:
                seen.add(point.key)
                points.append(point)
    return points
