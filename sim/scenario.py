"""The scenario: one YAML file, validated into typed objects.

The pydantic models below are the declaration of the format (see DESIGN.md); :func:`load_scenario`
reads a file, applies ``--set`` overrides, validates, and turns every problem into a
:class:`ScenarioError` whose lines name the file, the key path, what was expected and what was
found.
"""

from __future__ import annotations

import copy
import difflib
import math
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import numpy as np
import yaml
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer,
                      PrivateAttr, Strict, ValidationError, ValidationInfo, WithJsonSchema,
                      model_serializer, model_validator)

from sim.distributions import ZERO, Distribution, percentile_probability
from sim.fit import InputError, RequestLog, new_entity_share_range, read_log, read_samples
from sim.units import (COUNT_SUFFIX, DAY_S, DURATION_UNITS_S, RATE_UNITS_S, format_duration,
                       format_rate, human_duration, parse_count, parse_duration, parse_rate)


class ScenarioError(Exception):
    """A scenario that cannot be used; ``problems`` holds one plain-language line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


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


# --------------------------------------------------------------------------------------------
# Workload
# --------------------------------------------------------------------------------------------

class Popularity(Model):
    """How requests spread over entities: Zipf over popularity ranks, or uniform."""

    kind: Literal["zipf", "uniform"] = Field("uniform", description="zipf or uniform.")
    exponent: float = Field(0.0, ge=0, description="Zipf exponent s: P(rank k) ~ k^-s.")

    @model_validator(mode="before")
    @classmethod
    def _from_yaml(cls, value: Any) -> Any:
        if value == "uniform" or value == {"uniform": None} or value == {"uniform": True}:
            return {"kind": "uniform"}
        if isinstance(value, dict) and set(value) == {"zipf"}:
            return {"kind": "zipf", "exponent": value["zipf"]}
        if isinstance(value, (dict, Popularity)) and (not value or "kind" in value
                                                      or isinstance(value, Popularity)):
            return value
        raise ValueError(f"expected 'uniform' or {{zipf: EXPONENT}} (got {value!r})")


    @model_serializer
    def _to_yaml(self) -> Any:
        return "uniform" if self.kind == "uniform" else {"zipf": self.exponent}

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema, handler) -> dict:
        """The YAML form: 'uniform' or {zipf: EXPONENT}."""
        return {"title": "Popularity", "description": cls.__doc__,
                "anyOf": [{"const": "uniform"},
                          {"type": "object", "additionalProperties": False, "required": ["zipf"],
                           "properties": {"zipf": {"type": "number", "minimum": 0,
                                                   "description": "Zipf exponent s: P(rank k) "
                                                                  "~ k^-s."}}}]}


class Burst(Model):
    """A flash crowd: the arrival rate multiplied by ``multiplier`` for ``duration`` from ``at``."""

    at: NonNegativeDuration = Field(description="When it starts, from the start of the "
                                    "simulation (warm-up included).")
    duration: PositiveDuration = Field(description="How long it lasts.")
    multiplier: Multiplier = Field(gt=0, description="The rate during the burst / the rate without "
                              "it (overlapping bursts multiply).")


class Mmpp(Model):
    """Markov-modulated Poisson arrivals: a hidden Markov chain multiplies the rate by its
    state's multiplier. It stays in state i for an exponential time with mean
    ``mean_sojourn[i]``, then jumps to one of the other states, each equally likely."""

    multipliers: list[Annotated[float, Field(ge=0), AfterValidator(_multiplier_bound)]] = Field(
        description="Rate multiplier of each state (two or more), relative: they are scaled so "
        "that their long-run average is 1 and rate stays the mean rate.")
    mean_sojourn: list[PositiveDuration] = Field(description="Mean time spent in each state "
                                                 "per visit.")

    @model_validator(mode="after")
    def _check(self) -> "Mmpp":
        if len(self.multipliers) < 2 or len(self.multipliers) != len(self.mean_sojourn):
            raise ValueError(f"mmpp needs two or more states, with as many multipliers as "
                             f"mean_sojourn (got {len(self.multipliers)} and "
                             f"{len(self.mean_sojourn)})")
        if not any(self.multipliers):
            raise ValueError("mmpp multipliers must not all be 0")
        return self

    @property
    def stationary(self) -> np.ndarray:
        """Long-run share of time in each state: proportional to the mean sojourn, since every
        state is entered equally often (the jump chain is symmetric)."""
        sojourn = np.asarray(self.mean_sojourn, dtype=float)
        return sojourn / sojourn.sum()

    @property
    def normalised_multipliers(self) -> np.ndarray:
        """The multipliers scaled to a long-run average of 1."""
        m = np.asarray(self.multipliers, dtype=float)
        return m / float(self.stationary @ m)


_StrictBool = Annotated[bool, Strict()]


class Trace(Model):
    """A request log replayed as the arrivals: its times, shifted so that its first request is
    at time 0 and divided by the speed-up, and its entities."""

    file: str = Field(description="Request log, CSV or Parquet (.parquet): one row per request; "
                      "relative to the scenario file, or absolute.")
    timestamp_column: str = Field("timestamp", description="Column of request times: epoch "
                                  "seconds or ISO-8601.")
    entity_column: str = Field("entity_id", description="Column of entity (user, item) ids.")
    speedup: float = Field(1.0, gt=0, description="Replay this many times faster: 2 doubles the "
                           "traffic. Or give arrivals.rate, the mean rate to replay at.")
    loop: _StrictBool | PositiveDuration = Field(
        False, description="Repeat the log to fill the simulation: true repeats it every span + "
        "one mean gap between requests; a duration (such as 14d, in the log's own time) repeats "
        "it with that period.")

    _log: RequestLog | None = PrivateAttr(None)
    _path: str = PrivateAttr("")

    @model_validator(mode="before")
    @classmethod
    def _from_yaml(cls, value: Any) -> Any:
        return {"file": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _load(self, info: ValidationInfo) -> "Trace":
        path = Path(self.file)
        if not path.is_absolute():
            path = Path((info.context or {}).get("base_dir", ".")) / path
        try:
            log = read_log(path, self.timestamp_column, self.entity_column)
        except InputError as exc:
            raise ValueError("; ".join(exc.problems)) from None
        if not isinstance(self.loop, bool) and self.loop <= log.span_s:
            raise ValueError(f"loop: the period must be longer than the log's span, "
                             f"{format_duration(log.span_s)} (got {format_duration(self.loop)})")
        self._log = log
        self._path = str(path.resolve())
        return self

    @property
    def log(self) -> RequestLog:
        """The log as read (times in the log's own seconds, before any speed-up)."""
        return self._log

    @property
    def period_s(self) -> float:
        """The repeating period in the log's own time (the span + a mean gap unless given)."""
        return self.log.period_s if isinstance(self.loop, bool) else float(self.loop)

    @property
    def mean_rate_per_s(self) -> float:
        """Requests per second of the log, before any speed-up, over :attr:`period_s`."""
        return self.log.n_requests / self.period_s

    @model_serializer(mode="wrap")
    def _to_yaml(self, handler) -> Any:
        # The file absolutely, so that the resolved scenario loads from anywhere; the speed-up
        # is in arrivals.rate, which the resolved scenario always gives.
        data = handler(self)
        data["file"] = self._path or self.file
        data.pop("speedup", None)
        return data

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema, handler) -> dict:
        """A file name, or the section."""
        section = handler(core_schema)
        section = handler.resolve_ref_schema(section)
        return {"title": "Trace", "description": cls.__doc__,
                "anyOf": [{"type": "string", "description": "The request log (columns "
                           "timestamp and entity_id)."}, section]}


_PATTERN_DEFAULTS = {"pattern": "constant", "peak_to_trough": 1.0, "peak_hour": 19.0,
                     "weekend_factor": 0.7}


class Arrivals(Model):
    """Request arrivals: a non-homogeneous Poisson process around a mean rate, or a replayed
    request log."""

    rate: Rate | None = Field(None, description="Mean request rate, e.g. 50/s or 4.3M/day. "
                              "With a trace: optional, the mean rate to replay the log at.")
    pattern: Literal["constant", "diurnal", "weekly"] = Field(
        "constant", description="constant; diurnal (a daily cycle); weekly (diurnal, quieter at "
        "weekends).")
    peak_to_trough: Multiplier = Field(1.0, ge=1.0, description="Daily peak rate / daily "
                                       "trough rate.")
    peak_hour: float = Field(19.0, ge=0, lt=24, description="Hour of day of the daily peak.")
    weekend_factor: Multiplier = Field(0.7, gt=0, description="Weekly pattern: weekend traffic "
                                  "relative to weekdays (day 0 of the simulation is a Monday).")
    profile: list[Annotated[float, Field(ge=0), AfterValidator(_multiplier_bound)]] | None = Field(
        None, description="Instead of pattern: 24 hour-of-day or 168 hour-of-week rate "
        "multipliers (Monday 00:00 first), scaled on load to a mean of 1 (predsim workload fit "
        "writes them).")
    bursts: list[Burst] | None = Field(None, description="Flash crowds: [{at, duration, "
                                       "multiplier}, ...].")
    mmpp: Mmpp | None = Field(None, description="Markov-modulated rate: {multipliers: [...], "
                              "mean_sojourn: [...]}.")
    trace: Trace | None = Field(None, description="Replay a request log instead: FILE, or "
                                "{file, timestamp_column, entity_column, speedup, loop}.")

    _replay_speedup: float = PrivateAttr(1.0)

    @model_validator(mode="after")
    def _check(self) -> "Arrivals":
        if self.trace is None:
            if self.rate is None:
                raise ValueError("rate is required (or trace: FILE to replay a request log)")
            if self.profile is not None:
                if self.pattern != "constant":
                    raise ValueError(f"give either profile or pattern: {self.pattern}, not both")
                if len(self.profile) not in (24, 168):
                    raise ValueError(f"profile needs 24 hour-of-day or 168 hour-of-week "
                                     f"multipliers (got {len(self.profile)})")
                if not sum(self.profile) > 0:
                    raise ValueError("profile multipliers must not all be 0")
            return self
        given = [k for k, default in _PATTERN_DEFAULTS.items() if getattr(self, k) != default]
        given += [k for k in ("profile", "bursts", "mmpp") if getattr(self, k)]
        if given:
            raise ValueError(f"{', '.join(given)}: not with trace (the log gives the arrival "
                             f"times)")
        if self.rate is None:
            self._replay_speedup = self.trace.speedup
            object.__setattr__(self, "rate", self.trace.mean_rate_per_s * self.trace.speedup)
        elif "speedup" in self.trace.model_fields_set:
            raise ValueError("give either rate or trace.speedup, not both (rate replays the log "
                             "at that mean rate)")
        else:
            self._replay_speedup = self.rate / self.trace.mean_rate_per_s
        return self

    @property
    def replay_speedup(self) -> float:
        """With a trace: how many times faster than real time the log is replayed."""
        return self._replay_speedup

    @model_serializer(mode="wrap")
    def _to_yaml(self, handler) -> Any:
        data = handler(self)
        if self.trace is not None:  # the pattern keys say nothing about a replayed log
            for key in _PATTERN_DEFAULTS:
                data.pop(key, None)
        return data


class NewEntities(Model):
    """Where entities created during the run enter the popularity ranking (slot 0 the most
    popular). Each takes a slot of a band of ranks, in random order, and keeps it: ``tail`` puts
    the band below every entity present at the start; ``random`` spreads the new entities over
    all ranks; a share places the band so that a day's or a week's new entities make that share
    of the requests."""

    enter: Literal["tail", "random"] = Field(
        "tail", description="tail: new entities are the least popular (they rank below every "
        "entity present at the start); random: any rank, the most popular included. Leave it "
        "out when giving a share.")
    first_day_share: float | None = Field(
        None, gt=0, lt=1, description="Instead of enter: the share of requests made by entities "
        "in their first day (predsim workload fit estimates it).")
    first_week_share: float | None = Field(
        None, gt=0, lt=1, description="Instead of enter: the share of requests made by entities "
        "in their first week (predsim workload fit estimates it).")

    @model_validator(mode="after")
    def _check(self) -> "NewEntities":
        given = [k for k in ("first_day_share", "first_week_share") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError("give first_day_share or first_week_share, not both")
        if given and "enter" in self.model_fields_set:
            raise ValueError(f"give enter or {given[0]}, not both (a share places new entities "
                             f"where they make that share of the requests)")
        return self

    @property
    def share(self) -> tuple[str, float, float] | None:
        """(key, share, days) of the share given, or None."""
        if self.first_week_share is not None:
            return "first_week_share", self.first_week_share, 7.0
        if self.first_day_share is not None:
            return "first_day_share", self.first_day_share, 1.0
        return None

    @model_serializer
    def _to_yaml(self) -> Any:
        share = self.share
        return {share[0]: share[1]} if share else {"enter": self.enter}


class Workload(Model):
    """Traffic and the population of entities (users, items) that requests are about."""

    entities: Count | None = Field(None, description="Entities at the start of the simulation. "
                                   "With a trace: optional, the whole population (at least the "
                                   "log's distinct ids; the others never make a request).")
    new_entities_per_day: Count = Field(0.0, description="New entities created per day.")
    new_entities: NewEntities = Field(NewEntities(), description="Where new entities enter the "
                                      "popularity ranking: {enter: tail} (the default), {enter: "
                                      "random}, or {first_week_share: X} or {first_day_share: "
                                      "X}.")
    popularity: Popularity = Field(Popularity(), description="How requests spread over "
                                   "entities: uniform or {zipf: EXPONENT}.")
    arrivals: Arrivals = Field(description="When requests arrive.")

    @model_validator(mode="after")
    def _check(self) -> "Workload":
        trace = self.arrivals.trace
        if trace is not None:
            return self._check_trace(trace)
        if self.entities is None:
            raise ValueError("entities is required (or arrivals.trace: FILE to replay a log)")
        if self.entities < 1 or self.entities != int(self.entities):
            raise ValueError(f"entities must be a whole number >= 1 (got {self.entities:g})")
        if self.new_entities_per_day < 0:
            raise ValueError(f"new_entities_per_day must be >= 0 "
                             f"(got {self.new_entities_per_day:g})")
        self._check_share()
        return self

    def _check_share(self) -> None:
        """A share of requests for new entities needs new entities, Zipf popularity (under
        uniform popularity every entity gets the same share), and must be within what a day's or
        a week's new entities can make at the most popular ranks."""
        share = self.new_entities.share
        if share is None:
            return
        key, value, days = share
        where = f"new_entities.{key}"
        if not self.new_entities_per_day > 0:
            raise ValueError(f"{where}: needs new_entities_per_day > 0 (got "
                             f"{self.new_entities_per_day:g})")
        if self.popularity.kind != "zipf" or self.popularity.exponent == 0:
            raise ValueError(f"{where}: needs popularity: {{zipf: EXPONENT}} (under uniform "
                             f"popularity every entity, new or not, gets the same share)")
        _, most = new_entity_share_range(self.entities, self.new_entities_per_day,
                                         self.popularity.exponent, days)
        if value > most:
            raise ValueError(f"{where}: expected at most {most:.3g}, what "
                             f"{self.new_entities_per_day * days:,.0f} new entities make at the "
                             f"most popular ranks among {self.entities:,.0f} entities with "
                             f"zipf {self.popularity.exponent:g} (got {value:g})")

    def _check_trace(self, trace: Trace) -> "Workload":
        given = [k for k, default in (("popularity", Popularity()), ("new_entities_per_day", 0),
                                      ("new_entities", NewEntities()))
                 if getattr(self, k) != default]
        if given:
            raise ValueError(f"{', '.join(given)}: not with arrivals.trace (the log says which "
                             f"entities make requests, and when each first appears)")
        in_log = trace.log.n_entities
        if self.entities is None:
            object.__setattr__(self, "entities", float(in_log))
        elif self.entities < in_log or self.entities != int(self.entities):
            raise ValueError(f"entities must be a whole number, at least the {in_log:,} distinct "
                             f"ids in the trace (got {self.entities:g})")
        return self


# --------------------------------------------------------------------------------------------
# Quality
# --------------------------------------------------------------------------------------------

class ExponentialCurve(Model):
    """Quality decays halfway to ``floor`` every ``half_life``."""

    half_life: PositiveDuration = Field(description="Age at which half the gap between fresh "
                                        "and floor is lost.")
    floor: float = Field(description="Metric at a very old age.")


class LinearCurve(Model):
    """Quality changes by ``per_day`` (negative) per day of age, never below ``floor``."""

    per_day: MetricValue = Field(le=0, description="Change of the metric per day of age (<= 0).")
    floor: float = Field(description="The metric never falls below this.")


class Curve(Model):
    """A staleness curve: metric as a function of age. Exactly one of the three forms."""

    exponential: ExponentialCurve | None = Field(None, description="{half_life, floor}.")
    linear: LinearCurve | None = Field(None, description="{per_day, floor}.")
    table: list[tuple[Duration, MetricValue]] | None = Field(
        None, description="[[age, metric], ...] interpolated linearly, flat beyond the ends.")

    @model_validator(mode="after")
    def _exactly_one(self) -> "Curve":
        given = [k for k in ("exponential", "linear", "table") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("expected exactly one of exponential, linear or table "
                             f"(got {', '.join(given) or 'none'})")
        if self.table is not None:
            ages = [a for a, _ in self.table]
            if len(ages) < 1 or any(b <= a for a, b in zip(ages, ages[1:])):
                raise ValueError("table ages must be increasing")
            if ages[0] < 0:
                raise ValueError("table ages must be >= 0")
        return self

    def limit(self, fresh: float) -> float:
        """The metric at a very old age: the floor (or fresh for a flat line), or the table's
        last value."""
        if self.exponential is not None:
            return self.exponential.floor
        if self.linear is not None:
            return self.linear.floor if self.linear.per_day < 0 else fresh
        return self.table[-1][1]


FEATURE_CLASSES = ("batch", "stream", "request")


class FeatureClass(Model):
    """What one class of features (batch or stream) is worth: how quality decays as they age,
    and what a prediction is worth without them."""

    staleness: Curve | None = Field(None, description="Metric as a function of this class's "
                                    "age, every other age zero; none: its age costs nothing.")
    cold_start: float | None = Field(None, ge=0, description="Metric of a prediction for an "
                                     "entity that has none of these features yet (created "
                                     "after the last refresh that could include it). Default: "
                                     "quality.fallback for batch features, `without` for "
                                     "stream features.")
    without: float | None = Field(None, ge=0, description="Metric of a prediction made by an "
                                  "architecture that has no features of this class at all "
                                  "(online has no stream features). Default: the staleness "
                                  "curve at a very old age (features that say nothing), or "
                                  "fresh without a curve.")


class RequestFeatureClass(Model):
    """Request-time features: computed in the request, so never stale; what they are worth is
    the quality lost by an architecture that cannot have them (batch, stored predictions)."""

    without: float | None = Field(None, ge=0, description="Metric of a prediction made without "
                                  "request-time features (batch and stored predictions). "
                                  "Default: fresh (they add nothing).")


class FeatureClasses(Model):
    """Quality per class of features: batch (materialised on a schedule), stream (windows with
    lag) and request (computed in the request). Each staleness curve gives the metric at that
    class's age with every other age zero; the losses of the classes add up."""

    batch: FeatureClass | None = Field(None, description="Features materialised on a schedule.")
    stream: FeatureClass | None = Field(None, description="Features from a stream processor.")
    request: RequestFeatureClass | None = Field(None, description="Features computed in the "
                                                "request.")


class Quality(Model):
    """The team's metric, fresh and stale, and the quality of the fallback.

    The loss against ``fresh`` of each feature class (its staleness, its cold start, or its
    absence), of model age and of drift add up; the result is clamped to [0, fresh].
    """

    metric: str = Field("quality", description="Name of the metric (ctr, accuracy, ...).")
    fresh: MetricValue = Field(gt=0, description="Metric with fresh features and a "
                               "just-trained model.")
    fallback: float = Field(0.0, ge=0, description="Metric of the fallback (no prediction).")
    feature_staleness: Curve | None = Field(None, description="Metric as a function of the "
                                            "batch features' age (model age zero): shorthand "
                                            "for features.batch.staleness.")
    features: FeatureClasses | None = Field(None, description="Quality per feature class: "
                                            "{batch, stream: {staleness, cold_start, without}, "
                                            "request: {without}}.")
    model_staleness: Curve | None = Field(None, description="Metric as a function of model age "
                                          "(feature age zero); none: no loss.")

    @model_validator(mode="after")
    def _check(self) -> "Quality":
        if self.fallback > self.fresh:
            raise ValueError(f"fallback ({self.fallback:g}) must not exceed fresh ({self.fresh:g})")
        if self.feature_staleness is not None and self.features is not None and \
                self.features.batch is not None and self.features.batch.staleness is not None:
            raise ValueError("give the batch features' curve once: feature_staleness is "
                             "shorthand for features.batch.staleness")
        curves = [("feature_staleness", self.feature_staleness),
                  ("model_staleness", self.model_staleness)]
        levels = []
        for name in ("batch", "stream", "request"):
            spec = getattr(self.features, name, None) if self.features else None
            if spec is None:
                continue
            if name != "request":
                curves.append((f"features.{name}.staleness", spec.staleness))
                levels.append((f"features.{name}.cold_start", spec.cold_start))
            levels.append((f"features.{name}.without", spec.without))
        for name, curve in curves:
            form = curve and (curve.exponential or curve.linear)
            if form is not None and not 0 <= form.floor <= self.fresh:
                raise ValueError(f"{name} floor must be between 0 and fresh ({self.fresh:g}) "
                                 f"(got {form.floor:g})")
        for name, level in levels:
            if level is not None and level > self.fresh:
                raise ValueError(f"{name} ({level:g}) must not exceed fresh ({self.fresh:g})")
        return self

    def curve(self, feature_class: str) -> Curve | None:
        """The staleness curve of ``batch`` or ``stream`` features (None: age costs nothing)."""
        spec = getattr(self.features, feature_class, None) if self.features else None
        if feature_class == "batch" and self.feature_staleness is not None:
            return self.feature_staleness
        return getattr(spec, "staleness", None)

    def without(self, feature_class: str) -> float:
        """The metric of a prediction made with no features of this class at all."""
        spec = getattr(self.features, feature_class, None) if self.features else None
        if spec is not None and spec.without is not None:
            return spec.without
        curve = self.curve(feature_class) if feature_class != "request" else None
        return self.fresh if curve is None else curve.limit(self.fresh)

    def cold_start(self, feature_class: str) -> float:
        """The metric of a prediction for an entity with none of this class's features yet."""
        spec = getattr(self.features, feature_class, None) if self.features else None
        if spec is not None and getattr(spec, "cold_start", None) is not None:
            return spec.cold_start
        return self.fallback if feature_class == "batch" else self.without(feature_class)

    def stale_classes(self) -> list[str]:
        """The feature classes whose age costs quality."""
        return [c for c in ("batch", "stream") if self.curve(c) is not None]


# --------------------------------------------------------------------------------------------
# Training, drift, costs, business, SLO
# --------------------------------------------------------------------------------------------

class Trigger(Model):
    """When ``policy: trigger``: a monitor of the deployed model's quality as seen on labelled
    predictions, which starts a training run when the windowed metric falls too low."""

    label_delay: Dist = Field(ZERO, description="From a prediction to its label arriving (ad "
                              "clicks: minutes; fraud: weeks). The monitor sees a prediction's "
                              "outcome only after it.")
    window: PositiveDuration = Field(description="Sliding window: the monitor averages the "
                                     "labels that arrived in the last `window` (of predictions "
                                     "by the model in service). Short: quick to react, noisy.")
    check_every: PositiveDuration = Field(3600.0, description="How often the monitor looks at "
                                          "the windowed metric.")
    below: float | None = Field(None, ge=0, description="Retrain when the windowed metric is "
                                "below this value. Give this or drop.")
    drop: float | None = Field(None, gt=0, lt=1, description="Retrain when the windowed metric "
                               "is this share below quality.fresh (the level of a just-trained "
                               "model), e.g. 0.05. Give this or below.")
    min_interval: NonNegativeDuration = Field(0.0, description="Cool-down: at least this long "
                                              "from one triggered run to the next.")
    min_labels: Count = Field(100, description="Labelled predictions the window must hold "
                              "before the monitor decides.")
    labelled_share: float = Field(1.0, gt=0, le=1, description="Share of predictions that ever "
                                  "get a label.")
    noise: bool = Field(True, description="Sampling noise of the measured metric (binomial: "
                        "the metric read as a rate over the labelled predictions); false: the "
                        "monitor sees the exact expected value.")

    @model_validator(mode="after")
    def _check(self) -> "Trigger":
        if (self.below is None) == (self.drop is None):
            raise ValueError("give exactly one of below (an absolute level of the metric) or "
                             "drop (a share below quality.fresh, e.g. 0.05)")
        if self.min_labels < 1:
            raise ValueError(f"min_labels must be >= 1 (got {self.min_labels:g})")
        return self


class Training(Model):
    """Retraining: when runs start (policy), what they learn from (mode), how long they take and
    what they cost. A run deploys ``duration + deploy_delay`` after it starts, with a data
    cut-off at its start."""

    policy: Literal["schedule", "trigger", "continual"] = Field(
        "schedule", description="schedule: a run every `every`; trigger: a run when the "
        "monitored quality falls (see trigger); continual: small stateful updates every `every` "
        "(minutes), one at a time.")
    every: PositiveDuration | None = Field(None, description="Time between training runs "
                                           "(schedule, continual).")
    duration: NonNegativeDuration = Field(0.0, description="Run time of one training run; or "
                                          "give throughput (and leave this 0) to derive it from "
                                          "the data volume.")
    deploy_delay: NonNegativeDuration = Field(0.0, description="From the end of a run to the "
                                              "new model serving.")
    start_at: NonNegativeDuration = Field(0.0, description="Offset of the schedule, e.g. 2h "
                                          "for 02:00.")
    mode: Literal["stateless", "stateful"] | None = Field(
        None, description="stateless: retrain from scratch on data_window of data; stateful: "
        "fine-tune the last model on the data since the last update (default: stateful for "
        "continual, else stateless).")
    examples_per_day: Count | None = Field(None, description="Training examples produced per "
                                           "day (default: one per request, from the workload's "
                                           "mean rate).")
    data_window: PositiveDuration | None = Field(None, description="Stateless: how much data "
                                                 "each run trains on (e.g. 30d). Needed with "
                                                 "throughput.")
    throughput: Rate | None = Field(None, description="Examples a training run processes per "
                                    "second; the run time is then examples / throughput + "
                                    "overhead.")
    overhead: NonNegativeDuration = Field(0.0, description="Fixed time added to each run "
                                          "(start-up, evaluation).")
    nodes: int = Field(1, ge=1, le=MAX_UNITS,
                       description="Nodes a run occupies (cost: run time x nodes x "
                       "costs.training_node_hour).")
    full_retrain_every: PositiveDuration | None = Field(
        None, description="Stateful: a stateless retrain from scratch at least this often.")
    architecture_changes: list[NonNegativeDuration] = Field(
        [], description="Times (from the start of the simulation, warm-up included) of model "
        "architecture changes: the first run after each must be stateless.")
    trigger: Trigger | None = Field(None, description="policy trigger: the quality monitor "
                                      "{label_delay, window, check_every, below or drop, "
                                      "min_interval, ...}.")

    @model_validator(mode="after")
    def _check(self) -> "Training":
        if self.policy in ("schedule", "continual") and self.every is None:
            raise ValueError(f"every is required with policy {self.policy} (time between runs)")
        if self.policy == "trigger":
            if self.trigger is None:
                raise ValueError("policy trigger needs a trigger section (label_delay, window, "
                                 "below or drop)")
            if self.every is not None:
                raise ValueError("every: not with policy trigger (the monitor decides when to "
                                 "retrain; use trigger.min_interval for a cool-down)")
        elif self.trigger is not None:
            raise ValueError(f"trigger: only with policy trigger (got policy {self.policy})")
        if self.policy == "continual" and self.mode == "stateless":
            raise ValueError("policy continual makes stateful updates (mode: stateful)")
        if self.throughput is not None and self.duration > 0:
            raise ValueError("give either duration or throughput, not both (with throughput "
                             "the run time follows from the data volume)")
        retrains_from_scratch = (self.training_mode == "stateless" or self.architecture_changes
                                 or self.full_retrain_every is not None)
        if self.throughput is not None and retrains_from_scratch and self.data_window is None:
            raise ValueError("training with throughput needs data_window: how much data a "
                             "stateless run (a retrain from scratch) learns from, e.g. 30d")
        if self.training_mode == "stateless" and self.full_retrain_every is not None:
            raise ValueError("full_retrain_every: only with mode stateful (every stateless run "
                             "is already a full retrain)")
        return self

    @property
    def training_mode(self) -> str:
        """The mode in force: as given, else stateful for continual and stateless otherwise."""
        if self.mode is not None:
            return self.mode
        return "stateful" if self.policy == "continual" else "stateless"


class Drift(Model):
    """A shift in the world at ``at`` (time since the start of the simulation, warm-up
    included) that costs ``quality_drop`` to predictions that have not caught up with it.

    What a prediction has caught up with is decided by two data times: the model's
    (its data cut-off minus ``recovery_data``) and the features' (request time minus feature
    age). ``shift(k, t)`` in [0, 1] is how much of the shift happened between data time ``k``
    and now ``t``:

    - ``sudden``: 1 when ``k < at <= t``, else 0 (with ``recovery_data: 0``, today's rule: the
      drop hurts models whose cut-off is before ``at``);
    - ``gradual``: the shift grows linearly over ``ramp``; with ``S(x) = clip((x - at) / ramp,
      0, 1)``, ``shift = max(0, S(t) - S(k))``: the part of the ramp since the data time;
    - ``recurring``: a seasonal cycle of ``period`` starting at ``at``; with ``p(x) = max(x,
      at)``, ``shift = (1 - cos(2 pi (p(t) - p(k)) / period)) / 2``: 0 at the same phase of the
      cycle as the data, 1 half a period away.

    The loss is ``quality_drop * ((1 - v) * shift(model) + v * min(shift(model),
    shift(features)))`` with ``v = visible_in_features``: the share ``v`` of the loss goes away
    once either the model or the features have seen the shift, the rest only with the model.
    """

    at: NonNegativeDuration = Field(description="When it happens (sudden), starts (gradual: the "
                                    "start of the ramp; recurring: the start of the cycle), from "
                                    "the start of the simulation, warm-up included.")
    quality_drop: MetricValue = Field(gt=0, description="Metric lost by predictions that have not "
                                "caught up with the whole shift (for recurring: half a period "
                                "out of phase).")
    kind: Literal["sudden", "gradual", "recurring"] = Field(
        "sudden", description="sudden: all at once at `at`; gradual: growing linearly over "
        "`ramp`; recurring: a seasonal cycle of `period` (a model is best at the same time of "
        "day or week as its training data, worst half a period away).")
    ramp: PositiveDuration | None = Field(None, description="gradual only: how long the shift "
                                          "takes to build up fully, e.g. 6h.")
    period: PositiveDuration | None = Field(None, description="recurring only: the length of "
                                            "the cycle, e.g. 1d (daily) or 7d (weekly).")
    recovery_data: NonNegativeDuration = Field(0.0, description="How much data after the shift "
                                               "a model must be trained on to learn it: a model "
                                               "recovers once its data cut-off is at least this "
                                               "long after the shift (0: any later cut-off).")
    visible_in_features: float = Field(0.0, ge=0, le=1, description="Share of the loss that "
                                       "goes away as soon as the request's features were "
                                       "computed from data after the shift (0 to 1): stream "
                                       "features, minutes old, recover it long before a "
                                       "nightly batch.")

    @model_validator(mode="after")
    def _check(self) -> "Drift":
        needs = {"sudden": None, "gradual": "ramp", "recurring": "period"}[self.kind]
        for key in ("ramp", "period"):
            given = getattr(self, key) is not None
            if key == needs and not given:
                example = "ramp: 6h" if key == "ramp" else "period: 1d"
                raise ValueError(f"kind {self.kind} needs {key} (e.g. {example})")
            if key != needs and given:
                raise ValueError(f"{key} applies only to kind "
                                 f"{'gradual' if key == 'ramp' else 'recurring'} "
                                 f"(this drift is {self.kind})")
        return self


class Costs(Model):
    """Unit prices in US dollars."""

    replica_hour: Price = Field(0.0, ge=0, description="One serving replica for an hour.")
    batch_node_hour: Price = Field(0.0, ge=0, description="One node of a batch scoring or "
                                   "feature job for an hour.")
    stream_node_hour: Price = Field(0.0, ge=0, description="One stream-processing node for an "
                                    "hour.")
    training_run: Price = Field(0.0, ge=0, description="One training run (a fixed cost per run, "
                                "on top of its node-hours).")
    training_node_hour: Price = Field(0.0, ge=0, description="One training node for an hour "
                                      "(a run costs run time x training.nodes x this).")


class LatencyPenalty(Model):
    """Value lost to waiting, in proportion to latency."""

    per_100ms: float = Field(0.0, ge=0, description="Share of value lost per 100 ms of latency.")


class Business(Model):
    """What an outcome is worth."""

    value_per_outcome: Price = Field(0.0, ge=0, description="US dollars per outcome (a click...).")
    latency_penalty: LatencyPenalty = Field(LatencyPenalty(), description="Value lost per "
                                            "100 ms of latency, capped at all of it.")


class Slo(Model):
    """The service-level objective for latency."""

    latency_p99: Duration | None = Field(None, description="Target for the 99th percentile.")


# --------------------------------------------------------------------------------------------
# Architectures
# --------------------------------------------------------------------------------------------

class BatchFeatures(Model):
    """Scheduled feature materialisation: data cut-off at the start of each run."""

    every: PositiveDuration = Field(description="Time between materialisation runs.")
    duration: NonNegativeDuration | None = Field(None, description="Run time; or give "
                                                 "throughput.")
    throughput: Rate | None = Field(None, description="Entities materialised per second.")
    overhead: NonNegativeDuration = Field(0.0, description="Fixed time added to each run.")
    nodes: int = Field(1, ge=1, le=MAX_UNITS, description="Nodes per run (cost only).")
    start_at: NonNegativeDuration = Field(0.0, description="Offset of the schedule, e.g. 2h "
                                          "for 02:00.")

    @model_validator(mode="after")
    def _check(self) -> "BatchFeatures":
        if self.duration is not None and self.throughput is not None:
            raise ValueError("give either duration or throughput, not both")
        return self


class StreamFeatures(Model):
    """Features from a stream processor: windows, each visible ``lag`` after it closes."""

    lag: Dist = Field(ZERO, description="From a window closing to its features being visible.")
    window: Dist = Field(ZERO, description="Window length: a duration (1m) for tumbling windows, "
                         "or a distribution for windows that close irregularly (micro-batches); "
                         "0: every event is its own update.")
    nodes: int = Field(1, ge=1, le=MAX_UNITS,
                       description="Stream-processing nodes, running all day (cost).")


class RequestFeatures(Model):
    """Features computed in the request from its own payload (fresh by construction).

    They are computed by the serving replica before inference, so their time occupies the
    replica and waits in its queue like inference does: most teams compute them in the serving
    process, and a separate feature service would be a queue of its own to size.
    """

    compute: Dist = Field(description="Time to compute the request-time features, on the "
                          "replica (per request; per item in a batch).")


class Features(Model):
    """Where the features used at request time come from."""

    batch: BatchFeatures | None = Field(None, description="Scheduled feature materialisation.")
    stream: StreamFeatures | None = Field(None, description="Features from a stream processor.")
    request: RequestFeatures | None = Field(None, description="Features computed in the "
                                            "request: {compute: DURATION or distribution}.")


class Batching(Model):
    """Dynamic batching: a free replica serves up to ``max_batch`` waiting requests at once.

    A batch leaves the queue as soon as a replica is free and either ``max_batch`` requests are
    waiting or the oldest has waited ``max_wait``; it then occupies the replica for the longest
    feature lookup among its requests (one multi-get) plus ``fixed`` (one draw per batch) plus
    ``per_item`` for each request (one draw per request).
    """

    max_batch: int = Field(ge=1, le=MAX_UNITS,
                           description="Most requests served together in one batch.")
    max_wait: NonNegativeDuration = Field(0.0, description="Longest the oldest waiting request "
                                          "is held back for a fuller batch (the linger).")
    fixed: Dist = Field(ZERO, description="Time per batch, whatever its size.")
    per_item: Dist = Field(ZERO, description="Time added for each request in the batch.")


class Autoscaling(Model):
    """Replicas added and removed by an autoscaler that looks at the last ``every``.

    Every ``every`` the autoscaler computes ``desired = ceil(replicas x observed / target)``
    (as the Kubernetes Horizontal Pod Autoscaler does), from the utilisation of the ready
    replicas or from the mean number of waiting requests per ready replica over the last
    interval, and keeps it between ``min`` and ``max``. New replicas serve ``warmup`` after they
    are asked for and are paid for from the moment they are asked for; replicas are removed only
    when idle, never while one warms up, and at least ``cooldown`` after the last change. The
    queue target counts every waiting request, those a batcher holds back for ``max_wait``
    included.
    """

    min: int = Field(ge=1, le=MAX_UNITS, description="Fewest replicas.")
    max: int = Field(ge=1, le=MAX_UNITS, description="Most replicas.")
    target_utilization: float | None = Field(None, gt=0, le=1, description="Share of time "
                                             "the ready replicas should be busy (0.6 = 60%).")
    target_queue: float | None = Field(None, gt=0, description="Waiting requests per ready "
                                       "replica to aim for, on average over the interval.")
    every: PositiveDuration = Field(30.0, description="How often the autoscaler looks and "
                                    "decides.")
    tolerance: float = Field(0.1, ge=0, lt=1, description="No change while observed/target "
                             "is within this share of 1 (Kubernetes uses 0.1).")
    warmup: NonNegativeDuration = Field(0.0, description="From asking for a replica to it "
                                        "serving (start-up, model load).")
    cooldown: NonNegativeDuration = Field(300.0, description="No removal sooner than this "
                                          "after the last change.")

    @model_validator(mode="after")
    def _check(self) -> "Autoscaling":
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) must be at least min ({self.min})")
        given = [k for k in ("target_utilization", "target_queue") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of target_utilization or target_queue "
                             f"(got {', '.join(given) or 'none'})")
        return self


class Serving(Model):
    """Serving replicas: FIFO, each runs feature lookup then inference for one request (or one
    batch of requests with ``batching``)."""

    replicas: int = Field(ge=1, le=MAX_UNITS,
                          description="Serving replicas, each serving one request (or "
                          "batch) at a time; with autoscaling, the number at the start.")
    service_time: Dist | None = Field(None, description="Inference time per request on a "
                                      "replica (without batching).")
    timeout: PositiveDuration | None = Field(None, description="Requests slower than this get "
                                             "the fallback.")
    batching: Batching | None = Field(None, description="Dynamic batching: {max_batch, "
                                      "max_wait, fixed, per_item}; replaces service_time.")
    autoscaling: Autoscaling | None = Field(None, description="Add and remove replicas with "
                                            "load: {min, max, target_utilization or "
                                            "target_queue, every, warmup, cooldown}.")

    @model_validator(mode="after")
    def _check(self) -> "Serving":
        if (self.service_time is None) == (self.batching is None):
            raise ValueError("give service_time (one request at a time) or batching (fixed "
                             "and per_item times), not both and not neither")
        b = self.batching
        if b is not None and self.timeout is not None and b.max_wait >= self.timeout:
            raise ValueError(f"batching.max_wait ({format_duration(b.max_wait)}) must be "
                             f"shorter than timeout ({format_duration(self.timeout)}), or every "
                             f"request held for a batch would time out")
        a = self.autoscaling
        if a is not None and not a.min <= self.replicas <= a.max:
            raise ValueError(f"replicas ({self.replicas}) is where autoscaling starts: it must "
                             f"be between autoscaling.min ({a.min}) and max ({a.max})")
        return self

    def mean_occupancy_s(self, feature_lookup: Distribution,
                         request_features: "RequestFeatures | None" = None) -> float:
        """Mean replica time per request: one request at a time, or a full batch shared (which
        waits for the slowest of its ``max_batch`` feature lookups); request-time features
        add their compute time per request."""
        extra = request_features.compute.mean if request_features is not None else 0.0
        if self.batching is None:
            return feature_lookup.mean + self.service_time.mean + extra
        b = self.batching
        # E[max of B draws] = integral of F^-1(u) B u^(B-1) du, on a midpoint grid
        u = (np.arange(4096) + 0.5) / 4096
        slowest = float(np.mean(feature_lookup.ppf(u) * b.max_batch * u ** (b.max_batch - 1)))
        return (slowest + b.fixed.mean) / b.max_batch + b.per_item.mean + extra


class _Scheduled(Model):
    """Scheduled scoring jobs writing predictions to a store."""

    every: PositiveDuration = Field(description="Time between scoring jobs.")
    throughput: Rate = Field(description="Entities scored per second by a job.")
    overhead: NonNegativeDuration = Field(0.0, description="Fixed time added to each job.")
    nodes: int = Field(1, ge=1, le=MAX_UNITS, description="Nodes per job (cost only).")
    start_at: NonNegativeDuration = Field(0.0, description="Offset of the schedule, e.g. 2h "
                                          "for 02:00.")
    lookup: Dist = Field(ZERO, description="Time to read a stored prediction.")
    timeout: PositiveDuration | None = Field(None, description="Lookups slower than this get "
                                             "the fallback.")
    training: Training | None = Field(None, description="This architecture's own retraining, "
                                      "instead of the scenario's training section (shared "
                                      "otherwise).")


class BatchArchitecture(_Scheduled):
    """Scheduled scoring jobs; requests read the stored prediction."""

    kind: Literal["batch"] = Field(description="batch")


class OnlineArchitecture(Model):
    """Prediction at request time with features from a batch pipeline."""

    kind: Literal["online"] = Field(description="online")
    training: Training | None = Field(None, description="This architecture's own retraining, "
                                      "instead of the scenario's training section (shared "
                                      "otherwise).")
    features: Features = Field(description="features.batch: how often features are materialised.")
    feature_lookup: Dist = Field(ZERO, description="Time to fetch features, on the replica.")
    serving: Serving = Field(description="Serving replicas.")

    @model_validator(mode="after")
    def _check(self):
        if self.features.batch is None:
            raise ValueError("online needs features.batch (how often features are materialised)")
        if self.features.stream is not None:
            raise ValueError("online has no stream features; use kind: streaming")
        return self


class StreamingArchitecture(Model):
    """Prediction at request time with batch features plus features from a stream processor."""

    kind: Literal["streaming"] = Field(description="streaming")
    training: Training | None = Field(None, description="This architecture's own retraining, "
                                      "instead of the scenario's training section (shared "
                                      "otherwise).")
    features: Features = Field(description="features.stream (lag, window) and optionally features.batch.")
    feature_lookup: Dist = Field(ZERO, description="Time to fetch features, on the replica.")
    serving: Serving = Field(description="Serving replicas.")

    @model_validator(mode="after")
    def _check(self):
        if self.features.stream is None:
            raise ValueError("streaming needs features.stream (lag and window)")
        return self


class HybridArchitecture(_Scheduled):
    """Batch predictions for the most popular entities, online prediction for the rest."""

    kind: Literal["hybrid"] = Field(description="hybrid")
    head_share: float = Field(gt=0, le=1, description="Share of entities, most popular first, "
                              "that get precomputed predictions.")
    features: Features = Field(description="Features for the online part (features.batch required).")
    feature_lookup: Dist = Field(ZERO, description="Time to fetch features, on the replica.")
    serving: Serving = Field(description="Serving replicas.")

    @model_validator(mode="after")
    def _check(self):
        if self.features.batch is None:
            raise ValueError("hybrid needs features.batch for its online part")
        return self


Architecture = Annotated[
    Union[BatchArchitecture, OnlineArchitecture, StreamingArchitecture, HybridArchitecture],
    Field(discriminator="kind"),
]
KINDS = ("batch", "online", "streaming", "hybrid")


# --------------------------------------------------------------------------------------------
# The scenario
# --------------------------------------------------------------------------------------------

class Scenario(Model):
    """A whole scenario: workload, quality, prices and the architectures to compare."""

    model_config = ConfigDict(json_schema_extra={
        "$schema": "https://json-schema.org/draft/2020-12/schema"})

    name: str = Field("scenario", description="Shown in tables and reports.")
    description: str | None = Field(None, description="Free text about the scenario.")
    horizon: PositiveDuration = Field(description="Measured simulated time.")
    warmup: NonNegativeDuration = Field(0.0, description="Simulated first, not measured.")
    seed: int = Field(0, ge=0, description="Random seed: the same seed gives the same numbers.")
    timeseries_bucket: PositiveDuration | None = Field(None, description="Width of a time-series bucket "
                                               "(default: 1h, or horizon/48 when shorter).")
    slo: Slo = Field(Slo(), description="Latency target.")
    workload: Workload = Field(description="Traffic and entities.")
    quality: Quality = Field(description="The quality metric and how it decays with age.")
    training: Training | None = Field(None, description="Retraining schedule; none: the model is "
                                      "never retrained.")
    drift: list[Drift] = Field([], description="Shifts (sudden, gradual or recurring) that "
                               "hurt predictions until a model trained on enough data after "
                               "them is deployed.")
    costs: Costs = Field(Costs(), description="Unit prices, for cost per day.")
    business: Business = Field(Business(), description="Value of outcomes.")
    architectures: dict[str, Architecture] = Field(description="The architectures to compare, "
                                                   "by name.")

    @model_validator(mode="after")
    def _check(self) -> "Scenario":
        if not self.architectures:
            raise ValueError("architectures: give at least one")
        sections = [("training", self.training)] + [
            (f"architectures.{name}.training", getattr(a, "training", None))
            for name, a in self.architectures.items()]
        for where, t in sections:
            g = t.trigger if t is not None else None
            if g is not None and g.below is not None and g.below >= self.quality.fresh:
                raise ValueError(f"{where}.trigger.below ({g.below:g}) must be below "
                                 f"quality.fresh ({self.quality.fresh:g}), or every check "
                                 f"would start a retrain")
            if g is not None and g.noise and self.quality.fresh > 1:
                raise ValueError(f"{where}.trigger.noise: the monitor's binomial noise needs a "
                                 f"metric that is a rate between 0 and 1 (quality.fresh is "
                                 f"{self.quality.fresh:g}); set noise: false")
        return self

    # Derived quantities the engine and the reports share.
    @property
    def end_s(self) -> float:
        return self.warmup + self.horizon

    @property
    def bucket_s(self) -> float:
        if self.timeseries_bucket is not None:
            return self.timeseries_bucket
        return 3600.0 if self.horizon >= 48 * 3600.0 / 4 else self.horizon / 48

    def to_yaml_dict(self) -> dict:
        """The resolved scenario as plain data in scenario-file units (defaults filled in)."""
        data = self.model_dump(mode="json", exclude_none=True)
        data["architectures"] = {
            name: {"kind": arch.pop("kind"), **arch} for name, arch in data["architectures"].items()}
        return data


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

def load_scenario(path: str | Path, overrides: dict[str, Any] | list[str] | None = None,
                  seed: int | None = None) -> Scenario:
    """Read, override and validate a scenario file.

    ``overrides`` maps dotted key paths to values (``{"architectures.online.serving.replicas":
    8}``) or is a list of ``KEY=VALUE`` strings whose values are parsed as YAML, as on the
    command line. Raises :class:`ScenarioError` listing every problem at once.
    """
    path = Path(path)
    label = str(path)
    if not path.is_file():
        raise ScenarioError([f"{label}: file not found"])
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ScenarioError([f"{label}: {where}not valid YAML ({problem})"]) from None
    except UnicodeDecodeError:
        raise ScenarioError([f"{label}: not a text file"]) from None
    return scenario_from_dict(raw, label=label, base_dir=path.parent, overrides=overrides,
                              seed=seed)


def scenario_from_dict(raw: Any, label: str = "<scenario>", base_dir: str | Path = ".",
                       overrides: dict[str, Any] | list[str] | None = None,
                       seed: int | None = None) -> Scenario:
    """Validate a scenario given as plain data (as parsed from YAML)."""
    if not isinstance(raw, dict):
        raise ScenarioError([f"{label}: expected a mapping of keys (name, horizon, workload, "
                             f"...) at the top level (got {type(raw).__name__})"])
    data = copy.deepcopy(raw)
    problems: list[str] = []
    for key, value in _parse_overrides(overrides, label, problems):
        _set_path(data, key, value, label, problems)
    if seed is not None:
        data["seed"] = seed
    try:
        scenario = Scenario.model_validate(data, context={"base_dir": str(base_dir)})
    except ValidationError as exc:
        problems.extend(_explain(exc, data, label))
    else:
        problems.extend(_replay_problems(scenario, label))
    if problems:
        raise ScenarioError(problems)
    return scenario


def _replay_problems(scenario: "Scenario", label: str) -> list[str]:
    """A replayed log that ends before the simulation does, unless it loops. A log covers its
    span and one mean gap between requests after its last."""
    arrivals = scenario.workload.arrivals
    trace = arrivals.trace
    if trace is None or trace.loop is not False:
        return []
    covers_s = trace.period_s / arrivals.replay_speedup
    if covers_s >= scenario.end_s:
        return []
    return [f"{label}: workload.arrivals.trace: the log covers {human_duration(covers_s)} at "
            f"this speed, but warmup + horizon is {human_duration(scenario.end_s)}: set "
            f"trace.loop: true to repeat it, or shorten the horizon"]


def _parse_overrides(overrides, label, problems):
    if overrides is None:
        return []
    if isinstance(overrides, dict):  # copied: later keys may write into an earlier value
        return [(key, copy.deepcopy(value)) for key, value in overrides.items()]
    pairs = []
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"{label}: --set {item!r}: expected KEY=VALUE, e.g. "
                            f"architectures.online.serving.replicas=8")
            continue
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        pairs.append((key.strip(), value))
    return pairs


def _set_path(data: dict, dotted: str, value: Any, label: str, problems: list[str]) -> None:
    node = data
    parts = dotted.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.get(part) if isinstance(node, dict) else None
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            where = ".".join(parts[: i + 1])
            problems.append(f"{label}: --set {dotted}: {where} is not a section "
                            f"(it is {child!r})")
            return
        node = child
    node[parts[-1]] = value


_MESSAGES = {
    "missing": "is required",
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "float_parsing": "expected a number",
    "bool_parsing": "expected true or false",
    "string_type": "expected text",
    "dict_type": "expected a section of keys",
    "model_type": "expected a section of keys",
    "list_type": "expected a list",
    "tuple_type": "expected a pair [age, value]",
    "finite_number": "expected a finite number",
}


def _explain(exc: ValidationError, data: dict, label: str) -> list[str]:
    lines = []
    for err in exc.errors():
        loc = _clean_loc(err["loc"])
        path = ".".join(str(p) for p in loc)
        kind = err["type"]
        got = err.get("input")
        ctx = err.get("ctx") or {}
        if kind == "extra_forbidden":
            parent = _known_fields(loc[:-1], data)
            hint = _did_you_mean(str(loc[-1]), parent)
            msg = f"unknown key{hint}"
        elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
            op = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=",
                  "less_than": "<"}[kind]
            bound = next(iter(ctx.values()))
            msg = f"must be {op} {bound} (got {got!r})"
        elif kind == "literal_error":
            msg = f"expected {ctx.get('expected')} (got {got!r})"
        elif kind == "union_tag_invalid":
            hint = _did_you_mean(str(ctx.get("tag")), list(KINDS))
            msg = f"kind must be one of {', '.join(KINDS)} (got {ctx.get('tag')!r}){hint}"
        elif kind == "union_tag_not_found":
            msg = f"needs a kind: one of {', '.join(KINDS)}"
        elif kind in ("value_error", "assertion_error"):
            msg = str(ctx.get("error", err["msg"]))
        elif kind == "missing":
            msg = _MESSAGES[kind]
        elif kind in _MESSAGES:
            msg = f"{_MESSAGES[kind]} (got {got!r})"
        else:
            msg = err["msg"]
        lines.append(f"{label}: {path or '(top level)'}: {msg}")
    return list(dict.fromkeys(lines))


def _clean_loc(loc: tuple) -> tuple:
    """Drop pydantic's internal steps (union tags, function names) from an error location."""
    out = []
    for i, part in enumerate(loc):
        if isinstance(part, str) and (part in KINDS and i >= 2 and loc[0] == "architectures"
                                      and i == 2):
            continue
        if isinstance(part, str) and ("function-" in part or part.startswith("function")):
            continue
        out.append(part)
    return tuple(out)


def _known_fields(loc: tuple, data: dict) -> list[str]:
    """The keys allowed at a location, for "did you mean" suggestions."""
    model: Any = Scenario
    node: Any = data
    for part in loc:
        if isinstance(node, dict):
            node = node.get(part)
        if model is Scenario and part == "architectures":
            model = "architectures"
            continue
        if model == "architectures":
            kind = node.get("kind") if isinstance(node, dict) else None
            model = {"batch": BatchArchitecture, "online": OnlineArchitecture,
                     "streaming": StreamingArchitecture, "hybrid": HybridArchitecture}.get(kind)
            if model is None:
                return []
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
        field = model.model_fields.get(str(part))
        if field is None:
            return []
        model = _model_of(field.annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _model_of(annotation: Any) -> Any:
    for candidate in getattr(annotation, "__args__", ()) or (annotation,):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def dump_yaml(data: Any) -> str:
    """YAML in the key order given, as the resolved scenario is printed."""
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=None,
                          width=100)


__all__ = ["Scenario", "ScenarioError", "load_scenario", "scenario_from_dict", "dump_yaml",
           "DAY_S", "math"]
