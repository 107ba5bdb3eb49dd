"""Search: the best configuration meeting constraints, and the capacity of a configuration.

:func:`optimize` varies scenario keys within ranges (whole-number knobs such as replicas, and
continuous ones such as a batch interval) to minimise or maximise one metric subject to
constraints on others, e.g. the cheapest configuration with ``latency_p99 <= 100ms`` and
``quality >= 0.047``. It needs far fewer simulations than a full grid:

- ``bisect`` (the default for a single knob): the constraints are taken to switch from unmet to
  met once along the range (as p99 latency against replicas). Both ends are simulated, then the
  boundary is found by bisection; the answer is the better (by the objective) of the boundary
  and the feasible end. About ``2 + log2(range)`` configurations.
- ``pattern`` (the default for several knobs): a compass search. A small Latin-hypercube design
  picks the start; then each knob is moved up and down by a step, the best move is taken, and
  when none improves every step is halved, down to one unit for whole-number knobs and
  ``tolerance`` of the range for continuous ones. Comparisons follow Deb's rules: a
  configuration meeting the constraints beats one that does not; two that meet them compare by
  the objective; two that do not, by how far they miss (relative to each bound, summed).

:func:`capacity` finds the highest arrival rate (``workload.arrivals.rate``) at which an
architecture still meets its SLO (``slo.latency_p99``, or any constraints), by bracketing and
bisection on the rate, as serving simulators do.

Both judge a constraint where it binds (``window``, :func:`judged_window`, in
:mod:`sim.studies.windows`). By default
(``peak``) the load metrics (latency, queue wait, SLO violations, timeouts, coverage,
utilization) are judged over the busiest hour of the arrivals: a diurnal pattern's peak hour, a
weekly pattern's busiest weekday's, an hourly profile's busiest hour, the hour around a burst
above them, or a replayed log's busiest hour. That hour is made the measured window of its own
run (the warm-up is everything before it, an hour at least), and the other metrics (cost, value,
quality, ages) are taken from a run over the scenario's own window when the objective or a
constraint needs them. ``day`` judges every metric over whole days; ``horizon`` over the
scenario's window as given, with a warning when that leaves out the busiest hour. So the rate
:func:`capacity` reports is the mean rate (what ``arrivals.rate`` means) at which the busiest
hour still meets the constraints.

Every configuration is simulated over ``replications`` and a constraint is judged on the mean;
the CIs are reported next to it. By default all configurations share the scenario's seed
(common random numbers), so two configurations are compared on the same requests and a
bisection sees a smooth, consistent function.

Metric names (:data:`ALIASES`): ``cost_per_day`` (``cost_usd_per_day``), ``value_per_day``,
``net_value_per_day``, ``latency_mean|p50|p95|p99`` (ms), ``queue_wait_mean|p99`` (ms),
``feature_age_mean|p50|p95`` (s), ``model_age_mean`` (s), ``quality`` (``quality_mean``; the
scenario's metric name, e.g. ``ctr``, works too), ``coverage``, ``slo_violation_rate``,
``timeout_rate``, ``wasted_prediction_rate``, ``utilization``, ``offered_load``, and any summary
column by its own name. Bounds carry units: ``100ms`` or ``0.1s`` for latencies (a bare number is
in the column's unit), ``$50`` for money, ``99%`` for shares. The names, units and which metrics
depend on the load come from the metric catalogue (``sim/results/catalogue.py``).
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from sim.results import catalogue
from sim.scenario import Scenario
from sim.studies.executors import make_executor
from sim.studies.designs import Knob, Point, random_unit
from sim.studies.sweep import Template, simulate_points
from sim.studies.windows import (JudgedWindow, SearchError, _show_rate, is_load_metric,
                                 judged_window, span_text)
from sim.units import format_duration, parse_duration

RATE_KEY = "workload.arrivals.rate"

# Short metric names -> summary columns (latency_p99 -> latency_ms_p99), from the catalogue.
ALIASES = catalogue.aliases()
# The numeric summary columns (sim/results/results.py: collect) a metric may name: every one.
COLUMNS = frozenset(catalogue.COLUMNS)


# --------------------------------------------------------------------------------------------
# Metrics, objectives and constraints
# --------------------------------------------------------------------------------------------

def resolve_metric(name: str, scenario: Scenario | None = None, option: str = "--objective"
                   ) -> str:
    """A metric name as written (``latency_p99``, ``ctr``) -> its summary column."""
    name = name.strip()
    if scenario is not None and name == scenario.quality.metric and name not in ALIASES:
        return "quality_mean"
    column = ALIASES.get(name, name)
    if column not in COLUMNS:
        import difflib
        close = difflib.get_close_matches(name, list(ALIASES) + sorted(COLUMNS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        known = sorted(set(ALIASES) | {c for c in COLUMNS if c not in ALIASES.values()})
        raise SearchError(f"{option}: unknown metric {name!r}{hint}; use one of "
                          f"{', '.join(known)}, or a summary column name")
    return column


def _unit(column: str) -> str:
    """How a bound on ``column`` is read: ``ms``, ``s`` (durations), ``usd`` or ``""``."""
    return {"ms": "ms", "s": "s", "usd_per_day": "usd"}.get(catalogue.unit(column) or "", "")


def parse_bound(text: str, column: str, option: str) -> float:
    """A bound in the column's unit: ``100ms`` -> 100 for a ``*_ms_*`` column, ``$50`` -> 50,
    ``99%`` -> 0.99; a bare number is taken in the column's unit."""
    text = text.strip()
    unit = _unit(column)
    try:
        if unit in ("ms", "s"):
            if re.fullmatch(r"[-+]?[\d.eE+-]+", text):
                return float(text)
            seconds = parse_duration(text)
            return seconds * 1e3 if unit == "ms" else seconds
        if unit == "usd":
            cleaned = text.replace("$", "").replace(",", "")
            cleaned = re.sub(r"/\s*day$", "", cleaned).strip()
            return float(cleaned)
        if text.endswith("%"):
            return float(text[:-1]) / 100
        return float(text)
    except ValueError:
        expected = {"ms": "a duration such as 100ms (or a number of ms)",
                    "s": "a duration such as 6h (or a number of seconds)",
                    "usd": "an amount such as 50 or $50", "": "a number such as 0.047 or 99%"}
        raise SearchError(f"{option}: expected {expected[unit]} after the operator "
                          f"(got {text!r})") from None


@dataclass(frozen=True)
class Objective:
    """``min`` or ``max`` of a summary column."""

    sense: str
    metric: str
    column: str

    @classmethod
    def parse(cls, text: str, scenario: Scenario | None = None) -> "Objective":
        sense, sep, metric = text.partition(":")
        if not sep or sense.strip() not in ("min", "max") or not metric.strip():
            raise SearchError(f"--objective {text!r}: expected min:METRIC or max:METRIC, e.g. "
                              f"min:cost_per_day or max:net_value_per_day")
        return cls(sense.strip(), metric.strip(),
                   resolve_metric(metric, scenario, f"--objective {text!r}"))

    def score(self, row: Mapping) -> float:
        """Lower is better (the maximised metric is negated); NaN counts as the worst."""
        value = float(row.get(self.column, math.nan))
        if math.isnan(value):
            return math.inf
        return value if self.sense == "min" else -value

    def __str__(self):
        return f"{self.sense}:{self.metric}"


_CONSTRAINT_RE = re.compile(r"^\s*([A-Za-z][\w.]*)\s*(<=|>=|<|>)\s*(\S.*?)\s*$")


@dataclass(frozen=True)
class Constraint:
    """``metric op bound`` with the bound in the column's unit."""

    metric: str
    column: str
    op: str
    bound: float
    text: str

    @classmethod
    def parse(cls, text: str, scenario: Scenario | None = None,
              option: str = "--constraint") -> "Constraint":
        match = _CONSTRAINT_RE.match(text)
        if not match:
            raise SearchError(f"{option} {text!r}: expected METRIC<=BOUND or METRIC>=BOUND, e.g. "
                              f"latency_p99<=100ms or quality>=0.047")
        metric, op, bound = match.groups()
        column = resolve_metric(metric, scenario, f"{option} {text!r}")
        return cls(metric, column, op, parse_bound(bound, column, f"{option} {text!r}"),
                   text.strip())

    def value(self, row: Mapping) -> float:
        return float(row.get(self.column, math.nan))

    def violation(self, row: Mapping) -> float:
        """0 when met; else how far it is missed, relative to the bound (inf for NaN)."""
        x = self.value(row)
        if math.isnan(x):
            return math.inf
        scale = abs(self.bound) or 1.0
        if self.op in ("<=", "<"):
            missed = x > self.bound if self.op == "<=" else x >= self.bound
            return (x - self.bound) / scale if missed else 0.0
        missed = x < self.bound if self.op == ">=" else x <= self.bound
        return (self.bound - x) / scale if missed else 0.0

    def __str__(self):
        return self.text


def slo_constraint(scenario: Scenario) -> Constraint:
    """``latency_p99 <= slo.latency_p99`` of the scenario."""
    slo = scenario.slo.latency_p99
    if not slo:
        raise SearchError("the scenario has no slo.latency_p99; add one (slo: {latency_p99: "
                          "100ms}) or give --constraint, e.g. latency_p99<=100ms")
    return Constraint("latency_p99", "latency_ms_p99", "<=", slo * 1e3,
                      f"latency_p99<={format_duration(slo)}")


# --------------------------------------------------------------------------------------------
# Evaluations
# --------------------------------------------------------------------------------------------

@dataclass
class Evaluation:
    """One configuration, simulated: the architecture's summary row (means and ``*_ci95``)."""

    values: dict
    row: dict
    objective: float
    violations: list[float]
    order: int
    key: str
    notes: list[str] = field(default_factory=list)
    window: "JudgedWindow | None" = None  # where its load metrics were judged
    runs: int = 1  # simulated over one window, or two (busiest hour, scenario's window)

    @property
    def feasible(self) -> bool:
        return all(v == 0 for v in self.violations)

    @property
    def violation(self) -> float:
        return float(sum(self.violations))

    def rank(self) -> tuple:
        """Deb's rules: feasible first, by objective; infeasible by total violation."""
        return ((0, self.objective, self.key) if self.feasible
                else (1, self.violation, self.key))


class Problem:
    """Simulates configurations of one architecture, caching each by its point.

    With ``window`` other than ``horizon``, the metrics are judged where :func:`judged_window`
    says: for ``peak`` the load metrics (:func:`is_load_metric`) over the busiest hour, in a run
    whose warm-up and horizon are set to it, and the others (cost, value, quality, ages) over
    the scenario's own window, in a second run when the objective or a constraint needs them;
    for ``day`` every metric over whole days.
    """

    def __init__(self, template: Template, arch: str, objective: Objective | None,
                 constraints: Sequence[Constraint], replications: int, executor,
                 common_random_numbers: bool = True,
                 on_evaluation: Callable[[Evaluation], None] | None = None,
                 window: str = "horizon"):
        self.template, self.arch = template, arch
        self.objective, self.constraints = objective, list(constraints)
        self.replications, self.executor = replications, executor
        self.common_random_numbers = common_random_numbers
        self.on_evaluation = on_evaluation
        self.window = window
        self.cache: dict[str, Evaluation] = {}
        self.notes: list[str] = []
        columns = [c.column for c in self.constraints]
        if objective is not None:
            columns.append(objective.column)
        self.needs_load = any(is_load_metric(c) for c in columns)
        self.needs_other = any(not is_load_metric(c) for c in columns)

    @property
    def evaluations(self) -> list[Evaluation]:
        return sorted(self.cache.values(), key=lambda e: e.order)

    def judged(self, values: Mapping[str, Any]) -> JudgedWindow:
        """Where the configuration ``values`` is judged."""
        return judged_window(self.template.build(values), self.window)

    def _runs(self, point: Point) -> tuple[JudgedWindow, list[tuple[str, Point]]]:
        """The window and the runs (role, point) a configuration needs: ``all`` (every metric
        from one run), or ``load`` and ``other``."""
        judged = self.judged(point.values)
        if judged.is_scenario_window:
            return judged, [("all", point)]
        windowed = Point({**point.values, **judged.overrides})
        if self.window == "day" or not self.needs_other:
            return judged, [("all", windowed)]
        if not self.needs_load:
            return judged, [("all", point)]
        return judged, [("load", windowed), ("other", point)]

    def evaluate(self, configurations: Iterable[Mapping[str, Any]]) -> list[Evaluation]:
        """Each configuration's evaluation (the new ones simulated together)."""
        points = [Point(c) for c in configurations]
        new = list({p.key: p for p in points if p.key not in self.cache}.values())
        if new:
            plans = {p.key: self._runs(p) for p in new}
            runs = list({run.key: run for _, plan in plans.values() for _, run in plan}.values())
            finished = {}
            for result in simulate_points(self.template, runs, self.replications, self.executor,
                                          common_random_numbers=self.common_random_numbers):
                finished[result.point.key] = result
            for point in new:  # in a fixed order, whatever order they finished in
                judged, plan = plans[point.key]
                rows, notes = {}, []
                for role, run in plan:
                    result = finished[run.key]
                    table = result.summary.set_index("architecture", drop=False)
                    rows[role] = {k: (v.item() if hasattr(v, "item") else v)
                                  for k, v in table.loc[self.arch].to_dict().items()}
                    notes += [n for n in result.notes
                              if n.startswith(f"{self.arch}:") and n not in notes]
                row = rows.get("all") or {
                    **rows["other"],
                    **{k: v for k, v in rows["load"].items() if is_load_metric(k)}}
                evaluation = Evaluation(
                    dict(point.values), row,
                    self.objective.score(row) if self.objective else 0.0,
                    [c.violation(row) for c in self.constraints], len(self.cache), point.key,
                    notes, judged, len(plan))
                self.cache[point.key] = evaluation
                if self.on_evaluation is not None:
                    self.on_evaluation(evaluation)
        return [self.cache[p.key] for p in points]

    def window_lines(self, evaluation: Evaluation | None) -> list[str]:
        """Where ``evaluation``'s metrics were judged, and a warning when the load metrics were
        judged away from the busiest hour of the arrivals."""
        judged = (evaluation.window if evaluation is not None and evaluation.window is not None
                  else judged_window(self.template.scenario, self.window))
        named = [(c.metric, c.column) for c in self.constraints]
        if self.objective is not None:
            named.insert(0, (self.objective.metric, self.objective.column))
        load = ", ".join(dict.fromkeys(m for m, c in named if is_load_metric(c)))
        other = ", ".join(dict.fromkeys(m for m, c in named if not is_load_metric(c)))
        if judged.mode == "peak" and not judged.is_scenario_window:
            own = span_text(*judged.scenario_window, judged.busiest.weekly)
            if not load:
                return [f"Judged over the scenario's measured window, {own} (--window peak "
                        f"judges only latency and queueing metrics over the busiest hour)."]
            if other:
                return [f"Judged {load} over {judged.text}; {other} over the scenario's "
                        f"measured window, {own}."]
            return [f"Judged over {judged.text}."]
        out = [f"Judged over {judged.text}."]
        warning = judged.warning() if load and judged.mode != "peak" else None
        if warning is not None:
            out.append(warning)
        return out


def _best(evaluations: Iterable[Evaluation]) -> Evaluation:
    return min(evaluations, key=Evaluation.rank)


def _infer_arch(scenario: Scenario, keys: Iterable[str], arch: str | None) -> str:
    names = list(scenario.architectures)
    if arch is not None:
        if arch not in scenario.architectures:
            raise SearchError(f"--arch {arch!r}: not an architecture of this scenario (choose "
                              f"from {', '.join(names)})")
        return arch
    named = {k.split(".")[1] for k in keys if k.startswith("architectures.") and
             len(k.split(".")) > 2}
    if len(named) == 1 and next(iter(named)) in scenario.architectures:
        return next(iter(named))
    if len(names) == 1:
        return names[0]
    raise SearchError(f"--arch: give the architecture to judge (one of {', '.join(names)})")


# --------------------------------------------------------------------------------------------
# optimize
# --------------------------------------------------------------------------------------------

@dataclass
class SearchResult:
    """The outcome of :func:`optimize`."""

    arch: str
    knobs: list[Knob]
    objective: Objective
    constraints: list[Constraint]
    method: str
    replications: int
    evaluations: list[Evaluation]
    best: Evaluation | None
    notes: list[str] = field(default_factory=list)
    window: str = "horizon"
    judged: list[str] = field(default_factory=list)  # where the metrics were judged
    chosen: dict = field(default_factory=dict)  # the --choose values of the best, by key
    others: list = field(default_factory=list)  # (choice text, best evaluation) of the rest

    @property
    def feasible(self) -> bool:
        return self.best is not None and self.best.feasible

    @property
    def simulations(self) -> int:
        """Simulations run: configurations evaluated x replications (x 2 for those judged
        over two windows)."""
        return _simulations(self.evaluations, self.replications)

    @property
    def grid_configurations(self) -> int | None:
        """Configurations in the full grid (whole-number knobs only; None otherwise)."""
        sizes = [k.size for k in self.knobs]
        return math.prod(sizes) if all(s is not None for s in sizes) else None

    @property
    def values(self) -> dict:
        return dict(self.best.values) if self.best else {}

    def lines(self) -> list[str]:
        """The answer as a person reads it."""
        knobs = {k.key: k for k in self.knobs}
        goal = (f"{'lowest' if self.objective.sense == 'min' else 'highest'} "
                f"{self.objective.metric}")
        meeting = (f" meeting {', '.join(str(c) for c in self.constraints)}"
                   if self.constraints else "")
        out = []
        if self.best is None:
            out.append("No configuration was simulated.")
        elif self.best.feasible:
            out.append(f"{self.arch}: the configuration with the {goal}{meeting}:")
        else:
            missed = ", ".join(map(str, self.constraints))
            out.append(f"{self.arch}: no configuration tried meets {missed}; the closest:")
        if self.best is not None:
            for key, value in self.chosen.items():
                out.append(f"  {key} = {'none' if value is None else value}  (chosen)")
            for key, value in self.best.values.items():
                out.append(f"  {key} = {knobs[key].show(value) if key in knobs else value}")
            objective = self.objective
            out.append(f"  {_metric_line(self.best.row, objective.metric, objective.column)}")
            for c in self.constraints:
                ok = c.violation(self.best.row) == 0
                out.append(f"  {_metric_line(self.best.row, c.metric, c.column)}  "
                           f"{'meets' if ok else 'MISSES'} {c}")
        grid = self.grid_configurations
        windows = max([e.runs for e in self.evaluations] or [1])
        full = (f"; the full grid would need {grid:,} configurations, "
                f"{grid * self.replications * windows:,} simulations" if grid else "")
        out.extend(self.judged)
        for text, other in self.others:
            if other is None:
                continue
            verdict = "meets the constraints" if other.feasible else "misses a constraint"
            value = float(other.row.get(self.objective.column, math.nan))
            out.append(f"  with {text}: best {self.objective.metric} {_number(value)} "
                       f"({verdict})")
        out.append(f"Found by {_METHOD_WORDS[self.method]} with {len(self.evaluations)} "
                   f"configurations x {self.replications} replications"
                   f"{_windows_text(self.evaluations)} = {self.simulations} simulations{full}.")
        out.extend(self.notes)
        return out


def _simulations(evaluations: Sequence[Evaluation], replications: int) -> int:
    return sum(e.runs for e in evaluations) * replications


def _windows_text(evaluations: Sequence[Evaluation]) -> str:
    """' x 2 windows' when every configuration was simulated over two windows."""
    runs = {e.runs for e in evaluations}
    if runs == {2}:
        return " x 2 windows"
    return " (some over 2 windows)" if 2 in runs else ""


_METHOD_WORDS = {"bisect": "bisection", "pattern": "pattern (compass) search"}


def _metric_line(row: Mapping, metric: str, column: str) -> str:
    value = float(row.get(column, math.nan))
    ci = float(row.get(f"{column}_ci95", math.nan))
    unit = {"ms": " ms", "s": " s", "usd": " $/day"}.get(_unit(column), "")
    text = f"{metric} {_number(value)}"
    if not math.isnan(ci):
        text += f" ± {_number(ci, 2)}"
    return text + unit


def _number(x: float, digits: int = 4) -> str:
    """1234.5 -> '1,234' (large numbers whole, with separators), 0.04886 -> '0.04886'."""
    if math.isfinite(x) and abs(x) >= 10 ** (digits - 1):
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def optimize(scenario: Scenario | Template | str | Path,
             vary: Sequence[Knob | str] | Mapping[str, tuple],
             objective: Objective | str = "min:cost_per_day",
             constraints: Sequence[Constraint | str] = (), *, arch: str | None = None,
             replications: int = 3, method: str = "auto", tolerance: float = 0.01,
             max_evaluations: int = 60, workers: int | None = 1, dask: str | None = None,
             executor=None, common_random_numbers: bool = True,
             overrides: Iterable[str] | Mapping[str, Any] = (), seed: int | None = None,
             on_evaluation: Callable[[Evaluation], None] | None = None,
             window: str = "peak",
             choose: Mapping[str, Sequence] | Sequence[str] = ()) -> SearchResult:
    """The configuration of ``arch`` within the ``vary`` ranges that minimises (or maximises)
    ``objective`` subject to ``constraints`` (see the module docstring for the methods).
    ``window`` says where they are judged (:func:`judged_window`): by default the latency and
    queueing metrics over the busiest hour of the arrivals, the others over the scenario's
    window. ``choose`` adds keys with a few values each (``"architectures.online.variant=
    none,int8,distilled"``; ``none`` is no value): the search runs once per combination and
    the best feasible result wins.

    >>> optimize(scenario, ["architectures.online.serving.replicas=1:32"],
    ...          "min:cost_per_day", ["latency_p99<=100ms"])
    """
    combos = _choices(choose)
    if combos:
        kwargs = dict(objective=objective, constraints=constraints, arch=arch,
                      replications=replications, method=method, tolerance=tolerance,
                      max_evaluations=max_evaluations, workers=workers, dask=dask,
                      executor=executor, common_random_numbers=common_random_numbers,
                      seed=seed, on_evaluation=on_evaluation, window=window)
        results = []
        for combo in combos:
            if isinstance(overrides, Mapping):
                values = {**overrides, **combo}
            else:
                values = [*overrides, *(f"{k}={'null' if v is None else v}"
                                        for k, v in combo.items())]
            results.append((combo, optimize(scenario, vary, overrides=values, **kwargs)))
        best_combo, best = min(results, key=lambda r: r[1].best.rank()
                               if r[1].best is not None else (math.inf,))
        best.chosen = dict(best_combo)
        best.others = [(", ".join(f"{k} = {'none' if v is None else v}"
                                  for k, v in combo.items()), r.best)
                       for combo, r in results if combo is not best_combo]
        best.evaluations = [e for _, r in results for e in r.evaluations]
        return best
    template = Template.of(scenario, overrides, seed)
    base = template.scenario
    if isinstance(vary, Mapping):
        knobs = [Knob.from_bounds(k, *b, option="--vary") for k, b in vary.items()]
    else:
        knobs = [v if isinstance(v, Knob) else Knob.parse(v, "--vary") for v in vary]
    if not knobs:
        raise SearchError("--vary: give at least one KEY=LO:HI to vary")
    if len({k.key for k in knobs}) != len(knobs):
        raise SearchError("--vary: a key is given twice")
    objective = objective if isinstance(objective, Objective) else \
        Objective.parse(objective, base)
    constraints = [c if isinstance(c, Constraint) else Constraint.parse(c, base)
                   for c in constraints]
    arch = _infer_arch(base, (k.key for k in knobs), arch)
    if method == "auto":
        method = "bisect" if len(knobs) == 1 else "pattern"
    if method not in ("bisect", "pattern"):
        raise SearchError(f"--method: expected auto, bisect or pattern (got {method!r})")
    if method == "bisect" and len(knobs) != 1:
        raise SearchError("--method bisect: varies exactly one knob; use pattern for several")
    if replications < 1:
        raise SearchError(f"--replications: expected a number >= 1 (got {replications})")
    if not 0 < tolerance < 1:
        raise SearchError(f"--tolerance: expected a share of the range in (0, 1) "
                          f"(got {tolerance})")
    judged_window(base, window)  # a bad --window, before simulating anything
    # Check every key and both ends before simulating anything (ScenarioError on a bad key).
    from sim.studies.sweep import build_scenarios
    build_scenarios(template, [Point({k.key: k.value(k.lo) for k in knobs}),
                               Point({k.key: k.value(k.hi) for k in knobs})])
    with _executor_scope(executor, workers, dask) as executor:
        problem = Problem(template, arch, objective, constraints, replications, executor,
                          common_random_numbers, on_evaluation, window)
        if method == "bisect":
            best = _bisect(problem, knobs[0], tolerance, max_evaluations)
        else:
            best = _pattern(problem, knobs, tolerance, max_evaluations, base.seed)
    return SearchResult(arch, knobs, objective, constraints, method, replications,
                        problem.evaluations, best, problem.notes + best.notes, window,
                        problem.window_lines(best))


def _choices(choose) -> list[dict]:
    """Every combination of the ``choose`` values, as overrides (``none`` -> None)."""
    if isinstance(choose, Mapping):
        options = {k: (v.split(",") if isinstance(v, str) else list(v))
                   for k, v in choose.items()}
    else:
        options = {}
        for text in choose:
            key, sep, values = text.partition("=")
            if not sep or not key.strip() or not values.strip():
                raise SearchError(f"--choose: expected KEY=A,B,... such as "
                                  f"architectures.online.variant=none,int8 (got {text!r})")
            options[key.strip()] = [None if v.strip().lower() in ("none", "null") else
                                    v.strip() for v in values.split(",")]
    combos = [{}]
    for key, values in options.items():
        combos = [{**c, key: v} for c in combos for v in values]
    return combos if options else []


def _bisect(problem: Problem, knob: Knob, tolerance: float, max_evaluations: int
            ) -> Evaluation:
    lo_value, hi_value = knob.value(knob.lo), knob.value(knob.hi)
    low, high = problem.evaluate([{knob.key: lo_value}, {knob.key: hi_value}])
    if low.feasible == high.feasible:
        if not problem.constraints:
            problem.notes.append("Note: without constraints, bisection compares the two ends "
                                 "of the range only (the objective is taken to be monotone).")
        elif low.feasible:
            problem.notes.append("Both ends of the range meet the constraints; the better end "
                                 "is given (the objective is taken to be monotone).")
        else:
            problem.notes.append("Neither end of the range meets the constraints: widen the "
                                 "range, or relax a constraint.")
        return _best([low, high])
    bad, good = (low, high) if high.feasible else (high, low)
    min_gap = 1 if knob.integer else tolerance * (knob.hi - knob.lo)
    while len(problem.cache) < max_evaluations:
        a, b = bad.values[knob.key], good.values[knob.key]
        if abs(b - a) <= min_gap:
            break
        middle = knob.value((a + b) / 2)
        if middle in (a, b):
            break
        (trial,) = problem.evaluate([{knob.key: middle}])
        if trial.feasible:
            good = trial
        else:
            bad = trial
    else:
        problem.notes.append(f"Stopped at the limit of {max_evaluations} configurations.")
    far = high if high.feasible else low
    return _best([good, far])


def _pattern(problem: Problem, knobs: Sequence[Knob], tolerance: float, max_evaluations: int,
             seed: int) -> Evaluation:
    d = len(knobs)

    def config(u: Sequence[float]) -> dict:
        return {k.key: k.value(k.lo + min(max(x, 0.0), 1.0) * (k.hi - k.lo))
                for k, x in zip(knobs, u)}

    def position(evaluation: Evaluation) -> list[float]:
        return [(evaluation.values[k.key] - k.lo) / (k.hi - k.lo) for k in knobs]

    design = [[0.5] * d] + [list(row) for row in random_unit(max(4, 2 * d), d, seed, "lhs")]
    current = _best(problem.evaluate([config(u) for u in design]))
    unit = [1.0 / (k.hi - k.lo) if k.integer else 0.0 for k in knobs]
    steps = [max(0.25, u) for u in unit]
    while len(problem.cache) < max_evaluations:
        here = position(current)
        moves = []
        for j in range(d):
            for sign in (-1, 1):
                u = list(here)
                u[j] = min(max(u[j] + sign * steps[j], 0.0), 1.0)
                candidate = config(u)
                if candidate != current.values:
                    moves.append(candidate)
        trials = problem.evaluate(moves) if moves else []
        best = _best([current, *trials])
        if best is not current:
            current = best
            continue
        finished = all((steps[j] <= unit[j] + 1e-12) if knobs[j].integer
                       else steps[j] < tolerance for j in range(d))
        if finished:
            break
        steps = [max(s / 2, u) if k.integer else s / 2 for s, u, k in zip(steps, unit, knobs)]
    else:
        problem.notes.append(f"Stopped at the limit of {max_evaluations} configurations.")
    return current


# --------------------------------------------------------------------------------------------
# capacity
# --------------------------------------------------------------------------------------------

@dataclass
class CapacityResult:
    """The outcome of :func:`capacity`: the highest rate found to meet the constraints
    (``rate_per_s``, the low end of the bracket) and the lowest found not to (``high_per_s``)."""

    arch: str
    constraints: list[Constraint]
    replications: int
    evaluations: list[Evaluation]
    low: Evaluation | None
    high: Evaluation | None
    tolerance: float
    notes: list[str] = field(default_factory=list)
    window: str = "horizon"
    judged: list[str] = field(default_factory=list)  # where the constraints were judged

    @property
    def busiest_per_s(self) -> float | None:
        """The mean rate over the busiest hour of the arrivals at :attr:`rate_per_s` (None
        when the rate is constant or nothing met the constraints)."""
        if self.low is None or self.low.window is None or self.low.window.busiest is None:
            return None
        return self.low.window.busiest.window_per_s

    @property
    def rate_per_s(self) -> float | None:
        return self.low.values[RATE_KEY] if self.low else None

    @property
    def bracket(self) -> tuple[float | None, float | None]:
        return (self.rate_per_s, self.high.values[RATE_KEY] if self.high else None)

    @property
    def simulations(self) -> int:
        return _simulations(self.evaluations, self.replications)

    def lines(self) -> list[str]:
        within = ", ".join(map(str, self.constraints))
        lo, hi = self.bracket
        out = []
        if lo is None:
            out.append(f"{self.arch} meets {within} at no rate tried, down to "
                       f"{_show_rate(hi)}.")
        elif hi is None:
            out.append(f"{self.arch} meets {within} at every rate tried, up to "
                       f"{_show_rate(lo)} (no upper bracket found).")
        else:
            busiest = self.busiest_per_s
            mean = (f", the mean; {_show_rate(busiest)} in the busiest hour"
                    if busiest is not None else "")
            out.append(f"{self.arch} sustains {_show_rate(lo)} ({RATE_KEY}{mean}) within "
                       f"{within}: bracket [{_show_rate(lo)}, {_show_rate(hi)}].")
        for label, e in (("meets it", self.low), ("does not", self.high)):
            if e is not None:
                metrics = "; ".join(_metric_line(e.row, c.metric, c.column)
                                    for c in self.constraints)
                out.append(f"  {_show_rate(e.values[RATE_KEY])} {label}: {metrics}")
        out.extend(self.judged)
        out.append(f"Found by bracketing and bisection on the rate (to {self.tolerance:.0%}) "
                   f"with {len(self.evaluations)} rates x {self.replications} replications"
                   f"{_windows_text(self.evaluations)} = {self.simulations} simulations.")
        out.extend(self.notes)
        return out


def capacity(scenario: Scenario | Template | str | Path, arch: str | None = None,
             constraints: Sequence[Constraint | str] | None = None, *, replications: int = 3,
             tolerance: float = 0.01, max_evaluations: int = 40, workers: int | None = 1,
             dask: str | None = None, executor=None, common_random_numbers: bool = True,
             overrides: Iterable[str] | Mapping[str, Any] = (), seed: int | None = None,
             on_evaluation: Callable[[Evaluation], None] | None = None,
             window: str = "peak") -> CapacityResult:
    """The highest ``workload.arrivals.rate`` (the mean rate; a pattern scales it) at which
    ``arch`` meets ``constraints`` (default: ``latency_p99 <= slo.latency_p99``).

    From the scenario's rate it brackets the answer (up to the rate that saturates the replicas,
    as measured, then doubling; or halving down), then bisects until the bracket is within
    ``tolerance`` of the rate.

    ``window`` says where the constraints are judged (:func:`judged_window`): ``peak`` (the
    default) over the busiest hour of the arrival pattern, so that the rate found is the mean
    rate at which the busiest hour still meets them; ``day`` over whole days; ``horizon`` over
    the scenario's own window, with a warning when it leaves out the busiest hour.
    """
    template = Template.of(scenario, overrides, seed)
    base = template.scenario
    arch = _infer_arch(base, (), arch)
    if base.architectures[arch].kind == "batch":
        raise SearchError(f"--arch {arch}: a batch architecture serves stored predictions with "
                          f"no serving queue, so its latency does not depend on traffic; choose "
                          f"an online, streaming or hybrid architecture")
    if constraints is None or len(constraints) == 0:
        constraints = [slo_constraint(base)]
    constraints = [c if isinstance(c, Constraint) else Constraint.parse(c, base)
                   for c in constraints]
    if replications < 1:
        raise SearchError(f"--replications: expected a number >= 1 (got {replications})")
    if not 0 < tolerance < 1:
        raise SearchError(f"--tolerance: expected a share in (0, 1) (got {tolerance})")
    judged_window(base, window)  # a bad --window, before simulating anything
    with _executor_scope(executor, workers, dask) as executor:
        problem = Problem(template, arch, None, constraints, replications, executor,
                          common_random_numbers, on_evaluation, window)
        low, high = _capacity(problem, base.workload.arrivals.rate, tolerance, max_evaluations)
    return CapacityResult(arch, constraints, replications, problem.evaluations, low, high,
                          tolerance, problem.notes + (low.notes if low else []), window,
                          problem.window_lines(low or high))


@contextlib.contextmanager
def _executor_scope(executor, workers, dask):
    """The caller's executor as is, or a new one that is shut down afterwards."""
    if executor is not None:
        yield executor
        return
    with make_executor(workers, dask) as own:
        yield own


def _rate(x: float) -> float:
    return float(f"{x:.6g}")


def _capacity(problem: Problem, start_per_s: float, tolerance: float, max_evaluations: int):
    def at(rate):
        return problem.evaluate([{RATE_KEY: _rate(rate)}])[0]

    def room():
        return len(problem.cache) < max_evaluations

    first = at(start_per_s)
    low = high = None
    if first.feasible:
        low = first
        offered = float(first.row.get("offered_load", math.nan))
        guess = start_per_s / offered if offered > 0 and math.isfinite(offered) else 0.0
        rate = guess if guess > start_per_s * (1 + tolerance) else 2 * start_per_s
        while room():
            trial = at(rate)
            if not trial.feasible:
                high = trial
                break
            low = trial
            rate *= 2
    else:
        high = first
        rate = start_per_s / 2
        while room() and rate > start_per_s * 1e-6:
            trial = at(rate)
            if trial.feasible:
                low = trial
                break
            high = trial
            rate /= 2
    if low is None or high is None:
        return low, high
    while room():
        a, b = low.values[RATE_KEY], high.values[RATE_KEY]
        if b - a <= tolerance * a:
            break
        middle = _rate((a + b) / 2)
        if middle in (a, b):
            break
        trial = at(middle)
        if trial.feasible:
            low = trial
        else:
            high = trial
    else:
        problem.notes.append(f"Stopped at the limit of {max_evaluations} rates; the bracket "
                             f"is wider than the tolerance.")
    return low, high
