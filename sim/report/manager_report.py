"""The report for a manager: one recommendation, the numbers behind it, and how robust it is.

:func:`build_report` takes the :class:`~sim.results.results.Results` of a scenario (with replications,
so that differences have paired confidence intervals) and adds what a decision needs:

- a **recommendation**: the architecture with the highest net value that is *detectably* better
  than the baseline (its paired 95% CI of the net-value difference lies above zero), in one
  sentence with the uplift in the team's metric, the money and the p99 latency against the SLO;
  or, plainly, that no difference is detectable;
- a **breakeven**: the mean arrival rate at which the decision between the recommended (or best
  alternative) architecture and the baseline flips, by bisection on
  ``workload.arrivals.rate`` over ``[rate / 10, rate x 10]`` (serving replicas scaled with
  traffic), with the share of entities active on a day where stored predictions are involved;
- a **sensitivity**: every numeric input perturbed one at a time by +-20%, the change in the
  net-value difference, the five most influential drawn as a tornado chart;
- the **A/B test** that would confirm the gain (:mod:`sim.studies.abtest`), and beside it the
  other **ways to test** it in production (shadow, canary, interleaving, bandit;
  :mod:`sim.studies.testplan`), from the same results;
- the **assumptions**, a table generated from the scenario with the comments of its file.

Breakeven and sensitivity re-run the simulator on shortened copies of the scenario (at most
``Analysis.horizon_s`` measured, ``Analysis.replications`` replications, only the two
architectures compared); the report says so. :meth:`ManagerReport.write` writes ``report.html``
(self-contained: images embedded as base64 PNG, no external resources), ``report.md`` and the
PNGs, each file atomically (``sim.report.output``'s helpers).
"""

from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from scipy import stats

from sim.results.results import COST_COMPONENTS, Results, version
from sim.scenario import Scenario
from sim.studies.robustness import (Analysis, Breakeven, Sensitivity, _compact, _is_distribution,
                            _key_label, _Runner, active_share, analysis_scenario, breakeven,
                            numeric_inputs, sensitivity)
from sim.units import (DAY_S, format_duration, format_usd, format_usd_range, human_duration,
                       rate_text)

MONTH_DAYS = 365.25 / 12
NET = "net_value_usd_per_day"


# --------------------------------------------------------------------------------------------
# Number formats shared by the sentence and the tables, so the same number reads the same
# --------------------------------------------------------------------------------------------

def _decimals(half_width_pct: float) -> int:
    """Decimals that show a percentage CI's half-width to one significant digit (1 or 2)."""
    if _nan(half_width_pct) or half_width_pct <= 0:
        return 1
    return int(min(2, max(1, -math.floor(math.log10(half_width_pct)))))


def percent(x_pct: float, decimals: int, sign: bool = False) -> str:
    if _nan(x_pct):
        return "-"
    x_pct = round(x_pct, decimals) + 0.0   # no "-0.00%"
    text = f"{x_pct:+.{decimals}f}" if sign else f"{x_pct:.{decimals}f}"
    return text + "%"


def percent_range(low_pct: float, high_pct: float, decimals: int) -> str:
    if _nan(low_pct) or _nan(high_pct):
        return "no CI"
    low_pct, high_pct = round(low_pct, decimals) + 0.0, round(high_pct, decimals) + 0.0
    if low_pct >= 0:
        return f"{low_pct:.{decimals}f}–{high_pct:.{decimals}f}%"
    return f"{low_pct:.{decimals}f}% to {high_pct:.{decimals}f}%"


def milliseconds(x_ms: float) -> str:
    if _nan(x_ms):
        return "-"
    return f"{x_ms:.0f}" if abs(x_ms) >= 10 else f"{x_ms:.1f}"


def _nan(x) -> bool:
    return x is None or (isinstance(x, (float, np.floating)) and math.isnan(x))


# --------------------------------------------------------------------------------------------
# The recommendation
# --------------------------------------------------------------------------------------------

@dataclass
class Comparison:
    """One architecture against the baseline: paired differences over replications."""

    architecture: str
    net_usd: float
    net_low_usd: float
    net_high_usd: float
    quality_change_pct: float     # relative change of the metric's mean, per cent
    quality_low_pct: float
    quality_high_pct: float
    cost_usd: float
    value_usd: float

    @property
    def has_ci(self) -> bool:
        return not _nan(self.net_low_usd)

    @property
    def better(self) -> bool:
        return self.has_ci and self.net_low_usd > 0

    @property
    def worse(self) -> bool:
        return self.has_ci and self.net_high_usd < 0

    @property
    def quality_decimals(self) -> int:
        return _decimals((self.quality_high_pct - self.quality_low_pct) / 2)

    def verdict(self) -> str:
        if not self.has_ci:
            return "no CI (one replication)"
        return "better" if self.better else "worse" if self.worse else "no detectable difference"


def comparisons(results: Results) -> list[Comparison]:
    """Each non-baseline architecture minus the baseline, in the summary's order."""
    base = results.baseline
    per = results.per_replication
    if per is None:
        per = results.summary.assign(replication=results.replication)
    b = per[per["architecture"] == base].set_index("replication")
    d = results.differences
    out = []
    for name in results.summary["architecture"]:
        if name == base:
            continue
        a = per[per["architecture"] == name].set_index("replication")
        ratio = (a["quality_mean"] / b["quality_mean"] - 1).to_numpy(float) * 100
        q_mean, q_half = float(np.mean(ratio)), _t_half(ratio)

        def diff(metric):
            if d is not None and not d.empty:
                row = d[(d["architecture"] == name) & (d["metric"] == metric)]
                if not row.empty:
                    r = row.iloc[0]
                    return float(r["difference"]), float(r["low"]), float(r["high"])
            value = float((a[metric] - b[metric]).mean())
            return value, float("nan"), float("nan")

        net, low, high = diff(NET)
        out.append(Comparison(name, net, low, high, q_mean, q_mean - q_half, q_mean + q_half,
                              diff("cost_usd_per_day")[0], diff("value_usd_per_day")[0]))
    return out


def _t_half(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    if values.size < 2:
        return float("nan")
    return float(stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) /
                 math.sqrt(values.size))


@dataclass
class Recommendation:
    """What to do, in one sentence, and which comparison it rests on.

    ``choice`` is the architecture recommended over the baseline (None: stay with the
    baseline); ``compared`` is the architecture the numbers describe (the choice, or the best
    alternative), on which breakeven, sensitivity and the A/B test are computed.
    """

    baseline: str
    choice: str | None
    compared: str | None
    sentence: str
    remarks: list[str] = field(default_factory=list)


def describe_architecture(name: str, spec) -> str:
    """Plain words for an architecture: ``nightly batch prediction``, ``streaming prediction``."""
    from sim.engine.architectures.registry import kind_of
    kind = kind_of(spec)
    if kind.stores_predictions and not kind.predicts_online:  # every request reads a store
        cadence = {DAY_S: "nightly", 3600.0: "hourly", 7 * DAY_S: "weekly"}.get(spec.every)
        text = (f"{cadence} {kind.words}" if cadence else
                f"{kind.words} every {format_duration(spec.every)}")
    else:
        text = kind.words
    return text if re.search(rf"\b{re.escape(name)}\b", text) else f"{text} ({name})"


def recommend(results: Results) -> Recommendation:
    """The recommendation sentence from the paired confidence intervals of net value."""
    if results.baseline is None:
        raise ValueError("recommend() needs the Results of sim.run (they name a baseline)")
    scenario = results.scenario
    base = results.baseline
    comps = comparisons(results)
    base_words = describe_architecture(base, scenario.architectures[base])
    if not comps:
        return Recommendation(base, None, None, f"Only one architecture ({base}) is in the "
                              f"scenario: there is nothing to compare it with.")
    summary = results.summary.set_index("architecture")
    metric = scenario.quality.metric
    n = results.replications
    best = max(comps, key=lambda c: c.net_usd)
    better = [c for c in comps if c.better]
    remarks = []

    def numbers(c: Comparison) -> str:
        dec = c.quality_decimals
        latency = float(summary.loc[c.architecture, "latency_ms_p99"])
        slo = scenario.slo.latency_p99
        if slo:
            within = "within" if latency <= slo * 1e3 else "over"
            latency_text = (f"p99 latency {milliseconds(latency)} ms {within} the "
                            f"{milliseconds(slo * 1e3)} ms SLO")
        else:
            latency_text = f"p99 latency {milliseconds(latency)} ms"
        return (f"{percent(c.quality_change_pct, dec, sign=True)} {metric} (95% CI "
                f"{percent_range(c.quality_low_pct, c.quality_high_pct, dec)}), "
                f"{format_usd(c.net_usd, sign=True)}/day net (95% CI "
                f"{format_usd_range(c.net_low_usd, c.net_high_usd)}), {latency_text}")

    if not best.has_ci:
        words = describe_architecture(best.architecture, scenario.architectures[best.architecture])
        sentence = (f"Not enough runs to recommend a move: from a single replication "
                    f"{words} looks best against {base_words} with {numbers(best)}; run 3 or "
                    f"more replications for confidence intervals.")
        return Recommendation(base, None, best.architecture, sentence)
    if better:
        choice = max(better, key=lambda c: c.net_usd)
        words = describe_architecture(choice.architecture,
                                      scenario.architectures[choice.architecture])
        sentence = f"Move from {base_words} to {words}: {numbers(choice)}."
        runner = _runner_up(results, choice, better)
        if runner:
            remarks.append(runner)
        return Recommendation(base, choice.architecture, choice.architecture, sentence, remarks)
    words = describe_architecture(best.architecture, scenario.architectures[best.architecture])
    if all(c.worse for c in comps):
        sentence = (f"Stay with {base_words}: every alternative loses net value; the closest, "
                    f"{words}, has {numbers(best)}.")
    else:
        sentence = (f"Stay with {base_words} for now: no alternative is detectably better on "
                    f"net value with {n} replications; the best, {words}, has {numbers(best)}.")
    return Recommendation(base, None, best.architecture, sentence, remarks)


def _runner_up(results: Results, choice: Comparison, better: list[Comparison]) -> str | None:
    """Whether the second-best detectably better architecture can be told from the choice."""
    others = sorted((c for c in better if c is not choice), key=lambda c: -c.net_usd)
    if not others or results.per_replication is None:
        return None
    other = others[0]
    per = results.per_replication
    a = per[per["architecture"] == choice.architecture].set_index("replication")[NET]
    b = per[per["architecture"] == other.architecture].set_index("replication")[NET]
    diff = (a - b).to_numpy(float)
    mean, half = float(diff.mean()), _t_half(diff)
    if _nan(half):
        return None
    if mean - half > 0:
        return (f"{other.architecture} also beats {results.baseline}, but "
                f"{choice.architecture} is ahead of it by {format_usd(mean)}/day (paired 95% CI "
                f"{format_usd_range(mean - half, mean + half)}).")
    return (f"{other.architecture} also beats {results.baseline}, and cannot be told apart from "
            f"{choice.architecture} on net value with {results.replications} replications "
            f"(difference {format_usd(mean, sign=True)}/day, paired 95% CI "
            f"{format_usd_range(mean - half, mean + half)}): other criteria can decide between them.")


# --------------------------------------------------------------------------------------------
# Assumptions: the scenario as a table, with the comments of its file
# --------------------------------------------------------------------------------------------

_LINE = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z_][\w-]*)\s*:(?P<rest>.*)$")


def file_comments(text: str) -> dict[tuple, tuple[str, bool]]:
    """Trailing comments of a scenario file by key path: path -> (comment, applies to children).

    A comment on a line whose value is a flow collection (``{...}`` or ``[...]``) also applies to
    the keys inside it. Best effort: lines it cannot read are skipped.
    """
    out: dict[tuple, tuple[str, bool]] = {}
    stack: list[tuple[int, str]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith(("#", "-")):
            continue
        match = _LINE.match(line)
        if not match:
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = tuple(k for _, k in stack) + (match["key"],)
        stack.append((indent, match["key"]))
        value, _, comment = match["rest"].partition(" #")
        if comment.strip():
            out[path] = (comment.strip(), value.strip().startswith(("{", "[")))
    return out


def assumptions(scenario: Scenario, source_text: str | None = None,
                overrides: list[str] | tuple[str, ...] = ()) -> pd.DataFrame:
    """Every input of the resolved scenario (defaults filled in) as rows: key, value, note."""
    data = scenario.to_yaml_dict()
    comments = file_comments(source_text) if source_text else {}
    overridden = [tuple(o.partition("=")[0].strip().split(".")) for o in overrides]
    rows = []

    def note(path: tuple) -> str:
        names = tuple(p for p in path if not isinstance(p, int))
        for o in overridden:
            if names[:len(o)] == o or o[:len(names)] == names:
                return "set on the command line (--set)"
        if names in comments:
            return comments[names][0]
        if names[-1] == "kind" and names[:-1] in comments:   # the comment on the section
            return comments[names[:-1]][0]
        for i in range(len(names) - 1, 0, -1):
            found = comments.get(names[:i])
            if found and found[1]:
                return found[0]
        return ""

    def walk(node, path):
        key = path[-1] if path else None
        if isinstance(node, dict) and not _is_distribution(key, node) and key != "popularity":
            for k, v in node.items():
                if not path and k in ("name", "description"):
                    continue
                walk(v, path + (k,))
            return
        if isinstance(node, list) and key != "table" and node and isinstance(node[0], dict):
            for i, v in enumerate(node):
                walk(v, path + (i,))
            return
        rows.append({"key": _key_label(path), "value": _compact(node), "note": note(path)})

    walk(data, ())
    return pd.DataFrame(rows, columns=["key", "value", "note"])


# --------------------------------------------------------------------------------------------
# The report: content blocks rendered as Markdown and as HTML
# --------------------------------------------------------------------------------------------

@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    caption: str | None = None
    align_left: int = 1     # the first columns are text, the others numbers


@dataclass
class Figure:
    name: str       # file name of the PNG
    alt: str
    make: Callable[[], Any]


@dataclass
class ManagerReport:
    """Everything in the report; :meth:`write` renders it to files."""

    results: Results
    recommendation: Recommendation
    analysis: Analysis
    breakeven: Breakeven | None = None
    sensitivity: Sensitivity | None = None
    abtest: Any = None               # sim.studies.abtest.ABPlan
    abtest_problem: str | None = None
    methods: Any = None              # sim.studies.testplan.MethodComparison
    source_text: str | None = None
    overrides: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)

    # -- tables ---------------------------------------------------------------------------------
    def service_table(self) -> Table:
        s = self.results.summary
        metric = self.results.scenario.quality.metric
        slo = self.results.scenario.slo.latency_p99
        slo_text = f" (SLO {milliseconds(slo * 1e3)} ms)" if slo else ""
        headers = ["architecture", f"{metric} (mean)", "coverage %", "feature age (mean)",
                   "p50 latency ms", f"p99 latency ms{slo_text}",
                   "requests over the SLO %" if slo else "requests over the SLO",
                   "wasted predictions %"]
        rows = []
        for row in s.to_dict("records"):
            rows.append([
                row["architecture"],
                _cell(row, "quality_mean", lambda x: f"{x:.4g}", lambda h: f"{h:.2g}"),
                _cell(row, "coverage", lambda x: f"{x * 100:.2f}", lambda h: _two_digits(h * 100)),
                _age_cell(row),
                _cell(row, "latency_ms_p50", milliseconds, _two_digits),
                _cell(row, "latency_ms_p99", milliseconds, _two_digits),
                _cell(row, "slo_violation_rate", lambda x: f"{x * 100:.2f}",
                      lambda h: _two_digits(h * 100)),
                _cell(row, "wasted_prediction_rate", lambda x: f"{x * 100:.1f}",
                      lambda h: _two_digits(h * 100)),
            ])
        reps = self.results.replications
        return Table(headers, rows, f"Service: mean ± 95% CI over {reps} replications"
                     if reps > 1 else "Service (one replication: no confidence intervals)")

    def money_table(self) -> Table:
        s = self.results.summary
        components = [c for c in COST_COMPONENTS
                      if s[f"cost_usd_per_day_{c}"].fillna(0).abs().sum() > 0]
        headers = (["architecture"] + [f"{c.replace('_', ' ')} $/day" for c in components] +
                   ["total cost $/day", "value $/day", "net value $/day", "net value $/month"])
        rows = []
        for row in s.to_dict("records"):
            cells = [row["architecture"]]
            for c in components:
                cells.append(_cell(row, f"cost_usd_per_day_{c}", format_usd, format_usd))
            cells.append(_cell(row, "cost_usd_per_day", format_usd, format_usd))
            cells.append(_cell(row, "value_usd_per_day", format_usd, format_usd))
            cells.append(_cell(row, NET, format_usd, format_usd))
            month = {NET: row[NET] * MONTH_DAYS, f"{NET}_ci95": row.get(f"{NET}_ci95", np.nan)
                     * MONTH_DAYS}
            cells.append(_cell(month, NET, format_usd, format_usd))
            rows.append(cells)
        return Table(headers, rows, f"Money per day (a month is {MONTH_DAYS:.1f} days); value is "
                     f"outcomes × ${self.results.scenario.business.value_per_outcome:g} after "
                     f"the latency penalty")

    def reliability_matters(self) -> bool:
        """Whether the scenario lets pipelines fail or data expire, or sets a freshness bound:
        then the report has a section on it."""
        s = self.results.summary
        return self.results.scenario.slo.has_freshness or any(
            s[c].fillna(0).abs().sum() > 0 for c in
            ("pipeline_failures_per_day", "expired_rate", "stale_answer_rate", "error_rate"))

    def reliability_table(self) -> Table:
        s = self.results.summary
        slo = self.results.scenario.slo
        bounds = [f"{c} {format_duration(b)}" for c in ("batch", "stream")
                  if (b := slo.freshness_bound(c)) is not None]
        stale = f" older than the bound ({', '.join(bounds)})" if bounds else " stale"
        headers = ["architecture", "failures per day", "expired %", "fallback %: timeout",
                   "missing", "expired", "answered stale %", "errors %",
                   f"served data{stale} %", "minutes/day without fresh data"]
        percent = (lambda x: f"{x * 100:.2f}", lambda h: _two_digits(h * 100))
        rows = []
        for row in s.to_dict("records"):
            rows.append([row["architecture"],
                         _cell(row, "pipeline_failures_per_day", lambda x: f"{x:.2f}",
                               _two_digits),
                         _cell(row, "expired_rate", *percent),
                         _cell(row, "timeout_fallback_rate", *percent),
                         _cell(row, "missing_fallback_rate", *percent),
                         _cell(row, "expired_fallback_rate", *percent),
                         _cell(row, "stale_answer_rate", *percent),
                         _cell(row, "error_rate", *percent),
                         _cell(row, "stale_feature_rate", *percent),
                         _cell(row, "stale_minutes_per_day", lambda x: f"{x:.0f}",
                               _two_digits)])
        return Table(headers, rows, "When pipelines fail or data expires (see the glossary's "
                     "Reliability section)")

    def difference_table(self) -> Table:
        metric = self.results.scenario.quality.metric
        headers = ["architecture", f"{metric} change % (95% CI)", "net value $/day (95% CI)",
                   "net value $/month (95% CI)", "cost $/day", "value $/day", "verdict"]
        rows = []
        for c in comparisons(self.results):
            dec = c.quality_decimals
            rows.append([
                c.architecture,
                f"{percent(c.quality_change_pct, dec, sign=True)} "
                f"({percent_range(c.quality_low_pct, c.quality_high_pct, dec)})",
                f"{format_usd(c.net_usd, sign=True)} ({format_usd_range(c.net_low_usd, c.net_high_usd)})",
                f"{format_usd(c.net_usd * MONTH_DAYS, sign=True)} "
                f"({format_usd_range(c.net_low_usd * MONTH_DAYS, c.net_high_usd * MONTH_DAYS)})",
                format_usd(c.cost_usd, sign=True), format_usd(c.value_usd, sign=True), c.verdict()])
        return Table(headers, rows, f"Difference from {self.results.baseline}, paired over "
                     f"replications (each replication runs every architecture on the same "
                     f"requests)")

    def breakeven_table(self) -> Table | None:
        b = self.breakeven
        if b is None:
            return None
        rows = []
        for rate, value in b.points:
            ahead = b.architecture if value > 0 else b.baseline
            mark = " (today)" if rate == b.current_per_s else ""
            rows.append([f"{rate_text(rate)}{mark}", format_usd(value, sign=True), ahead])
        return Table(["mean arrival rate", f"net value {b.architecture} − {b.baseline} $/day",
                      "higher net value"], rows, "Rates evaluated (short runs)")

    def sensitivity_table(self) -> Table | None:
        s = self.sensitivity
        if s is None or s.frame.empty:
            return None
        rows = [[r["label"], r["value"], r["low_label"] or "not valid",
                 format_usd(r["low_usd"], sign=True), r["high_label"] or "not valid",
                 format_usd(r["high_usd"], sign=True), format_usd(r["effect_usd"])]
                for r in s.top_frame.to_dict("records")]
        return Table(["input", "scenario value", "lowered to", "difference $/day",
                      "raised to", "difference $/day", "largest change $/day"], rows,
                     f"The {len(rows)} most influential inputs (net value {s.architecture} − "
                     f"{s.baseline}; {format_usd(s.base_usd, sign=True)}/day at the scenario's values)")

    def methods_table(self) -> Table:
        from sim.studies.testplan import TABLE_HEADERS, table_cells
        return Table(list(TABLE_HEADERS), table_cells(self.methods),
                     "Ways to test the change in production: time to a decision at this traffic, "
                     "the challenger's mean share of all traffic, the extra inference, and the "
                     "outcomes and value lost while testing")

    def methods_sentences(self) -> list[str]:
        """The two sentences around the table of ways to test (sim.studies.testplan)."""
        m = self.methods
        rec = self.recommendation
        sized = ("" if m.min_effect is None else
                 f", sized for a difference of {m.min_effect:.3g} relative "
                 f"(training.evaluation.min_effect)")
        lead = (f"Before {rec.compared} replaces {rec.baseline} for everyone, a test in "
                f"production confirms it: five ways to run it" if rec.choice else
                f"Should {rec.compared} be tried against {rec.baseline} in production anyway, "
                f"five ways to test it")
        first = (f"{lead}, at {m.daily_traffic:,.0f} requests a day with {m.share:.0%} of them "
                 f"in the A/B, shadow, interleaving and bandit tests{sized}; the value lost "
                 f"counts the outcomes missed while a test runs, against serving the better of "
                 f"the two to everyone from the start.")
        canary = ("the canary's ramp also measures the difference"
                  if m.canary_power is not None and m.canary_power >= m.power else
                  "the canary only guards against a broken model")
        better = m.bandit.picks_better
        bandit = ("" if better is None else
                  f", and the bandit picks the better one in {better:.0%} of simulated runs")
        second = (f"The shadow test decides on predictions, not outcomes; {canary}; "
                  f"interleaving suits rankers only{bandit} (`predsim abtest SCENARIO "
                  f"--methods`, docs/testing-in-production.md).")
        return [first, second]

    def assumptions_table(self) -> Table:
        frame = assumptions(self.results.scenario, self.source_text, self.overrides)
        return Table(["input", "value", "note (from the scenario file)"],
                     frame.to_numpy(str).tolist(), "Every input, with defaults filled in",
                     align_left=3)

    # -- figures --------------------------------------------------------------------------------
    def figures(self) -> list[Figure]:
        from sim.report import plots
        plot = self.results.plot
        figs = [Figure("net_value.png", "Net value per day with 95% confidence intervals",
                       plot.net_value),
                Figure("latency_cdf.png", "Latency distribution", plot.latency_cdf),
                Figure("feature_age.png", "Feature age distribution", plot.feature_age),
                Figure("quality_over_time.png", "Quality over time", plot.quality_over_time),
                Figure("cost_breakdown.png", "Cost per day by component", plot.cost_breakdown)]
        if self.reliability_matters():
            figs.append(Figure("freshness_over_time.png", "Feature freshness over time, with "
                               "the pipelines' incidents", plot.freshness_over_time))
        b = self.breakeven
        if b is not None:
            figs.append(Figure(
                "breakeven.png", "Net value difference against traffic",
                lambda: plots.breakeven(b.points, b.flip_per_s, b.current_per_s,
                                        f"Net value, {b.architecture} − {b.baseline}, by traffic")))
        s = self.sensitivity
        if s is not None and not s.frame.empty:
            figs.append(Figure(
                "tornado.png", "Sensitivity of the net value difference (tornado chart)",
                lambda: plots.tornado(s.top_frame, s.base_usd,
                                      f"Net value {s.architecture} − {s.baseline}: "
                                      f"inputs ±{s.perturbation * 100:.0f}%")))
        return figs

    # -- content --------------------------------------------------------------------------------
    def blocks(self) -> list[tuple]:
        """The report as a list of blocks: ("h1"|"h2"|"p"|"lead"|"ul", text...) and
        ("table", Table), ("img", figure name)."""
        r = self.results
        sc = r.scenario
        reps = r.replications
        out: list[tuple] = [("h1", f"{sc.name}: which prediction architecture?")]
        if sc.description:
            out.append(("p", sc.description))
        out.append(("p", f"{reps} replication{'s' if reps != 1 else ''} of "
                         f"{human_duration(sc.horizon)} of traffic each (after "
                         f"{human_duration(sc.warmup)} of warm-up), seed {sc.seed}, "
                         f"predsim {version()}; baseline: {r.baseline}."))
        out.append(("lead", self.recommendation.sentence))
        remarks = list(self.recommendation.remarks)
        if r.verdict:
            remarks += r.verdict.splitlines()
        remarks += list(r.notes) + self.notes
        if remarks:
            out.append(("ul", remarks))

        out.append(("h2", "Comparison"))
        out.append(("table", self.service_table()))
        note = _cold_start_note(r)
        if note:
            out.append(("p", note))
        out.append(("table", self.money_table()))
        if len(r.summary) > 1:
            out.append(("table", self.difference_table()))
        out.append(("img", "net_value.png"))
        out.append(("img", "cost_breakdown.png"))

        out.append(("h2", "Latency, freshness and quality"))
        out.append(("img", "latency_cdf.png"))
        out.append(("img", "feature_age.png"))
        out.append(("img", "quality_over_time.png"))

        if self.reliability_matters():
            out.append(("h2", "When pipelines fail"))
            out.append(("p", "Scoring jobs, feature pipelines and stream processors fail, run "
                             "late or go down as the scenario says; meanwhile requests read "
                             "older data, or none once it expires. The plot shows each "
                             "architecture's feature age over time with its incidents."))
            out.append(("table", self.reliability_table()))
            out.append(("img", "freshness_over_time.png"))

        pair = self._pair()
        if pair and (self.breakeven or self.sensitivity):
            out.append(("h2", "How robust is the decision?"))
            out.append(("p", self.analysis.describe(sc, pair)))
        if self.breakeven is not None:
            out.append(("h2", "Breakeven: the traffic at which the decision flips"))
            for sentence in self.breakeven.sentences():
                out.append(("p", sentence))
            out.append(("img", "breakeven.png"))
            out.append(("table", self.breakeven_table()))
        if self.sensitivity is not None:
            out.append(("h2", "Sensitivity: which inputs matter"))
            for sentence in self.sensitivity.sentences():
                out.append(("p", sentence))
            if not self.sensitivity.frame.empty:
                out.append(("img", "tornado.png"))
                out.append(("table", self.sensitivity_table()))

        if self.abtest is not None or self.abtest_problem:
            out.append(("h2", "The A/B test that would confirm it"))
            if self.abtest is not None:
                out.append(("ul", self.abtest.lines()))
                out.append(("p", f"Each request counts as one trial of {sc.quality.metric}; if "
                                 f"{sc.quality.metric} is measured on a subset of requests "
                                 f"(e.g. recall on fraudulent transactions only), plan with "
                                 f"that subset's daily count: `predsim abtest --baseline-rate "
                                 f"{self.abtest.baseline_rate:.4g} --uplift "
                                 f"{self.abtest.absolute_uplift:.4g} --daily-traffic N`."))
            else:
                out.append(("p", self.abtest_problem))
        if self.methods is not None:
            out.append(("h2", "Testing the next model"))
            out.extend(("p", sentence) for sentence in self.methods_sentences())
            out.append(("table", self.methods_table()))

        out.append(("h2", "Assumptions"))
        out.append(("p", "Every number the simulation used. Those marked 'assumption' in the "
                         "scenario file are guesses to replace with your own measurements; the "
                         "sensitivity above says which of them matter."))
        out.append(("table", self.assumptions_table()))
        out.append(("h2", "How these numbers were made"))
        out.append(("p", "predsim simulates every request against each architecture's schedule "
                         "of batch jobs, feature pipelines, model deploys and serving replicas. "
                         "Each replication uses independent random numbers; within a "
                         "replication every architecture sees the same requests, so differences "
                         "are paired and their confidence intervals narrow. Confidence "
                         "intervals are Student-t 95% intervals over replications."))
        return out

    def _pair(self) -> tuple[str, str] | None:
        rec = self.recommendation
        return (rec.compared, rec.baseline) if rec.compared else None

    # -- rendering ------------------------------------------------------------------------------
    def to_markdown(self) -> str:
        """The report as Markdown; images are the PNG files next to it."""
        lines = []
        alts = {f.name: f.alt for f in self.figures()}
        for block in self.blocks():
            kind = block[0]
            if kind == "h1":
                lines += [f"# {_md(block[1])}", ""]
            elif kind == "h2":
                lines += [f"## {_md(block[1])}", ""]
            elif kind == "p":
                lines += [_md(block[1]), ""]
            elif kind == "lead":
                lines += [f"**{_md(block[1])}**", ""]
            elif kind == "ul":
                lines += [f"- {_md(item)}" for item in block[1]] + [""]
            elif kind == "img":
                lines += [f"![{_md(alts[block[1]])}]({block[1]})", ""]
            elif kind == "table":
                t: Table = block[1]
                if t.caption:
                    lines += [f"*{_md(t.caption)}*", ""]
                lines.append("| " + " | ".join(_md_cell(h) for h in t.headers) + " |")
                lines.append("|" + "|".join(":---" if i < t.align_left else "---:"
                                            for i in range(len(t.headers))) + "|")
                for row in t.rows:
                    lines.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
                lines.append("")
        return "\n".join(lines)

    def to_html(self, images: dict[str, bytes]) -> str:
        """The report as one HTML page; ``images`` maps PNG names to their bytes (embedded)."""
        alts = {f.name: f.alt for f in self.figures()}
        body = []
        for block in self.blocks():
            kind = block[0]
            if kind == "h1":
                body.append(f"<h1>{_h(block[1])}</h1>")
            elif kind == "h2":
                body.append(f"<h2>{_h(block[1])}</h2>")
            elif kind == "p":
                body.append(f"<p>{_code(_h(block[1]))}</p>")
            elif kind == "lead":
                body.append(f'<p class="recommendation">{_h(block[1])}</p>')
            elif kind == "ul":
                body.append("<ul>" + "".join(f"<li>{_code(_h(i))}</li>" for i in block[1]) +
                            "</ul>")
            elif kind == "img":
                data = base64.b64encode(images[block[1]]).decode("ascii")
                body.append(f'<figure><img src="data:image/png;base64,{data}" '
                            f'alt="{_h(alts[block[1]])}"></figure>')
            elif kind == "table":
                t = block[1]
                cells = []
                if t.caption:
                    cells.append(f"<caption>{_h(t.caption)}</caption>")
                cells.append("<thead><tr>" + "".join(f"<th>{_h(x)}</th>" for x in t.headers)
                             + "</tr></thead><tbody>")
                for row in t.rows:
                    cells.append("<tr>" + "".join(
                        f'<td class="{"text" if i < t.align_left else "num"}">{_h(c)}</td>'
                        for i, c in enumerate(row)) + "</tr>")
                cells.append("</tbody>")
                body.append('<div class="scroll"><table>' + "".join(cells) + "</table></div>")
        title = _h(f"predsim report: {self.results.scenario.name}")
        return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
                f"<title>{title}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
                + "\n".join(body) + "\n</main>\n</body>\n</html>\n")

    def write(self, out_dir: str | Path) -> list[Path]:
        """Write the PNGs, ``report.md`` and the self-contained ``report.html``: all staged as
        fsynced temporaries first, then renamed into place together (a full disk or a
        read-only folder fails before anything is overwritten; see :class:`sim.report.output.OutputBatch`)."""
        import matplotlib.pyplot as plt

        from sim.report.output import OutputBatch, render_png

        written, images = [], {}
        with OutputBatch(out_dir) as batch:
            for figure in self.figures():
                fig = figure.make()
                try:
                    images[figure.name] = render_png(fig)
                finally:
                    plt.close(fig)
                written.append(batch.add(figure.name, images[figure.name]))
            written.append(batch.add("report.md", self.to_markdown()))
            written.append(batch.add("report.html", self.to_html(images)))
        return written


def _cell(row: dict, column: str, fmt: Callable[[float], str],
          fmt_half: Callable[[float], str] | None = None) -> str:
    value = row.get(column)
    if _nan(value):
        return "-"
    text = fmt(float(value))
    half = row.get(f"{column}_ci95")
    if half is not None and not _nan(half) and half > 0:
        half_text = (fmt_half or fmt)(float(half))
        if re.search(r"[1-9]", half_text):   # no "± $0.00" on numbers known exactly
            text += f" ± {half_text}"
    return text


def _two_digits(x: float) -> str:
    return f"{x:.2g}"


def _cold_start_note(results: Results) -> str | None:
    """What coverage and feature age mean for entities created since the last materialisation
    (cold starts), in words; None when the run had none."""
    s = results.summary
    if "cold_start_rate" not in s or not (s["cold_start_rate"].fillna(0) > 0).any():
        return None
    kinds = {name: spec.kind for name, spec in results.scenario.architectures.items()}
    rates = ", ".join(f"{row['architecture']} {row['cold_start_rate'] * 100:.2g}%"
                      for row in s.to_dict("records") if not _nan(row.get("cold_start_rate")))
    text = (f"Cold starts (requests for entities created after the last feature "
            f"materialisation or scoring job, which have no batch features yet): {rates} of "
            f"requests. ")
    if "batch" in kinds.values():
        text += ("Batch answers them with the fallback, so its coverage falls short of 100% by "
                 "about that share. ")
    if any(k in ("online", "streaming") for k in kinds.values()):
        text += ("Online and streaming do predict for them, so their coverage counts them, but "
                 "without batch features such a prediction is worth the scenario's cold-start "
                 "quality (by default no more than the fallback's). ")
    if any(k == "streaming" for k in kinds.values()):
        text += ("Feature age is per class for streaming: its stream features are as fresh as "
                 "their windows, its batch features as old as their schedule, and both count.")
    return text.strip()


def _age_cell(row: dict) -> str:
    """The mean feature age; for an architecture with both batch and stream features (streaming)
    each class's own age, since the stalest class (its batch features) alone would hide how fresh
    its stream features are, and the stream age alone how old its batch features are."""
    batch, stream = row.get("batch_feature_age_s_mean"), row.get("stream_feature_age_s_mean")
    if batch is not None and stream is not None and not _nan(batch) and not _nan(stream):
        return (f"batch {_age_text(row, 'batch_feature_age_s_mean')}, "
                f"stream {_age_text(row, 'stream_feature_age_s_mean')}")
    if _nan(row.get("feature_age_s_mean")):
        return "-"
    return _age_text(row, "feature_age_s_mean")


def _age_text(row: dict, column: str) -> str:
    text = human_duration(float(row[column]))
    half = row.get(f"{column}_ci95")
    if half is not None and not _nan(half) and half > 0:
        text += f" ± {human_duration(float(half))}"
    return text


def _md(text: str) -> str:
    """Markdown text: dollar signs escaped (renderers would read $...$ as mathematics)."""
    return str(text).replace("$", r"\$")


def _md_cell(text: str) -> str:
    return _md(text).replace("|", r"\|").replace("\n", " ")


def _h(text: str) -> str:
    return html.escape(str(text), quote=True)


def _code(escaped: str) -> str:
    """`backticks` as <code> in already escaped text."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       margin: 0; color: #1d2330; background: #fff; line-height: 1.45; }
main { max-width: 1200px; margin: 0 auto; padding: 1.5rem 1.5rem 4rem; }
h1 { font-size: 1.7rem; margin-bottom: 0.3rem; }
h2 { font-size: 1.25rem; margin-top: 2.2rem; border-bottom: 1px solid #d8dce3;
     padding-bottom: 0.2rem; }
.recommendation { font-size: 1.2rem; font-weight: 600; background: #eef6ee;
                  border-left: 6px solid #2e7d32; padding: 0.8rem 1rem; border-radius: 4px; }
.scroll { overflow-x: auto; margin: 1rem 0; }
table { border-collapse: collapse; font-size: 0.88rem; }
caption { text-align: left; font-style: italic; color: #4a5263; padding: 0.3rem 0; }
th, td { border-bottom: 1px solid #e3e6ec; padding: 0.3rem 0.6rem; vertical-align: top; }
th { background: #f4f6f9; text-align: left; }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
figure { margin: 1rem 0; }
img { max-width: 100%; height: auto; }
code { background: #f4f6f9; padding: 0 0.25rem; border-radius: 3px; }
"""


# --------------------------------------------------------------------------------------------
# Putting it together
# --------------------------------------------------------------------------------------------

def build_report(results: Results, *, analysis: Analysis | None = None,
                 source_text: str | None = None, overrides: tuple[str, ...] | list[str] = (),
                 workers: int = 1, alpha: float = 0.05, power: float = 0.8,
                 progress: Callable[[float], None] | None = None) -> ManagerReport:
    """The manager's report for ``results`` (from ``sim.run``, ideally with replications).

    Re-runs the simulator for the breakeven and the sensitivity (see :class:`Analysis`);
    ``workers > 1`` runs those in parallel processes, with the same numbers. ``source_text`` is
    the scenario file, whose comments annotate the assumptions table; ``overrides`` the
    ``--set`` items applied to it.
    """
    from sim.studies.abtest import PlanError, plan_from_results

    analysis = analysis or Analysis()
    scenario = results.scenario
    rec = recommend(results)
    report = ManagerReport(results, rec, analysis, source_text=source_text,
                           overrides=tuple(overrides))
    if rec.compared is None:
        return report
    pair = (rec.compared, rec.baseline)
    planned = 0
    inputs = None
    if analysis.sensitivity:
        inputs = numeric_inputs(scenario, pair)
        planned += 1 + 2 * len(inputs)
    if analysis.breakeven:
        planned += 3 + analysis.breakeven_steps
    with _Runner(workers, progress, planned) as runner:
        if analysis.breakeven:
            report.breakeven = breakeven(scenario, rec.compared, rec.baseline, analysis, runner)
        if analysis.sensitivity:
            report.sensitivity = sensitivity(scenario, rec.compared, rec.baseline, analysis,
                                             runner, inputs)
    try:
        report.abtest = plan_from_results(results, rec.compared, rec.baseline, alpha=alpha,
                                          power=power)
    except PlanError as exc:
        report.abtest_problem = f"No A/B test plan: {exc}."
    report.methods = _methods(results, rec, alpha, power)
    if progress is not None:
        progress(1.0)
    return report


def _methods(results: Results, rec: Recommendation, alpha: float, power: float):
    """The ways to test ``rec.compared`` against the baseline, from the results at hand (no
    extra simulation): all traffic in the test as in the A/B section, unless the scenario's
    training.evaluation gives a share; None when the rates do not allow it."""
    from sim.studies.abtest import PlanError
    from sim.studies.testplan import compare_from_results, evaluation_options, find_evaluation

    options = evaluation_options(find_evaluation(results.scenario, rec.compared))
    try:
        return compare_from_results(results, rec.compared, rec.baseline,
                                    share=options.get("share", 1.0),
                                    alpha=options.get("alpha", alpha),
                                    power=options.get("power", power))
    except PlanError:
        return None


__all__ = ["Analysis", "ManagerReport", "Recommendation", "Breakeven", "Sensitivity",
           "build_report", "recommend", "comparisons", "breakeven", "sensitivity",
           "numeric_inputs", "assumptions", "active_share", "analysis_scenario"]
