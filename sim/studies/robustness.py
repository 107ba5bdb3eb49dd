"""How robust a comparison is: the traffic at which the decision flips (breakeven) and how much
each input moves the net-value difference (sensitivity).

Both re-run the simulator on shortened copies of the scenario (at most ``Analysis.horizon_s``
measured, ``Analysis.replications`` replications, only the two architectures compared), in
parallel processes when there are several runs. The manager's report
(:mod:`sim.report.manager_report`) shows them; they are studies, not rendering, so they live here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from sim.engine.run import simulate
from sim.studies.executors import LocalExecutor
from sim.scenario import Scenario, ScenarioError, scenario_from_dict
from sim.units import (DAY_S, format_duration, format_rate, format_usd, human_duration,
                       parse_duration, parse_rate, rate_text)

NET = "net_value_usd_per_day"
RATE_KEY = ("workload", "arrivals", "rate")

# --------------------------------------------------------------------------------------------
# Short analysis runs
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Analysis:
    """How breakeven and sensitivity re-run the simulator (short runs, on purpose)."""

    horizon_s: float = DAY_S          # cap on the measured time of each run
    replications: int = 1             # replications per run (architectures are paired anyway)
    breakeven_factor: float = 10.0    # search the rate over [rate / f, rate * f]
    breakeven_steps: int = 6          # bisection steps (log scale): f^(2^-steps) precision
    perturbation: float = 0.2         # one-at-a-time change of each input: +-20%
    top: int = 5                      # inputs drawn in the tornado chart
    breakeven: bool = True
    sensitivity: bool = True

    def describe(self, scenario: Scenario, pair: tuple[str, str]) -> str:
        horizon = min(self.horizon_s, scenario.horizon)
        shorter = (f"{human_duration(horizon)} measured (the comparison above: "
                   f"{human_duration(scenario.horizon)})" if horizon < scenario.horizon else
                   f"{human_duration(horizon)} measured, as above")
        return (f"Breakeven and sensitivity come from shorter runs, to keep the report quick: "
                f"{shorter}, after the same {human_duration(scenario.warmup)} warm-up, "
                f"{self.replications} replication{'s' if self.replications != 1 else ''} per run, "
                f"and only {pair[0]} and {pair[1]} simulated. Both architectures see the same "
                f"requests in each run, so their difference is much less noisy than either "
                f"number; still, read these sections for direction and ranking, not for exact "
                f"amounts.")


def analysis_scenario(scenario: Scenario, names: tuple[str, ...], horizon_s: float,
                      changes: dict[tuple, Any] | None = None) -> Scenario:
    """A copy of ``scenario`` with only ``names``, at most ``horizon_s`` measured, and
    ``changes`` (key path -> value in scenario-file form) applied. Raises ScenarioError."""
    data = scenario.to_yaml_dict()
    data["architectures"] = {n: data["architectures"][n] for n in names}
    if scenario.horizon > horizon_s:
        data["horizon"] = format_duration(horizon_s)
    for path, value in (changes or {}).items():
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return scenario_from_dict(data, label=f"{scenario.name} (analysis run)")


def net_difference(scenario: Scenario, architecture: str, baseline: str,
                   replications: int) -> float:
    """Mean over replications of net value per day, ``architecture`` minus ``baseline``."""
    diffs = []
    for r in range(replications):
        summary = simulate(scenario, replication=r).summary.set_index("architecture")
        diffs.append(float(summary.loc[architecture, NET] - summary.loc[baseline, NET]))
    return float(np.mean(diffs))


def _net_difference_task(args) -> float:
    return net_difference(*args)


class _Runner:
    """Runs batches of net-difference evaluations (in local processes when ``workers > 1``,
    :class:`sim.studies.executors.LocalExecutor`), counting them for the progress bar."""

    def __init__(self, workers: int, progress: Callable[[float], None] | None, planned: int):
        self.workers = workers
        self.progress = progress
        self.planned = max(planned, 1)
        self.done = 0
        self._executor = LocalExecutor(workers)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._executor.close()

    def map(self, tasks: list[tuple]) -> list[float]:
        return self._executor.map(_net_difference_task, [(t,) for t in tasks],
                                  lambda i: self._tick())

    def _tick(self):
        self.done += 1
        if self.progress is not None:
            self.progress(min(self.done / self.planned, 0.99))


# --------------------------------------------------------------------------------------------
# Breakeven
# --------------------------------------------------------------------------------------------

@dataclass
class Breakeven:
    """Where the decision between ``architecture`` and ``baseline`` flips as traffic changes."""

    architecture: str
    baseline: str
    current_per_s: float
    low_per_s: float
    high_per_s: float
    points: list[tuple[float, float]]          # (rate per s, net difference per day)
    flips: list[tuple[float, str, str]]        # (rate per s, better below, better above)
    active_share: dict[float, float] = field(default_factory=dict)   # rate -> share active
    replicas_scaled: bool = False

    @property
    def flip_per_s(self) -> float | None:
        """The flip nearest to today's rate, if any."""
        if not self.flips:
            return None
        return min(self.flips, key=lambda f: abs(math.log(f[0] / self.current_per_s)))[0]

    def sentences(self) -> list[str]:
        out = []
        if not self.flips:
            d = dict(self.points).get(self.current_per_s, float("nan"))
            ahead = self.architecture if d > 0 else self.baseline
            behind = self.baseline if ahead == self.architecture else self.architecture
            out.append(f"No flip between {rate_text(self.low_per_s)} and "
                       f"{rate_text(self.high_per_s)}: {ahead} has the higher net value than "
                       f"{behind} over the whole range (today: {rate_text(self.current_per_s)}).")
        for rate, below, above in sorted(self.flips):
            factor = rate / self.current_per_s
            out.append(f"The decision flips at about {rate_text(rate)}, {factor:.2g}x today's "
                       f"{format_rate(self.current_per_s)}: below it {below} has the higher net "
                       f"value, above it {above}.")
        if self.active_share:
            now = self.active_share.get(self.current_per_s)
            text = (f"Stored predictions are made for every entity, but only the active ones use "
                    f"them: at today's traffic about {now * 100:.2g}% of entities make a request "
                    f"on a given day")
            flip = self.flip_per_s
            if flip is not None and flip in self.active_share:
                text += f", at the flip about {self.active_share[flip] * 100:.2g}%"
            out.append(text + ".")
        if self.replicas_scaled:
            out.append("Serving replicas are scaled with traffic (rounded up), so that each "
                       "architecture stays about as busy as in the scenario.")
        return out


def active_share(scenario: Scenario, rate_per_s: float) -> float:
    """Expected share of entities with at least one request in a day at ``rate_per_s``.

    With ``R`` requests a day spread over ``N`` entities by the popularity law ``p_k``
    (Zipf: ``p_k ~ (k + 1)^-s``), entity ``k`` is active with probability ``1 - exp(-R p_k)``
    (Poisson); the share is the mean over entities. New entities are ignored.
    """
    workload = scenario.workload
    n = int(workload.entities)
    requests = rate_per_s * DAY_S
    if workload.popularity.kind == "uniform" or workload.popularity.exponent == 0:
        return float(-np.expm1(-requests / n))
    s = workload.popularity.exponent
    chunk = 1 << 21
    norm = 0.0
    for start in range(0, n, chunk):
        k = np.arange(start + 1, min(n, start + chunk) + 1, dtype=float)
        norm += float(np.sum(k ** -s))
    active = 0.0
    for start in range(0, n, chunk):
        k = np.arange(start + 1, min(n, start + chunk) + 1, dtype=float)
        active += float(np.sum(-np.expm1(-requests * k ** -s / norm)))
    return active / n


def _rate_changes(scenario: Scenario, pair: tuple[str, str], rate_per_s: float) -> dict:
    """The key changes that set the arrival rate, with serving replicas scaled alike."""
    factor = rate_per_s / scenario.workload.arrivals.rate
    changes: dict[tuple, Any] = {RATE_KEY: format_rate(rate_per_s)}
    for name in pair:
        spec = scenario.architectures[name]
        serving = getattr(spec, "serving", None)
        if serving is not None:
            changes[("architectures", name, "serving", "replicas")] = max(
                1, math.ceil(serving.replicas * factor - 1e-9))
    return changes


def breakeven(scenario: Scenario, architecture: str, baseline: str, analysis: Analysis,
              runner: _Runner) -> Breakeven:
    """Bisect the arrival rate (log scale) for a sign change of the net-value difference."""
    pair = (architecture, baseline)
    current = scenario.workload.arrivals.rate
    low, high = current / analysis.breakeven_factor, current * analysis.breakeven_factor

    def task(rate):
        spec = analysis_scenario(scenario, pair, analysis.horizon_s,
                                 _rate_changes(scenario, pair, rate))
        return (spec, architecture, baseline, analysis.replications)

    rates = [current, low, high]
    values = runner.map([task(r) for r in rates])
    points = dict(zip(rates, values))
    flips = []
    for end in (low, high):
        if np.sign(points[end]) == np.sign(points[current]) or points[end] == 0:
            continue
        a, b = current, end   # the sign changes between a and b
        for _ in range(analysis.breakeven_steps):
            mid = math.sqrt(a * b)
            value = runner.map([task(mid)])[0]
            points[mid] = value
            if np.sign(value) == np.sign(points[a]):
                a = mid
            else:
                b = mid
        flip = math.sqrt(a * b)
        lo_rate, hi_rate = min(a, b), max(a, b)
        better = lambda r: architecture if points[r] > 0 else baseline  # noqa: E731
        flips.append((flip, better(lo_rate), better(hi_rate)))
    from sim.engine.architectures.registry import kind_of
    uses_store = any(kind_of(scenario.architectures[n]).stores_predictions for n in pair)
    shares = {}
    if uses_store:
        shares[current] = active_share(scenario, current)
        for flip, _, _ in flips:
            shares[flip] = active_share(scenario, flip)
    scaled = any(getattr(scenario.architectures[n], "serving", None) is not None for n in pair)
    return Breakeven(architecture, baseline, current, low, high, sorted(points.items()), flips,
                     shares, scaled)


# --------------------------------------------------------------------------------------------
# Sensitivity
# --------------------------------------------------------------------------------------------

# Keys that are not magnitudes (instants, labels, settings of the run) or not worth perturbing.
_SKIP_TOP = {"name", "description", "horizon", "warmup", "seed", "timeseries_bucket", "slo"}
_SKIP_KEYS = {"kind", "start_at", "peak_hour", "at", "pattern", "metric", "table", "min", "max",
              "max_batch", "tolerance"}
_DISTRIBUTIONS = {"lookup", "feature_lookup", "service_time", "lag", "fixed", "per_item"}
_DISTRIBUTION_KINDS = {"constant", "exponential", "lognormal", "gamma", "empirical"}


def _is_distribution(key, node) -> bool:
    """A distribution in scenario-file form: under a key known to hold one, or a mapping such
    as ``{lognormal: {median, p99}}`` (not a quality curve ``{exponential: {half_life, floor}}``)."""
    if key in _DISTRIBUTIONS:
        return True
    if not (isinstance(node, dict) and len(node) == 1):
        return False
    (kind, params), = node.items()
    return kind in _DISTRIBUTION_KINDS and (
        not isinstance(params, dict) or set(params) <= {"mean", "median", "p99", "cv"})
_RATES = {"rate", "throughput"}
_INTEGERS = {"nodes", "replicas", "entities"}


@dataclass
class Input:
    """One numeric input of a scenario, with its key path and its value as written."""

    path: tuple
    value: Any

    @property
    def label(self) -> str:
        return _key_label(self.path[1:] if self.path[0] == "architectures" else self.path)

    def scaled(self, factor: float) -> Any:
        """The value times ``factor``, in scenario-file form; None if unchanged or invalid."""
        key, value = self.path[-1], self.value
        if _is_distribution(key, value):
            return _scale_distribution(value, factor)
        if key in _INTEGERS:
            return self._integer(factor)
        if isinstance(value, (int, float)):
            return float(value) * factor
        if key in _RATES:
            return format_rate(parse_rate(value) * factor)
        return format_duration(parse_duration(value) * factor)

    def _integer(self, factor: float) -> int | None:
        v = int(round(float(self.value)))
        new = int(round(v * factor))
        if new == v:  # small counts: move by one instead
            new = v + (1 if factor > 1 else -1)
        return new if new >= 1 else None

    def show(self, value: Any) -> str:
        if isinstance(value, dict):
            return _compact(_readable(value))
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)


def _readable(value: Any) -> Any:
    """A distribution's durations to 3 significant digits for people (a perturbed 0.16 s is
    160ms, not 0.16000000000000003s)."""
    if isinstance(value, dict):
        return {k: _readable(v) for k, v in value.items()}
    if isinstance(value, str):
        try:
            return human_duration(parse_duration(value))
        except ValueError:
            return value
    return value


def _key_label(path: tuple) -> str:
    """``('drift', 0, 'quality_drop')`` -> ``drift[0].quality_drop``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _scale_distribution(value: Any, factor: float) -> Any:
    if isinstance(value, dict):
        if "empirical" in value:
            return None
        return {k: (v if k == "cv" else _scale_distribution(v, factor)) for k, v in value.items()}
    if isinstance(value, (int, float)):
        return value * factor if value else None
    return format_duration(parse_duration(value) * factor)


def numeric_inputs(scenario: Scenario, names: tuple[str, ...]) -> list[Input]:
    """The inputs the sensitivity perturbs: numbers, durations, rates and distributions of the
    shared sections and of the architectures ``names`` (zeros and instants left out)."""
    data = scenario.to_yaml_dict()
    out: list[Input] = []

    def walk(node, path):
        key = path[-1] if path else None
        if key in _SKIP_KEYS:
            return
        if _is_distribution(key, node):
            if not _is_zero(node) and not (isinstance(node, dict) and "empirical" in node):
                out.append(Input(path, node))
            return
        if isinstance(node, dict):
            for k, v in node.items():
                if not path and k in _SKIP_TOP:
                    continue
                if path == ("architectures",) and k not in names:
                    continue
                if path[-2:] == ("workload", "arrivals") and k == "weekend_factor" and \
                        node.get("pattern") != "weekly":
                    continue
                walk(v, path + (k,))
            return
        if isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, path + (i,))
            return
        if isinstance(node, bool) or node is None:
            return
        if isinstance(node, (int, float)):
            if node != 0:
                out.append(Input(path, node))
            return
        if isinstance(node, str):
            try:
                seconds = parse_rate(node) if key in _RATES else parse_duration(node)
            except ValueError:
                return
            if seconds != 0:
                out.append(Input(path, node))

    walk(data, ())
    return out


def _is_zero(value) -> bool:
    if isinstance(value, (int, float)):
        return value == 0
    if isinstance(value, str):
        try:
            return parse_duration(value) == 0
        except ValueError:
            return False
    return False


@dataclass
class Sensitivity:
    """One-at-a-time sensitivity of the net-value difference (``architecture`` - ``baseline``)."""

    architecture: str
    baseline: str
    base_usd: float          # the difference at the scenario's values (short runs)
    perturbation: float
    frame: pd.DataFrame      # every input tested, most influential first
    top: int = 5

    @property
    def top_frame(self) -> pd.DataFrame:
        return self.frame.head(self.top)

    def sentences(self) -> list[str]:
        if self.frame.empty:
            return ["No numeric input could be perturbed."]
        first = self.frame.iloc[0]
        base_sign = np.sign(self.base_usd)
        reverses = np.zeros(len(self.frame), dtype=bool)
        for side in ("low_usd", "high_usd"):
            values = self.frame[side]
            reverses |= (values.notna() & (np.sign(values) != base_sign)).to_numpy()
        flips = self.frame[reverses]
        out = [f"Each of {len(self.frame)} numeric inputs was moved by "
               f"±{self.perturbation * 100:.0f}% (whole numbers by at least one) with the others "
               f"held; net value of {self.architecture} minus {self.baseline} is "
               f"{format_usd(self.base_usd, sign=True)}/day at the scenario's values (short runs). "
               f"The most influential input is {first['label']}: it moves the difference by up "
               f"to {format_usd(first['effect_usd'])}/day."]
        if flips.empty:
            out.append("No single change of this size reverses the decision.")
        else:
            names = ", ".join(flips["label"].head(5))
            out.append(f"These changes alone reverse the decision: {names}. Check those "
                       f"inputs first.")
        schedules = [label for label in self.top_frame["label"]
                     if label.endswith(("every", "duration", "deploy_delay"))]
        if schedules:
            out.append(f"Changing a schedule ({', '.join(schedules)}) also moves when its jobs "
                       f"run relative to the daily peak and to each other (a model deployed "
                       f"after the nightly job reaches stored predictions a day later); in a "
                       f"short run that timing can matter as much as the change itself, so "
                       f"confirm with a full-length `predsim run --set KEY=VALUE`.")
        return out


def sensitivity(scenario: Scenario, architecture: str, baseline: str, analysis: Analysis,
                runner: _Runner, inputs: list[Input] | None = None) -> Sensitivity:
    """Perturb every numeric input by +-``analysis.perturbation`` and rank by effect."""
    pair = (architecture, baseline)
    inputs = numeric_inputs(scenario, pair) if inputs is None else inputs
    base_task = (analysis_scenario(scenario, pair, analysis.horizon_s), architecture, baseline,
                 analysis.replications)
    tasks, slots = [base_task], []
    for item in inputs:
        for side, factor in (("low", 1 - analysis.perturbation),
                             ("high", 1 + analysis.perturbation)):
            value = item.scaled(factor)
            if value is None:
                continue
            try:
                spec = analysis_scenario(scenario, pair, analysis.horizon_s, {item.path: value})
            except ScenarioError:
                continue   # outside what the scenario allows (e.g. fallback above fresh)
            slots.append((item, side, value))
            tasks.append((spec, architecture, baseline, analysis.replications))
    values = runner.map(tasks)
    base = values[0]
    rows: dict[str, dict] = {}
    for (item, side, value), result in zip(slots, values[1:]):
        row = rows.setdefault(item.label, {
            "label": item.label, "value": item.show(item.value), "low_label": "",
            "high_label": "", "low_usd": float("nan"), "high_usd": float("nan")})
        row[f"{side}_label"] = item.show(value)
        row[f"{side}_usd"] = result
    frame = pd.DataFrame(list(rows.values()), columns=["label", "value", "low_label",
                                                       "high_label", "low_usd", "high_usd"])
    frame["effect_usd"] = np.nanmax(np.abs(frame[["low_usd", "high_usd"]].to_numpy(float) - base),
                                    axis=1) if len(frame) else []
    frame = frame.sort_values("effect_usd", ascending=False, kind="stable").reset_index(drop=True)
    return Sensitivity(architecture, baseline, base, analysis.perturbation, frame, analysis.top)


def _compact(value: Any) -> str:
    """A scenario value on one line, in YAML flow style."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_compact(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_compact(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
