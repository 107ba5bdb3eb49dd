"""A first scenario from a handful of plain answers (``predsim init``).

:data:`QUESTIONS` lists what is asked, with the default shown for each; :func:`parse_answers`
turns the answers as typed into :class:`Answers`; :func:`starter_yaml` turns those into the text
of a commented scenario that compares the team's current batch setup with online and streaming
prediction. Nothing here prompts, prints or writes files: ``sim/cli/main.py`` does.

Two answers are not scenario keys and are converted here:

- *how many entities are active on a given day* becomes a Zipf popularity exponent: with ``R``
  requests a day spread over ``N`` entities with probabilities ``p_k``, the expected number of
  entities with at least one request in a day is ``sum_k 1 - exp(-R p_k)`` (requests as a Poisson
  process), and the exponent is found by bisection (:func:`zipf_exponent_for`);
- *the busiest hour's share of the day* becomes a peak-to-trough ratio of the diurnal pattern
  ``m(t) = 1 + a cos(2 pi t / 1 day)``, whose busiest hour holds
  ``(1 + a sin(pi/24) / (pi/24)) / 24`` of the day and whose peak-to-trough ratio is
  ``(1 + a) / (1 - a)``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import yaml

from sim.distributions import Distribution
from sim.scenario import scenario_from_dict
from sim.units import DAY_S, format_duration, parse_count, parse_duration
from sim.units import count_exact as _count_text, rate_rounded as _rate_text

TARGET_UTILIZATION = 0.6  # replicas are sized so that they are about this busy at the peak
MAX_EXPONENT = 4.0
_SINC_HOUR = math.sin(math.pi / 24) / (math.pi / 24)  # mean of cos over the busiest hour
MAX_PEAK_HOUR_SHARE = (1 + _SINC_HOUR) / 24


class StarterError(ValueError):
    """Answers that cannot make a scenario; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


# --------------------------------------------------------------------------------------------
# Parsing the answers
# --------------------------------------------------------------------------------------------

def _number(text: str) -> float:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise ValueError(f"expected a number (got {text!r})") from None
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number (got {text!r})")
    return value


def _non_negative_number(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise ValueError(f"must be >= 0 (got {text})")
    return value


def _positive_number(text: str) -> float:
    value = _number(text)
    if not value > 0:
        raise ValueError(f"must be > 0 (got {text})")
    return value


def _positive_count(text: str) -> float:
    value = parse_count(text)
    if not value > 0:
        raise ValueError(f"must be > 0 (got {text})")
    return value


def _entities(text: str) -> float:
    value = parse_count(text)
    if value < 1 or value != int(value):
        raise ValueError(f"must be a whole number >= 1 (got {text})")
    return value


def _non_negative_count(text: str) -> float:
    value = parse_count(text)
    if value < 0:
        raise ValueError(f"must be >= 0 (got {text})")
    return value


def _positive_duration(text: str) -> float:
    value = parse_duration(text)
    if not value > 0:
        raise ValueError(f"must be > 0 (got {text})")
    return value


def _non_negative_duration(text: str) -> float:
    value = parse_duration(text)
    if value < 0:
        raise ValueError(f"must be >= 0 (got {text})")
    return value


def _text(text: str) -> str:
    value = str(text).strip()
    if not value:
        raise ValueError("must not be empty")
    if any(not c.isprintable() for c in value):
        raise ValueError(f"must be one line of text (got {value!r})")
    return value


def parse_peak(text: str) -> float:
    """A peak-to-trough ratio (``3``) or the busiest hour's share of the day (``7%``) -> ratio."""
    raw = str(text).strip()
    if raw.endswith("%"):
        share = _number(raw[:-1]) / 100
        return peak_to_trough_for_share(share)
    ratio = _number(raw)
    if ratio < 1:
        raise ValueError(f"a peak-to-trough ratio is at least 1 (got {raw}); for the busiest "
                         f"hour's share of the day write a percentage such as 7%")
    return ratio


def peak_to_trough_for_share(share: float) -> float:
    """The diurnal peak-to-trough ratio whose busiest hour holds ``share`` of the day."""
    low, high = 1 / 24, MAX_PEAK_HOUR_SHARE
    if not low - 1e-12 <= share < high:
        raise ValueError(f"the busiest hour's share of the day must be from {low:.2%} (flat) "
                         f"to below {high:.2%} for predsim's daily cycle (got {share:.2%}); "
                         f"give a peak-to-trough ratio instead")
    amplitude = max(0.0, (24 * share - 1) / _SINC_HOUR)
    return (1 + amplitude) / (1 - amplitude)


def peak_hour_share(peak_to_trough: float) -> float:
    """The busiest hour's share of the day for a diurnal peak-to-trough ratio."""
    amplitude = (peak_to_trough - 1) / (peak_to_trough + 1)
    return (1 + amplitude * _SINC_HOUR) / 24


@dataclass(frozen=True)
class Question:
    """One question: the ``Answers`` field it fills (and its ``--flag``), the prompt, the
    default as text (or a function of the answers so far), and the parser of the answer."""

    key: str
    section: str
    text: str
    default: str | Callable[[dict[str, Any]], str]
    parse: Callable[[str], Any]

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    def default_for(self, earlier: dict[str, Any]) -> str:
        """The default shown, given the parsed answers so far."""
        return self.default(earlier) if callable(self.default) else self.default


def _share_of_fresh(share: float) -> Callable[[dict[str, Any]], str]:
    return lambda earlier: f"{share * earlier.get('fresh', 0.05):.4g}"


QUESTIONS: tuple[Question, ...] = (
    Question("requests_per_day", "Traffic", "Requests per day (e.g. 2M)", "2M", _positive_count),
    Question("peak", "Traffic", "Daily peak: peak-to-trough ratio (e.g. 3), or the busiest "
             "hour's share of the day (e.g. 6%)", "3", parse_peak),
    Question("entities", "Users or items", "How many users or items the requests are about",
             "1M", _entities),
    Question("active_per_day", "Users or items", "How many of them make a request on a "
             "given day", "100k", _positive_count),
    Question("new_per_day", "Users or items", "New users or items per day", "1000",
             _non_negative_count),
    Question("batch_every", "Your batch predictions today", "How often the batch job runs",
             "24h", _positive_duration),
    Question("batch_duration", "Your batch predictions today", "How long one run takes", "1h",
             _positive_duration),
    Question("latency_p50", "Serving, for online prediction", "Time to serve one request on a "
             "replica (feature lookup + inference), median", "20ms", _positive_duration),
    Question("latency_p99", "Serving, for online prediction", "Time to serve one request on a "
             "replica, 99th percentile", "80ms", _positive_duration),
    Question("slo_p99", "Serving, for online prediction", "Latency target for the 99th "
             "percentile (SLO)", "150ms", _positive_duration),
    Question("metric", "Quality", "Name of your quality metric", "ctr", _text),
    Question("fresh", "Quality", "Its value with fresh features and a just-trained model",
             "0.05", _positive_number),
    Question("stale", "Quality", "Its value with very old features (what it decays to)",
             _share_of_fresh(0.7), _non_negative_number),
    Question("half_life", "Quality", "Half-life: feature age at which half of the gap between "
             "fresh and old is lost (a guess is fine)", "1d", _positive_duration),
    Question("fallback", "Quality", "Its value when there is no prediction (the fallback)",
             _share_of_fresh(0.4), _non_negative_number),
    Question("replica_hour", "Prices (US$)", "One serving replica for an hour", "0.50",
             _non_negative_number),
    Question("batch_node_hour", "Prices (US$)", "One batch node for an hour", "1.20",
             _non_negative_number),
    Question("stream_node_hour", "Prices (US$)", "One stream-processing node for an hour",
             "0.80", _non_negative_number),
    Question("value_per_outcome", "Prices (US$)", "Value of one outcome (one click, one "
             "conversion...; 0 if unknown)", "0.40", _non_negative_number),
)
_BY_KEY = {q.key: q for q in QUESTIONS}


@dataclass(frozen=True)
class Answers:
    """Parsed answers, in SI units (seconds, per day counts, US dollars)."""

    name: str
    requests_per_day: float
    peak: float  # peak-to-trough ratio
    entities: float
    active_per_day: float
    new_per_day: float
    batch_every: float
    batch_duration: float
    latency_p50: float
    latency_p99: float
    slo_p99: float
    metric: str
    fresh: float
    stale: float
    half_life: float
    fallback: float
    replica_hour: float
    batch_node_hour: float
    stream_node_hour: float
    value_per_outcome: float


def parse_answers(texts: dict[str, str | None], name: str = "my-service") -> Answers:
    """Answers from text as typed (missing or None: the default), checked together.

    Raises :class:`StarterError` naming the ``--flag`` of each bad answer.
    """
    unknown = sorted(set(texts) - set(_BY_KEY))
    if unknown:
        raise StarterError([f"unknown answer {k!r}" for k in unknown])
    values: dict[str, Any] = {}
    problems = []
    for q in QUESTIONS:
        text = texts.get(q.key)
        if text is None:
            text = q.default_for(values)
        try:
            values[q.key] = q.parse(text)
        except ValueError as exc:
            problems.append(f"{q.flag}: {exc}")
    problems += _check_together(values)
    if problems:
        raise StarterError(problems)
    return Answers(name=_text(name), **values)


def _check_together(v: dict[str, Any]) -> list[str]:
    """Problems between answers (each check only when the answers it needs could be read)."""
    def have(*keys: str) -> bool:
        return set(keys) <= set(v)

    problems = []
    for limit in ("entities", "requests_per_day"):
        if have("active_per_day", limit) and v["active_per_day"] > v[limit]:
            problems.append(f"--active-per-day: cannot be more than --{limit.replace('_', '-')} "
                            f"({_count_text(v['active_per_day'])} > {_count_text(v[limit])})")
    if have("latency_p50", "latency_p99") and v["latency_p99"] < v["latency_p50"]:
        problems.append(f"--latency-p99: must be at least --latency-p50 "
                        f"({format_duration(v['latency_p99'])} < "
                        f"{format_duration(v['latency_p50'])})")
    for key in ("stale", "fallback"):
        if have(key, "fresh") and v[key] > v["fresh"]:
            problems.append(f"--{key}: must not exceed --fresh ({v[key]:g} > {v['fresh']:g})")
    return problems


# --------------------------------------------------------------------------------------------
# Popularity from "active per day"
# --------------------------------------------------------------------------------------------

_EXACT_RANKS = 10_000
_GROUP_RATIO = 1.01


def _rank_groups(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ranks 1..n as groups: (first rank, last rank, count); single ranks up to 10,000, then
    groups whose width grows by 1% (a sum over 31M ranks costs under a thousand terms)."""
    n = int(n)
    exact = np.arange(1, min(n, _EXACT_RANKS) + 1, dtype=float)
    firsts, lasts = [exact], [exact]
    if n > _EXACT_RANKS:
        edges = [_EXACT_RANKS + 1]
        while edges[-1] <= n:
            edges.append(max(edges[-1] + 1, int(edges[-1] * _GROUP_RATIO)))
        edges[-1] = n + 1
        edges = np.array(edges, dtype=float)
        firsts.append(edges[:-1])
        lasts.append(edges[1:] - 1)
    first, last = np.concatenate(firsts), np.concatenate(lasts)
    return first, last, last - first + 1


def _mean_weights(first: np.ndarray, last: np.ndarray, exponent: float) -> np.ndarray:
    """Mean of k^-s over each group of ranks (exact for single ranks, an integral otherwise)."""
    single = first == last
    a, b = first - 0.5, last + 0.5
    if exponent == 1.0:
        integral = np.log(b / a)
    else:
        integral = (b ** (1 - exponent) - a ** (1 - exponent)) / (1 - exponent)
    return np.where(single, first ** -exponent, integral / (last - first + 1))


def expected_active(entities: float, requests: float, exponent: float) -> float:
    """Expected entities with at least one of ``requests`` requests (Zipf ``exponent``; 0 is
    uniform): ``sum_k 1 - exp(-requests p_k)``."""
    if exponent == 0:
        return float(entities * -math.expm1(-requests / entities))
    first, last, count = _rank_groups(int(entities))
    weights = _mean_weights(first, last, exponent)
    p = weights / float(np.sum(weights * count))
    return float(np.sum(count * -np.expm1(-requests * p)))


def head_request_share(entities: float, head: float, exponent: float) -> float:
    """Share of requests that go to the ``head`` most popular of ``entities`` (Zipf)."""
    if exponent == 0:
        return min(1.0, head / entities)
    first, last, count = _rank_groups(int(entities))
    mass = _mean_weights(first, last, exponent) * count
    inside = np.clip((head - first + 1) / count, 0.0, 1.0)  # share of each group in the head
    return float(np.sum(mass * inside) / np.sum(mass))


def zipf_exponent_for(entities: float, requests_per_day: float,
                      active_per_day: float) -> float | None:
    """The Zipf exponent that makes ``active_per_day`` entities active a day, rounded to 0.01;
    None when even uniform popularity makes fewer active (uniform is then the closest)."""
    if active_per_day >= expected_active(entities, requests_per_day, 0.0):
        return None
    low, high = 0.0, MAX_EXPONENT
    if expected_active(entities, requests_per_day, high) > active_per_day:
        return high
    for _ in range(50):
        mid = (low + high) / 2
        if expected_active(entities, requests_per_day, mid) > active_per_day:
            low = mid
        else:
            high = mid
    return round((low + high) / 2, 2)


# --------------------------------------------------------------------------------------------
# The scenario text
# --------------------------------------------------------------------------------------------

def _period_text(seconds: float) -> str:
    """'day' for 1d, 'hour' for 1h, 'week' for 7d, else the duration ('6h')."""
    return {DAY_S: "day", 3600.0: "hour", 7 * DAY_S: "week"}.get(seconds,
                                                                 format_duration(seconds))


def _round3(x: float) -> float:
    """Rounded to 3 significant digits, for comments."""
    return float(f"{x:.3g}")


def _number_text(x: float) -> str:
    return f"{x:.6g}"


def _scalar(text: str) -> str:
    """A string as a YAML scalar: plain when it reads back as itself, else double-quoted."""
    try:
        if yaml.safe_load(text) == text and ":" not in text and "#" not in text:
            return text
    except yaml.YAMLError:
        pass
    return json.dumps(text)


class _Lines:
    """YAML lines with comments aligned at column 28, as in the bundled scenarios."""

    COLUMN = 28

    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, text: str = "", comment: str | None = None) -> None:
        if comment:
            pad = max(self.COLUMN - len(text), 1) if text else 0
            text = f"{text}{' ' * pad}# {comment}"
        self.lines.append(text)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


@dataclass(frozen=True)
class Plan:
    """Quantities derived from the answers that the scenario needs."""

    exponent: float | None  # None: uniform
    active_uniform: float  # the most entities any popularity could make active a day
    peak_per_s: float
    replicas: int
    busy_at_peak: float
    timeout_s: float
    throughput_per_s: float


def plan(a: Answers) -> Plan:
    """Popularity, serving replicas, timeout and batch throughput from the answers."""
    exponent = zipf_exponent_for(a.entities, a.requests_per_day, a.active_per_day)
    mean_per_s = a.requests_per_day / DAY_S
    amplitude = (a.peak - 1) / (a.peak + 1)
    peak_per_s = mean_per_s * (1 + amplitude)
    service = _service_time(a)
    load = peak_per_s * service.mean
    replicas = max(2, math.ceil(load / TARGET_UTILIZATION))
    return Plan(exponent=exponent,
                active_uniform=expected_active(a.entities, a.requests_per_day, 0.0),
                peak_per_s=peak_per_s, replicas=replicas, busy_at_peak=load / replicas,
                timeout_s=3 * a.slo_p99,
                throughput_per_s=a.entities / a.batch_duration)


def _service_time(a: Answers) -> Distribution:
    if a.latency_p99 == a.latency_p50:
        return Distribution.constant(a.latency_p50)
    return Distribution.lognormal(a.latency_p50, a.latency_p99)


def starter_yaml(a: Answers, filename: str = "scenario.yaml") -> str:
    """The text of a commented scenario comparing batch (as run today), online and streaming.

    The text is checked with the scenario validator before it is returned; a
    :class:`~sim.scenario.ScenarioError` means a combination of answers this function does not
    handle (a bug here, not in the answers).
    """
    p = plan(a)
    d = format_duration
    every, dur = d(a.batch_every), d(a.batch_duration)
    start_at = "2h" if a.batch_every >= DAY_S else None
    batch_features = (f"{{every: {every}{', start_at: ' + start_at if start_at else ''}, "
                      f"duration: {dur}}}")
    service = (f"{{lognormal: {{median: {d(a.latency_p50)}, p99: {d(a.latency_p99)}}}}}"
               if a.latency_p99 > a.latency_p50 else d(a.latency_p50))
    mean_per_s = a.requests_per_day / DAY_S
    line = _Lines()
    line(f"# {a.name}: the batch predictions you run today, compared with online and streaming")
    line("# prediction. Written by `predsim init` from your answers; every number is one of them")
    line("# or a default you accepted, and the comments say which are guesses. Replace guesses")
    line("# with measurements as you get them (docs/measuring-inputs.md).")
    line(f"# Read it back in sentences: predsim explain {filename}")
    line(f"# Compare the architectures: predsim run {filename}")
    line(f"name: {_scalar(a.name)}")
    line("horizon: 2d", "measured simulated time")
    line("warmup: 1d", "simulated first, not measured, so schedules and queues settle")
    line("seed: 1", "same seed, same numbers")
    line(f"slo: {{latency_p99: {d(a.slo_p99)}}}", "your target for the 99th percentile of latency")
    line()
    line("workload:")
    line(f"  entities: {_count_text(a.entities)}", "users or items the requests are about")
    line(f"  new_entities_per_day: {_count_text(a.new_per_day)}",
         "batch predictions miss new ones until the next run")
    if p.exponent is None:
        line("  popularity: uniform", f"spread evenly, {_count_text(a.requests_per_day)} "
             f"requests a day reach about {_count_text(_round3(p.active_uniform))} entities "
             f"(you said {_count_text(a.active_per_day)}): the most any spread can")
    else:
        line(f"  popularity: {{zipf: {p.exponent:g}}}",
             f"so that about {_count_text(a.active_per_day)} of them make a request on a day")
    line("  arrivals:")
    line(f"    rate: {_count_text(a.requests_per_day)}/day", f"{_rate_text(mean_per_s)} on average")
    if a.peak > 1:
        share = peak_hour_share(a.peak)
        line("    pattern: diurnal", "a daily cycle (use weekly for quieter weekends)")
        line(f"    peak_to_trough: {a.peak:.4g}",
             f"busiest hour: {share:.1%} of the day's requests; peak {_rate_text(p.peak_per_s)}")
        line("    peak_hour: 19", "hour of the daily peak: change it to yours")
    else:
        line("    pattern: constant", "the same rate all day")
    line()
    line("quality:")
    line(f"  metric: {_scalar(a.metric)}", "your metric")
    line(f"  fresh: {_number_text(a.fresh)}", "with fresh features and a just-trained model")
    line(f"  fallback: {_number_text(a.fallback)}", "with no prediction (the fallback)")
    stream_floor = a.fresh - (a.fresh - a.stale) / 4
    line("  features:", "what each class of features is worth; the losses add up")
    line("    batch:", "features materialised on a schedule")
    line(f"      staleness: {{exponential: {{half_life: {d(a.half_life)}, "
         f"floor: {_number_text(a.stale)}}}}}")
    line(f"      # ^ your guess: {a.metric} loses half of the way from {_number_text(a.fresh)} "
         f"to {_number_text(a.stale)} every {d(a.half_life)} of batch-feature age.")
    line("    stream:", "features from the last minutes of activity (streaming only)")
    line(f"      staleness: {{exponential: {{half_life: 30m, "
         f"floor: {_number_text(_round3(stream_floor))}}}}}")
    line("      # ^ an assumption, not your answer: stream features worth a quarter of the gap "
         "between")
    line("      #   fresh and stale, losing half of it every 30 minutes; without them (batch, "
         "online)")
    line(f"      #   {a.metric} is {_number_text(_round3(stream_floor))} on that account. "
         f"Replace it with your own.")
    line("  #   Measure both with a value-of-freshness experiment (docs/measuring-inputs.md).")
    line(f"  # model_staleness: {{linear: {{per_day: -0.0005, floor: {_number_text(a.stale)}}}}}")
    line("  #   ^ if the model itself gets worse as it ages: measure, then uncomment")
    line("# training: {every: 7d, duration: 2h, deploy_delay: 15m}   # your retraining, if any")
    line("# drift: [{at: 2d, quality_drop: 0.005}]   # a sudden shift that older models miss")
    line()
    line("costs:")
    line(f"  replica_hour: {_number_text(a.replica_hour)}", "US$ per serving replica per hour")
    line(f"  batch_node_hour: {_number_text(a.batch_node_hour)}",
         "US$ per node-hour of batch scoring and feature jobs")
    line(f"  stream_node_hour: {_number_text(a.stream_node_hour)}",
         "US$ per stream-processing node per hour")
    line("  # training_run: 25", "US$ per training run, with a training: section")
    line("business:")
    line(f"  value_per_outcome: {_number_text(a.value_per_outcome)}",
         "US$ per outcome (a click, a conversion...)")
    line("  # latency_penalty: {per_100ms: 0.01}   # share of value lost per 100 ms of waiting")
    line()
    line("architectures:")
    period = _period_text(a.batch_every)
    line("  batch:", f"what you run today: score every entity every {period}, read from a store")
    line("    kind: batch")
    line(f"    every: {every}")
    if start_at:
        line(f"    start_at: {start_at}", "at 02:00")
    line(f"    throughput: {p.throughput_per_s:.6g}/s",
         f"{_count_text(a.entities)} entities in {dur}")
    line("    lookup: {lognormal: {median: 2ms, p99: 10ms}}")
    line("    # ^ a guess for a key-value store read")
    for kind in ("online", "streaming"):
        line()
        if kind == "online":
            line("  online:", f"predict on request, with features materialised every {period}")
        else:
            line("  streaming:", "online, plus features from a stream processor")
        line(f"    kind: {kind}")
        if kind == "online":
            line(f"    features: {{batch: {batch_features}}}")
        else:
            line("    features:")
            line(f"      batch: {batch_features}")
            line("      stream: {lag: {exponential: {mean: 10s}}, window: 1m}")
            line("      # ^ a guess: features from the last minute, visible about 10s later")
        line("    serving:")
        line(f"      replicas: {p.replicas}",
             f"about {p.busy_at_peak:.0%} busy at the peak of {_rate_text(p.peak_per_s)}")
        line(f"      service_time: {service}")
        line("      # ^ your serving time per request (feature lookup + inference)")
        line(f"      timeout: {d(p.timeout_s)}", "slower requests get the fallback")
    text = line.text()
    scenario_from_dict(yaml.safe_load(text), label=filename)  # raises ScenarioError if not valid
    return text


__all__ = ["QUESTIONS", "Question", "Answers", "StarterError", "parse_answers", "starter_yaml",
           "plan", "Plan", "expected_active", "head_request_share", "zipf_exponent_for",
           "parse_peak", "peak_hour_share", "peak_to_trough_for_share"]
