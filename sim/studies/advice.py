"""Retraining advice: net value per day for each retraining interval or policy, and the best.

A *candidate* is a retraining policy with, for ``schedule`` and ``continual``, an interval (the
``every`` of the scenario's training section and of every architecture's own one); a
``trigger`` candidate uses the scenario's own trigger section. Each candidate is a sweep point
(:mod:`sim.studies.sweep`), simulated over ``replications`` with common random numbers (every
candidate sees the same requests, so the differences between them are not noise of the
arrivals) and combined as ``sim.run`` combines replications: per architecture the mean net
value per day (value - cost) with its 95% confidence half-width. The best candidate of an
architecture is the one with the highest mean.

:func:`write_advice` writes ``advice.csv``, ``advice.json`` and ``net_value_vs_interval.png``,
each to a temporary name and renamed into place.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from sim.results.replications import t_half_width
from sim.results.results import version
from sim.scenario import Scenario
from sim.studies.executors import make_executor
from sim.studies.designs import Point, SweepError
from sim.studies.sweep import Template, build_scenarios, simulate_points
from sim.units import format_duration, format_usd, human_duration, parse_duration

DEFAULT_INTERVALS = ("1h", "6h", "1d", "7d")
POLICIES = ("schedule", "continual", "trigger")
TABLE_CSV = "advice.csv"
TABLE_JSON = "advice.json"
PLOT = "net_value_vs_interval.png"
# Summary columns carried into the advice table (means; their *_ci95 come along).
COLUMNS = ("net_value_usd_per_day", "value_usd_per_day", "cost_usd_per_day",
           "cost_usd_per_day_training", "cost_usd_per_day_evaluation", "trainings_per_day",
           "deploys_per_day", "candidates_superseded_per_day", "evaluation_s_mean",
           "quality_mean", "model_age_s_mean", "quality_lost_model_staleness",
           "quality_lost_drift", "quality_lost_model_training")


class AdviceError(SweepError):
    """Advice that cannot be given as asked; the message names the option or the key."""


@dataclass(frozen=True)
class Candidate:
    """One retraining policy to try: its label, policy, interval (s) and scenario overrides."""

    label: str
    policy: str
    interval_s: float | None
    values: dict = field(hash=False)


def parse_intervals(text: str | Sequence[str]) -> list[float]:
    """``'1h,6h,1d'`` (or a list) -> seconds, in the order given, without repeats."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[float] = []
    for item in items:
        item = str(item).strip()
        try:
            seconds = parse_duration(item)
        except ValueError:
            raise AdviceError(f"--intervals: {item!r} is not a duration such as 6h or 1d") \
                from None
        if not seconds > 0:
            raise AdviceError(f"--intervals: every interval must be > 0 (got {item!r})")
        if seconds in out:
            raise AdviceError(f"--intervals: {item} is listed twice")
        out.append(seconds)
    if not out:
        raise AdviceError("--intervals: give at least one duration, e.g. 1h,6h,1d,7d")
    return out


def parse_policies(text: str | Sequence[str]) -> list[str]:
    items = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for item in (str(i).strip() for i in items):
        if item not in POLICIES:
            raise AdviceError(f"--policies: {item!r} is not a policy; choose from "
                              f"{', '.join(POLICIES)}")
        if item not in out:
            out.append(item)
    if not out:
        raise AdviceError("--policies: give at least one of " + ", ".join(POLICIES))
    return out


def candidates(scenario: Scenario, intervals: Sequence[float], policies: Sequence[str],
               label: str = "the scenario") -> list[Candidate]:
    """Every candidate, with the overrides that make it, for the scenario-level training
    section and every architecture's own one."""
    prefixes = ["training"] + [f"architectures.{name}.training"
                               for name, spec in scenario.architectures.items()
                               if getattr(spec, "training", None) is not None]
    out = []
    for policy in policies:
        if policy == "trigger":
            missing = [p for p in prefixes if _section(scenario, p) is None or
                       _section(scenario, p).trigger is None]
            if missing:
                raise AdviceError(f"{label}: {missing[0]}.trigger: policy trigger needs a "
                                  f"trigger section (label_delay, window, below or drop) to "
                                  f"try")
            values = {f"{p}.{k}": v for p in prefixes
                      for k, v in (("policy", "trigger"), ("every", None))}
            out.append(Candidate("trigger", "trigger", None, values))
            continue
        for seconds in intervals:
            values = {}
            for p in prefixes:
                values.update({f"{p}.policy": policy, f"{p}.every": format_duration(seconds),
                               f"{p}.trigger": None})
                # continual updates are stateful; a schedule keeps the section's own mode, so
                # candidates differ in cadence only
                values[f"{p}.mode"] = ("stateful" if policy == "continual" else
                                       _section(scenario, p).training_mode)
            out.append(Candidate(f"{policy} every {format_duration(seconds)}", policy, seconds,
                                 values))
    return out


def _section(scenario: Scenario, prefix: str):
    if prefix == "training":
        return scenario.training
    return scenario.architectures[prefix.split(".")[1]].training


@dataclass
class Advice:
    """The advice table (a row per candidate and architecture) and the best per architecture."""

    scenario: Scenario
    table: pd.DataFrame
    replications: int
    notes: list[str] = field(default_factory=list)
    # net value per day of each replication, by (candidate, architecture): every candidate runs
    # on the same requests, so differences between candidates are paired
    net_by_replication: dict = field(default_factory=dict)

    @property
    def best(self) -> pd.DataFrame:
        """Per architecture, the row of the candidate with the highest mean net value."""
        rows = [group.loc[group["net_value_usd_per_day"].idxmax()]
                for _, group in self.table.groupby("architecture", sort=False)
                if group["net_value_usd_per_day"].notna().any()]
        return pd.DataFrame(rows).reset_index(drop=True)

    def lines(self) -> list[str]:
        """The conclusions in plain sentences."""
        out = []
        for row in self.best.to_dict("records"):
            group = self.table[self.table["architecture"] == row["architecture"]]
            others = group[group["candidate"] != row["candidate"]]
            ci = row.get("net_value_usd_per_day_ci95")
            interval = "" if _nan(ci) else f" (95% CI ±{format_usd(ci)})"
            line = (f"Best for {row['architecture']}: {row['candidate']}, net value "
                    f"{format_usd(row['net_value_usd_per_day'])}/day{interval}")
            if not others.empty:
                runner = others.loc[others["net_value_usd_per_day"].idxmax()]
                gap = row["net_value_usd_per_day"] - runner["net_value_usd_per_day"]
                name = row["architecture"]
                best = self.net_by_replication.get((row["candidate"], name))
                second = self.net_by_replication.get((runner["candidate"], name))
                half = (t_half_width(best - second) if best is not None and second is not None
                        else float("nan"))
                detail = "" if _nan(half) else f" (paired 95% CI ±{format_usd(half)})"
                sure = ("" if _nan(half) or gap > half else
                        "; the difference is within its confidence interval, run more "
                        "replications to be sure")
                line += (f", {format_usd(gap)}/day ahead of {runner['candidate']}{detail}{sure}")
            out.append(line + ".")
        out.extend(self._bounds())
        return out

    def _bounds(self) -> list[str]:
        """What labels and tests set: the youngest a model can be, and the cadences whose
        models are never deployed because the test is slower than the cadence."""
        out = []
        sections = [("training", self.scenario.training)] + [
            (f"architectures.{name}.training", getattr(a, "training", None))
            for name, a in self.scenario.architectures.items()]
        for where, t in sections:
            if t is not None and t.labels is not None and t.wait_s > 0:
                out.append(f"Labels: a run's data ends {format_duration(t.wait_s)} before it "
                           f"starts ({where}.labels.wait), so no cadence serves a model "
                           f"younger than that plus the run and its test.")
        for row in self.table.to_dict("records"):
            dropped = row.get("candidates_superseded_per_day", math.nan)
            if _nan(dropped) or dropped <= 0.05:
                continue
            out.append(f"{row['candidate']} ({row['architecture']}): "
                       f"{row['trainings_per_day']:.3g} models trained a day but "
                       f"{row['deploys_per_day']:.3g} deployed; a test takes "
                       f"{human_duration(row['evaluation_s_mean'])}, so the other "
                       f"{dropped:.3g} a day are dropped unused: retraining more often than "
                       f"one test allows buys only training cost.")
        return out

    def to_dict(self) -> dict:
        """The advice as JSON-ready data (NaN as null)."""
        return _clean({
            "scenario": self.scenario.name,
            "seed": self.scenario.seed,
            "replications": self.replications,
            "predsim_version": version(),
            "candidates": self.table.to_dict("records"),
            "best": {r["architecture"]: r["candidate"] for r in self.best.to_dict("records")},
            "notes": self.notes,
        })


def advise(scenario: Scenario | Template | str | Path,
           intervals: Sequence[str | float] = DEFAULT_INTERVALS,
           policies: Sequence[str] = ("schedule",), *, replications: int = 3,
           executor=None, workers: int | None = 1,
           overrides: Iterable[str] | Mapping[str, Any] = (), seed: int | None = None,
           progress: Callable[[float], None] | None = None) -> Advice:
    """Simulate every candidate retraining policy of ``scenario`` and return the advice.

    >>> advise("scenarios/quickstart.yaml", ["6h", "1d", "7d"], replications=3).lines()
    """
    template = Template.of(scenario, overrides, seed)
    spec = template.scenario
    seconds = [float(x) if isinstance(x, (int, float)) else None for x in intervals]
    if any(s is None for s in seconds):
        seconds = parse_intervals([str(x) for x in intervals])
    policies = parse_policies(policies)
    chosen = candidates(spec, seconds, policies, template.label)
    points = [Point(c.values) for c in chosen]
    scenarios = build_scenarios(template, points, common_random_numbers=True)
    total = len(points) * replications
    done = [0]

    def step(n):
        done[0] += n
        if progress is not None:
            progress(done[0] / total)

    own = executor is None
    executor = executor or make_executor(workers)
    results = {}
    try:
        if own:
            executor.__enter__()
        for result in simulate_points(template, points, replications, executor,
                                      common_random_numbers=True, scenarios=scenarios,
                                      progress=step):
            results[result.point.id] = result
    finally:
        if own:
            executor.__exit__(None, None, None)
    rows, notes, by_replication = [], [], {}
    for c, point in zip(chosen, points):
        result = results[point.id]
        notes.extend(result.notes)
        if result.per_replication is not None:
            for name, group in result.per_replication.groupby("architecture", sort=False):
                by_replication[(c.label, name)] = group.sort_values("replication")[
                    "net_value_usd_per_day"].to_numpy(float)
        for row in result.summary.to_dict("records"):
            entry = {"candidate": c.label, "policy": c.policy,
                     "interval": None if c.interval_s is None else format_duration(c.interval_s),
                     "interval_s": c.interval_s, "architecture": row["architecture"],
                     "kind": row["kind"]}
            for column in COLUMNS:
                entry[column] = row.get(column, math.nan)
                entry[f"{column}_ci95"] = row.get(f"{column}_ci95", math.nan)
            rows.append(entry)
    table = pd.DataFrame(rows)
    partial = [c.interval_s for c in chosen if c.interval_s is not None and
               abs(spec.horizon / c.interval_s - round(spec.horizon / c.interval_s)) > 1e-6]
    if partial:
        notes.insert(0, f"the horizon ({format_duration(spec.horizon)}) is not a whole number of "
                        f"cycles of {', '.join(format_duration(x) for x in partial)}, so those "
                        f"are measured over part of a cycle (the part where the model is "
                        f"freshest or stalest counts more); set a horizon that is a multiple of "
                        f"every interval (--set horizon=...) for a fair comparison")
    return Advice(spec, table, replications, list(dict.fromkeys(notes)), by_replication)


def rich_table(advice: Advice):
    """Net value per day per candidate (rows) and architecture (columns), ± 95% CI; the best of
    each architecture marked."""
    from rich.table import Table

    reps = advice.replications
    table = Table(title=f"{advice.scenario.name}: net value per day by retraining policy "
                        f"({reps} replication{'s' if reps != 1 else ''}"
                        f"{', mean ± 95% CI' if reps > 1 else ''})", title_justify="left")
    names = list(dict.fromkeys(advice.table["architecture"]))
    tested = advice.table["evaluation_s_mean"].notna().any()
    table.add_column("retraining", no_wrap=True)
    for name in names:
        table.add_column(f"{name}\nnet $/day", justify="right")
        table.add_column(f"{name}\ntrain $/day", justify="right")
        if tested:
            table.add_column(f"{name}\ndeploys/day", justify="right")
    best = {r["architecture"]: r["candidate"] for r in advice.best.to_dict("records")}
    for label in dict.fromkeys(advice.table["candidate"]):
        cells = []
        for name in names:
            row = advice.table[(advice.table["candidate"] == label) &
                               (advice.table["architecture"] == name)].iloc[0]
            text = _with_ci(row["net_value_usd_per_day"], row["net_value_usd_per_day_ci95"])
            cells.append(f"[bold green]{text} *[/]" if best.get(name) == label else text)
            cells.append(_with_ci(row["cost_usd_per_day_training"],
                                  row["cost_usd_per_day_training_ci95"]))
            if tested:
                cells.append(f"{row['deploys_per_day']:.3g}")
        table.add_row(label, *cells)
    return table


def plot(advice: Advice):
    """Net value per day against the retraining interval (log scale), one line per
    architecture and policy, with 95% CI bars; a trigger policy as a horizontal line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    t = advice.table
    for i, name in enumerate(dict.fromkeys(t["architecture"])):
        colour = f"C{i}"
        for policy, marker, style in (("schedule", "o", "-"), ("continual", "s", ":")):
            rows = t[(t["architecture"] == name) & (t["policy"] == policy)].sort_values(
                "interval_s")
            if rows.empty:
                continue
            ax.errorbar(rows["interval_s"] / 3600.0, rows["net_value_usd_per_day"],
                        yerr=rows["net_value_usd_per_day_ci95"].fillna(0.0), marker=marker,
                        linestyle=style, color=colour, capsize=3,
                        label=name if policy == "schedule" else f"{name} ({policy})")
        for row in t[(t["architecture"] == name) & (t["policy"] == "trigger")].itertuples():
            ax.axhline(row.net_value_usd_per_day, color=colour, linestyle="--", linewidth=1,
                       label=f"{name} (trigger)")
    ax.set_xscale("log")
    ax.set_xlabel("retraining interval (hours)")
    ax.set_ylabel("net value ($/day)")
    ax.set_title(f"{advice.scenario.name}: net value against retraining interval")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def write_advice(advice: Advice, out: str | Path) -> list[Path]:
    """``advice.csv``, ``advice.json`` and ``net_value_vs_interval.png`` in ``out``."""
    import matplotlib.pyplot as plt

    from sim.report.output import atomic_write, atomic_write_figure

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [atomic_write(out / TABLE_CSV, advice.table.to_csv(index=False)),
               atomic_write(out / TABLE_JSON, json.dumps(advice.to_dict(), indent=2) + "\n")]
    fig = plot(advice)
    try:
        written.append(atomic_write_figure(out / PLOT, fig))
    finally:
        plt.close(fig)
    return written


def _with_ci(value, half) -> str:
    if _nan(value):
        return "-"
    return f"{value:,.0f}" + ("" if _nan(half) else f" ±{half:,.0f}")


def _nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))



def _clean(obj):
    """Plain JSON data: numpy scalars as numbers, NaN as None."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item"):
        obj = obj.item()
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj
