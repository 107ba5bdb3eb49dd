"""Field types of a scenario: durations, rates, counts, metric values, prices and distributions as
they are written in YAML, with their bounds and JSON-schema forms; the base model and the error
every problem becomes.
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Annotated, Any

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, PlainSerializer,
                      ValidationInfo, WithJsonSchema)

from sim.distributions import Distribution, percentile_probability
from sim.inputs.logs import InputError
from sim.units import (COUNT_SUFFIX, DURATION_UNITS_S, RATE_UNITS_S, format_duration, format_rate,
                       parse_count, parse_duration, parse_rate)


def changed_from_default(model, keys) -> list[str]:
    """The ``keys`` of a validated section set to something other than their defaults (a
    resolved scenario lists every key at its default, which says nothing)."""
    fields = type(model).model_fields
    return [k for k in keys if k in model.model_fields_set
            and getattr(model, k) != fields[k].default]


class ScenarioError(Exception):
    """A scenario that cannot be used; ``problems`` holds one plain-language line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def _did_you_mean(word: str, choices: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` to a mistyped ``word``."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --------------------------------------------------------------------------------------------
# Field types: durations, rates, counts and distributions as they are written in YAML
# --------------------------------------------------------------------------------------------

# JSON-schema forms of these types (``predsim schema``): a number, or text in the same syntax the
# parsers in sim.units accept. The loader stays the authority; the schema is for editors and tools.
_NUMBER_RE = r"(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def _alternatives(units) -> str:
    return "|".join(sorted((u for u in units if u), key=lambda u: (-len(u), u)))


def _text_schema(sign: str, units: str) -> dict:
    """Text: an optional sign, a number, an optional unit or suffix."""
    return {"type": "string", "pattern": f"^\\s*{sign}{_NUMBER_RE}\\s*(?:{units})?\\s*$"}


_DURATION_UNITS_RE = _alternatives(DURATION_UNITS_S)


def _duration_json_schema(bound: str | None) -> dict:
    """A duration: seconds as a number, or text such as 250ms, 30s, 15m, 6h, 7d."""
    number: dict = {"type": "number"}
    if bound:
        number[bound] = 0
    sign = "[-+]?" if bound is None else "\\+?"
    return {"anyOf": [number, _text_schema(sign, _DURATION_UNITS_RE)],
            "examples": ["250ms", "30s", "15m", "6h", "7d"]}


_RATE_JSON_SCHEMA = {
    "anyOf": [{"type": "number", "exclusiveMinimum": 0},
              {"type": "string",
               "pattern": (f"^\\s*\\+?{_NUMBER_RE}\\s*(?:{_alternatives(COUNT_SUFFIX)})?\\s*"
                           f"(?:/\\s*(?:{_alternatives(RATE_UNITS_S)}))?\\s*$")}],
    "examples": ["50/s", "3000/min", "4.3M/day"],
}
_COUNT_JSON_SCHEMA = {
    "anyOf": [{"type": "number"}, _text_schema("[-+]?", _alternatives(COUNT_SUFFIX))],
    "examples": [200000, "200k", "31M"],
}


def _dist_json_schema() -> dict:
    """A distribution of durations, in every form ``_distribution`` accepts."""
    nonneg, positive = _duration_json_schema("minimum"), _duration_json_schema("exclusiveMinimum")

    def one(key: str, value: dict, description: str) -> dict:
        return {"type": "object", "properties": {key: {**value, "description": description}},
                "required": [key], "additionalProperties": False}

    def params(**fields: tuple[dict, str]) -> dict:
        return {"type": "object", "required": list(fields), "additionalProperties": False,
                "properties": {k: {**schema, "description": text}
                               for k, (schema, text) in fields.items()}}

    return {"anyOf": [
        *nonneg["anyOf"],
        one("constant", nonneg, "Always this duration."),
        one("exponential", params(mean=(positive, "Mean duration.")), "Exponential."),
        one("lognormal", params(median=(positive, "Median (50th percentile)."),
                                p99=(positive, "99th percentile, at least the median.")),
            "Lognormal, given by two percentiles."),
        one("gamma", params(mean=(positive, "Mean duration."),
                            cv=({"type": "number", "exclusiveMinimum": 0},
                                "Coefficient of variation: standard deviation / mean.")),
            "Gamma, given by mean and coefficient of variation."),
        one("percentiles", {"type": "object", "minProperties": 2,
                            "propertyNames": {"pattern": _PERCENTILE_RE},
                            "additionalProperties": positive},
            "Through measured percentiles, e.g. {p50: 12ms, p99: 80ms}: a lognormal through "
            "two; through more, log value linear in the normal quantile between them."),
        one("empirical", {"type": "string"}, "CSV file of measured samples: one column whose "
            "name carries its unit (service_time_s, latency_ms); relative to the scenario file."),
    ], "examples": [0, "15ms", {"lognormal": {"median": "15ms", "p99": "60ms"}},
                    {"percentiles": {"p50": "12ms", "p99": "80ms"}}]}


# p, then a percentage strictly between 0 and 100: p50, p95, p99, p99.9
_PERCENTILE_RE = r"^p(?:[1-9]\d?(?:\.\d+)?|0\.\d*[1-9]\d*|[1-9]\d?\.?)$"


# Bounds on the numbers a scenario may hold, so that nothing the simulator derives from them
# (sums over billions of requests, products with prices, job times = entities / throughput)
# can overflow to infinity or become NaN. Each is far beyond any real workload.
# Durations: at most 1000 years (longer is no schedule, delay or latency a team models), and a
# nonzero duration at least 1 ns, 0.001us (shorter is below any clock; its reciprocal, a rate,
# would overflow).
MAX_DURATION_S = 1000 * 365.25 * 86400.0
MIN_DURATION_S = 1e-9
# Rates: at least one per 1000 years (slower never happens in a run); counts at most 2**53,
# the largest whole number a float holds exactly.
MIN_RATE_PER_S = 1.0 / MAX_DURATION_S
MAX_COUNT = float(2 ** 53)
# The metric (quality.fresh and every level, curve value and drop) and prices in US$ (unit
# prices, value per outcome): at most 1e12 in size, so that value per day = metric x requests x
# value per outcome and cost per day = price x hours x replicas stay finite.
MAX_METRIC = 1e12
MAX_PRICE = 1e12


def _check_seconds(seconds: float, raw: Any = None) -> float:
    """A finite duration within [-MAX_DURATION_S, MAX_DURATION_S], 0 or at least 1 ns."""
    got = raw if raw is not None else format_duration(seconds)
    if abs(seconds) > MAX_DURATION_S:
        raise ValueError(f"expected a duration of at most 365250d (1000 years); longer is beyond "
                         f"any schedule or latency, and sums of it would overflow (got {got!r})")
    if seconds != 0 and abs(seconds) < MIN_DURATION_S:
        raise ValueError(f"expected 0 or a duration of at least 0.001us (1 nanosecond) "
                         f"(got {got!r})")
    return seconds


def _duration(value: Any) -> float:
    return _check_seconds(parse_duration(value), value)


def _parse_duration(value: Any) -> float:
    """A duration in a distribution, within the same bounds as every other duration."""
    return _check_seconds(parse_duration(value), value)


def _rate(value: Any) -> float:
    per_s = parse_rate(value)
    if 0 < per_s < MIN_RATE_PER_S:
        raise ValueError(f"expected a rate of at least 1 per 1000 years; slower never happens "
                         f"in a simulation (got {value!r})")
    return per_s


def _count(value: Any) -> float:
    count = parse_count(value)
    if not math.isfinite(count) or abs(count) > MAX_COUNT:
        raise ValueError(f"expected a count of at most 2**53 (9e15), the largest whole number "
                         f"held exactly (got {value!r})")
    return count


Duration = Annotated[float, BeforeValidator(_duration),
                     PlainSerializer(format_duration, return_type=str),
                     WithJsonSchema(_duration_json_schema(None))]


def _must_be_positive(seconds: float) -> float:
    if not seconds > 0:
        raise ValueError(f"must be > 0 (got {format_duration(seconds)})")
    return seconds


def _must_be_non_negative(seconds: float) -> float:
    if seconds < 0:
        raise ValueError(f"must be >= 0 (got {format_duration(seconds)})")
    return seconds


def _rate_positive(per_s: float) -> float:
    if not per_s > 0:
        raise ValueError(f"must be > 0 (got {format_rate(per_s)})")
    return per_s


def _metric_bound(x: float) -> float:
    if abs(x) > MAX_METRIC:
        raise ValueError(f"expected at most 1e12 in size: the metric is summed over every "
                         f"request and multiplied by the value per outcome, which must stay "
                         f"finite (got {x:g})")
    return x


def _price_bound(x: float) -> float:
    if abs(x) > MAX_PRICE:
        raise ValueError(f"expected at most 1e12 US$: prices are multiplied by hours, replicas "
                         f"and outcomes per day, which must stay finite (got {x:g})")
    return x


# A value of the team's metric (or a change of it), and a price in US$: finite and bounded.
MetricValue = Annotated[float, AfterValidator(_metric_bound)]
Price = Annotated[float, AfterValidator(_price_bound)]
def _multiplier_bound(x: float) -> float:
    if x > MAX_MULTIPLIER:
        raise ValueError(f"expected at most 1e6: a rate a million times another is no traffic "
                         f"pattern, and larger multipliers overflow the rate (got {x:g})")
    return x


# Rate multipliers and ratios (bursts, MMPP states, profiles, peak to trough, weekends).
MAX_MULTIPLIER = 1e6
Multiplier = Annotated[float, AfterValidator(_multiplier_bound)]
# Replicas, nodes and batch sizes: a million is beyond any one serving fleet or job, and keeps
# every product of them with prices and times finite.
MAX_UNITS = 1_000_000

PositiveDuration = Annotated[Duration, AfterValidator(_must_be_positive),
                             WithJsonSchema(_duration_json_schema("exclusiveMinimum"))]
NonNegativeDuration = Annotated[Duration, AfterValidator(_must_be_non_negative),
                                WithJsonSchema(_duration_json_schema("minimum"))]
Rate = Annotated[float, BeforeValidator(_rate), AfterValidator(_rate_positive),
                 PlainSerializer(format_rate, return_type=str), WithJsonSchema(_RATE_JSON_SCHEMA)]
Count = Annotated[float, BeforeValidator(_count),
                  PlainSerializer(lambda x: int(x) if float(x).is_integer() else x),
                  WithJsonSchema(_COUNT_JSON_SCHEMA)]

_DIST_HELP = ("expected a distribution: 0, a duration, {constant: X}, {exponential: {mean: X}}, "
              "{lognormal: {median: X, p99: Y}}, {gamma: {mean: X, cv: Y}}, "
              "{percentiles: {p50: X, p99: Y}} or {empirical: FILE}")


def _distribution(value: Any, info: ValidationInfo) -> Distribution:
    if isinstance(value, Distribution):
        return value
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        seconds = _parse_duration(value)
        _non_negative(seconds, value)
        return Distribution.constant(seconds)
    if not isinstance(value, dict) or len(value) != 1:
        raise ValueError(f"{_DIST_HELP} (got {value!r})")
    (kind, params), = value.items()
    if kind == "constant":
        seconds = _parse_duration(params)
        _non_negative(seconds, params)
        return Distribution.constant(seconds)
    if kind == "empirical":
        base = Path((info.context or {}).get("base_dir", "."))
        return _read_empirical(params, base)
    if kind == "percentiles":
        return _percentiles(params)
    expected = {"exponential": {"mean"}, "lognormal": {"median", "p99"}, "gamma": {"mean", "cv"}}
    if kind not in expected:
        hint = _did_you_mean(str(kind), list(expected) + ["constant", "percentiles", "empirical"])
        raise ValueError(f"unknown distribution {kind!r}{hint}; {_DIST_HELP}")
    if not isinstance(params, dict) or set(params) != expected[kind]:
        keys = ", ".join(sorted(expected[kind]))
        raise ValueError(f"{kind} needs exactly the keys {keys} (got {params!r})")
    if kind == "exponential":
        mean = _parse_duration(params["mean"])
        _positive(mean, "mean", params["mean"])
        return Distribution.exponential(mean)
    if kind == "lognormal":
        median, p99 = _parse_duration(params["median"]), _parse_duration(params["p99"])
        _positive(median, "median", params["median"])
        if p99 < median:
            raise ValueError(f"lognormal p99 must be at least the median "
                             f"(got median {params['median']}, p99 {params['p99']})")
        if p99 == median:
            return Distribution.constant(median)
        return Distribution.lognormal(median, p99)
    mean = _parse_duration(params["mean"])
    _positive(mean, "mean", params["mean"])
    cv = params["cv"]
    if isinstance(cv, bool) or not isinstance(cv, (int, float)) or not 0 < cv <= 100:
        # above 100 the gamma's shape (1/cv^2) is so small that every draw is 0 and its scale
        # overflows; no measured latency varies that much
        raise ValueError(f"gamma cv must be a number > 0 and at most 100 (got {cv!r})")
    return Distribution.gamma(mean, float(cv))


def _percentiles(params: Any) -> Distribution:
    """{percentiles: {p50: 12ms, p99: 80ms, ...}}: at least two, values not decreasing."""
    if not isinstance(params, dict) or len(params) < 2:
        raise ValueError(f"percentiles needs at least two, e.g. {{p50: 12ms, p99: 80ms}} "
                         f"(got {params!r})")
    points = {}
    for key, raw in params.items():
        percentile_probability(key)  # raises ValueError naming the key
        seconds = _parse_duration(raw)
        _positive(seconds, str(key), raw)
        points[str(key)] = seconds
    dist = Distribution.percentiles(points)
    ordered = list(dist.params.items())
    for (k0, v0), (k1, v1) in zip(ordered, ordered[1:]):
        if percentile_probability(k0) == percentile_probability(k1):
            raise ValueError(f"percentiles {k0} and {k1} are the same percentile")
        if v1 < v0:
            raise ValueError(f"percentiles must not decrease: {k1} ({format_duration(v1)}) is "
                             f"below {k0} ({format_duration(v0)})")
    if ordered[0][1] == ordered[-1][1]:
        return Distribution.constant(ordered[0][1])
    return dist


def _read_empirical(path_value: Any, base: Path) -> Distribution:
    if not isinstance(path_value, str):
        raise ValueError(f"empirical needs a CSV file path (got {path_value!r})")
    path = Path(path_value)
    if not path.is_absolute():
        path = base / path
    try:
        from sim.inputs.latency_fit import read_samples  # scipy.stats: only when a file is read
        samples_s, _ = read_samples(path)
    except InputError as exc:
        raise ValueError("; ".join(exc.problems)) from None
    # The resolved scenario names the file absolutely, so it loads from anywhere.
    return Distribution.empirical(samples_s, source=str(path.resolve()))


def _non_negative(seconds: float, raw: Any) -> None:
    if seconds < 0:
        raise ValueError(f"must be >= 0 (got {raw!r})")


def _positive(seconds: float, name: str, raw: Any) -> None:
    if not seconds > 0:
        raise ValueError(f"{name} must be > 0 (got {raw!r})")


Dist = Annotated[Distribution, BeforeValidator(_distribution),
                 PlainSerializer(lambda d: d.to_yaml(), return_type=Any),
                 WithJsonSchema(_dist_json_schema())]


class Model(BaseModel):
    """Base for every scenario section: unknown keys are errors, instances are immutable."""

    # allow_inf_nan=False: every number must be finite (nan, inf, .inf are refused with the key)
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True,
                              allow_inf_nan=False)
