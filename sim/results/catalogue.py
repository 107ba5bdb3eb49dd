"""The metric catalogue: one entry per number a run reports for each architecture.

Every numeric column of ``Results.summary`` (computed in :func:`sim.results.results.collect`) has one
:class:`Metric` in :data:`METRICS`, in the summary's column order, with:

- ``column``: the summary column (``summary.csv``, ``Results.summary``);
- ``unit``: one of :data:`UNITS` (the column's suffix says it too: ``_ms_``, ``_s_``,
  ``_usd_per_day``, ``_rate``);
- ``json``: its path in each architecture's object of ``predsim run --json``
  (``("latency_ms", "p99")`` is ``architectures[i].latency_ms.p99``; the same path under ``ci95``
  holds its 95% half-width);
- ``aliases``: the short names ``predsim optimize`` / ``capacity`` accept for it besides the
  column itself (``latency_p99``);
- ``load``: whether it depends on the traffic at the time (latency, queueing, coverage...):
  ``--window peak`` judges these over the busiest hour, the others over the scenario's window;
- ``key``: its place among the metrics the replications' difference table and verdict lead
  with (1 first; None: not a key metric);
- ``label``: a plain-language name for tables and plot axes, with the unit;
- ``definition``: one line; the full definition is in docs/glossary.md under the heading
  ``glossary`` (:attr:`Metric.anchor` is its link).

Derived from here: the per-architecture metrics of the JSON (:func:`json_metrics`, used by
``Results.to_dict``), search's metric names (``sim.studies.search.COLUMNS``, ``ALIASES``,
``is_load_metric``), ``sim.results.replications.KEY_METRICS``, the axis labels of sweep plots
(``sim.report.sweep_plots.label``) and :func:`markdown_table` (a table for the glossary).
``tests/test_catalogue.py`` checks that a real run's summary columns and JSON keys are exactly
these, that search accepts every column and alias, that units match suffixes and that the
glossary documents every column.

Adding a metric
---------------
1. Compute it in :func:`sim.results.results.collect` (its kernel; new sums go in the accumulator,
   ``sim/results/metrics.py``), at the place in the row where the column should appear.
2. Add a :class:`Metric` to :data:`METRICS` at the same place: the catalogue's order is the
   summary's column order. Its ``json`` path starts with a group of :data:`JSON_GROUPS` (add a
   new group there, where it should appear in the JSON object).
3. Define it in docs/glossary.md under the heading its ``glossary`` names.

The JSON, search, the replications and plot labels then pick it up; the terminal tables
(``sim/report/output.py``) show a chosen few columns and are laid out by hand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Mapping

# Components of cost per day (summary columns cost_usd_per_day_<component>).
COST_COMPONENTS = ("serving", "batch_scoring", "feature_pipeline", "stream_processing",
                   "training", "evaluation", "storage", "skew_prevention", "devices")
# Causes of metric lost per real prediction (summary columns quality_lost_<cause>).
LOSS_CAUSES = ("feature_staleness", "cold_start", "expired_features", "missing_features",
               "model_staleness", "drift", "skew", "model_variant", "model_training")
# Feature classes whose age is reported (summary columns <class>_feature_age_s_<stat>).
AGED_CLASSES = ("batch", "stream")

UNITS = {
    "count": "a number of events (whole in one run; a mean over replications)",
    "share": "a share of requests (or predictions, or time), 0 to 1",
    "ms": "milliseconds",
    "s": "seconds",
    "replicas": "serving replicas",
    "ratio": "a dimensionless ratio (1 = the replicas are exactly saturated)",
    "per_day": "events (or minutes) per day of the measured window",
    "metric": "the scenario's quality metric (quality.metric, e.g. CTR) per request",
    "usd_per_day": "US dollars per day of the measured window",
}

# The order of the metric groups in each architecture's JSON object (the summary's order
# differs: the JSON keeps the order it was published with). A group is the first element of a
# metric's ``json`` path.
JSON_GROUPS = ("requests", "coverage", "reliability", "latency_ms", "queue_wait_ms", "service_ms",
               "replicas_mean", "feature_age_s", "feature_age_by_class_s", "cold_start_rate",
               "model_age_s", "quality", "slo_violation_rate", "timeout_rate",
               "wasted_prediction_rate", "utilization", "offered_load", "cost_per_day",
               "value_per_day", "net_value_per_day", "trainings", "trainings_per_day",
               "quality_lost", "deploys_per_day", "evaluation", "network_ms",
               "device_ms")

GLOSSARY = "docs/glossary.md"


@dataclass(frozen=True)
class Metric:
    """One summary column and everything said about it (see the module docstring)."""

    column: str
    unit: str
    json: tuple[str, ...]
    label: str
    definition: str
    glossary: str
    aliases: tuple[str, ...] = ()
    load: bool = False
    key: int | None = None
    # In the JSON a whole number, and not under ci95 (``requests``).
    whole: bool = False

    @property
    def json_path(self) -> str:
        """The JSON path as text: ``latency_ms.p99``."""
        return ".".join(self.json)

    @property
    def anchor(self) -> str:
        """Link to its definition: ``docs/glossary.md#latency-latency_ms_mean-...``."""
        return f"{GLOSSARY}#{slug(self.glossary)}"


def slug(heading: str) -> str:
    """A Markdown heading's anchor as GitHub makes it: lower case, punctuation other than
    ``-`` and ``_`` dropped, spaces made hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


# Headings of docs/glossary.md ("### ..." under "Per-architecture summary").
_H_REQUESTS = "`requests`"
_H_COVERAGE = "`coverage` (share, 0 to 1)"
_H_COLD_START = "`cold_start_rate` (share, 0 to 1)"
_H_TIMEOUT = "`timeout_rate` (share)"
_H_RELIABILITY = ("Reliability: `expired_rate`, `<cause>_fallback_rate`, `stale_answer_rate`, "
                  "`error_rate`, `stale_feature_rate`, `stale_minutes_per_day`, "
                  "`pipeline_failures_per_day`")
_H_LATENCY = ("Latency: `latency_ms_mean`, `latency_ms_p50`, `latency_ms_p95`, `latency_ms_p99` "
              "(milliseconds)")
_H_NETWORK = "Network and device: `network_ms_mean`, `device_ms_mean` (milliseconds)"
_H_QUEUE_WAIT = "Queue wait: `queue_wait_ms_mean`, `queue_wait_ms_p99` (milliseconds)"
_H_SERVICE = "Service time: `service_ms_mean`, `service_ms_p99` (milliseconds)"
_H_REPLICAS = "`replicas_mean`"
_H_FEATURE_AGE = ("Feature age: `feature_age_s_mean`, `feature_age_s_p50`, `feature_age_s_p95` "
                  "(seconds)")
_H_CLASS_AGE = ("Feature age by class: `batch_feature_age_s_*`, `stream_feature_age_s_*` "
                "(seconds)")
_H_MODEL_AGE = ("Model age: `model_age_s_mean`, `model_age_s_p50`, `model_age_s_p95`, "
                "`model_age_s_max` (seconds)")
_H_TRAININGS = "`trainings`, `trainings_per_day`"
_H_LOST = "Quality lost: `quality_lost_<cause>`"
_H_DEPLOYS = ("Deploys and tests: `deploys_per_day`, `evaluation_s_mean`, "
              "`evaluations_stopped_rate`, `candidates_superseded_per_day`")
_H_QUALITY = "`quality_mean` (the scenario's metric, e.g. CTR)"
_H_SLO = "`slo_violation_rate` (share)"
_H_WASTED = "`wasted_prediction_rate` (share)"
_H_UTILIZATION = "`utilization` (share)"
_H_OFFERED = "`offered_load` and `queue_stable`"
_H_COST = ("Cost per day: `cost_usd_per_day_<component>` and `cost_usd_per_day` "
           "(US$ per day)")
_H_VALUE = "`value_usd_per_day` and `net_value_usd_per_day` (US$ per day)"

_STAT_WORDS = {"mean": "mean", "p50": "median", "p95": "p95", "p99": "p99", "max": "largest"}
_STAT_TEXT = {"mean": "Mean", "p50": "Median", "p95": "95th percentile of",
              "p99": "99th percentile of", "max": "Largest"}


def _stats(stem: str, unit: str, json_group: str, stats: tuple[str, ...], what: str,
           over: str, glossary: str, *, alias: str | None = None,
           aliased: tuple[str, ...] | None = None, load: bool = False,
           keys: Mapping[str, int] | None = None,
           json_prefix: tuple[str, ...] = ()) -> list[Metric]:
    """A family ``<stem>_<stat>`` (latency_ms_mean, latency_ms_p50...)."""
    unit_word = {"ms": "ms", "s": "s"}[unit]  # time families only
    out = []
    for stat in stats:
        out.append(Metric(
            column=f"{stem}_{stat}", unit=unit, json=(json_group, *json_prefix, stat),
            label=f"{_STAT_WORDS[stat]} {what} ({unit_word})",
            definition=f"{_STAT_TEXT[stat]} {what} {over}.",
            glossary=glossary,
            aliases=((f"{alias}_{stat}",) if alias and (aliased is None or stat in aliased)
                     else ()),
            load=load, key=(keys or {}).get(stat)))
    return out


_COMPONENT_TEXT = {
    "serving": "serving replicas paid for (warming up included)",
    "batch_scoring": "batch scoring jobs",
    "feature_pipeline": "feature materialisations",
    "stream_processing": "the stream processor's nodes",
    "training": "training runs",
    "evaluation": "testing new models before they deploy (training.evaluation)",
    "storage": "stored predictions and online features (per GB-month)",
    "skew_prevention": "keeping training and serving features the same (pipelines.cost_per_day)",
    "devices": "edge: feature syncs and model downloads to users' devices",
}
_CAUSE_TEXT = {
    "feature_staleness": ("feature age", "the age of the feature classes it had"),
    "cold_start": ("cold starts", "feature classes its entity had no features of yet"),
    "expired_features": ("expired features", "feature classes dropped from the store by their "
                         "ttl"),
    "missing_features": ("features it lacks", "feature classes its architecture does not have"),
    "model_staleness": ("model age", "the model's age (model_loss)"),
    "drift": ("drift", "drift the model has not caught up with (drift_loss)"),
    "skew": ("train-serving skew", "features computed apart for training and serving "
             "(skew_loss)"),
    "model_variant": ("the model variant", "a cheaper variant of the model (variant."
                      "quality_kept)"),
    "model_training": ("how models were trained", "late labels, stateful lift or forgetting, "
                       "bad models (< 0: gained)"),
}
_FALLBACK_CAUSES = {
    "timeout": "a timeout (store lookup or serving)",
    "missing": "no stored prediction for its entity yet",
    "expired": "a stored prediction older than its ttl",
}

METRICS: tuple[Metric, ...] = (
    Metric("requests", "count", ("requests",), "requests",
           "Requests that arrived in the measured window.", _H_REQUESTS, whole=True),
    Metric("coverage", "share", ("coverage",), "coverage",
           "Share of requests answered by a real prediction (1 - fallbacks / requests).",
           _H_COVERAGE, load=True, key=5),
    Metric("timeout_rate", "share", ("timeout_rate",), "share of requests timed out",
           "Share of requests that hit a timeout (and got the fallback).", _H_TIMEOUT,
           load=True),
    Metric("expired_rate", "share", ("reliability", "expired_rate"),
           "share of requests that met expired data",
           "Share of requests whose stored prediction or some feature class was older than "
           "its ttl.", _H_RELIABILITY),
    *(Metric(f"{cause}_fallback_rate", "share", ("reliability", "fallback_rate", cause),
             f"share of requests falling back for {cause}",
             f"Share of requests without a valid prediction due to {text}.",
             _H_RELIABILITY, load=cause == "timeout")
      for cause, text in _FALLBACK_CAUSES.items()),
    Metric("stale_answer_rate", "share", ("reliability", "stale_answer_rate"),
           "share of requests answered by an expired prediction",
           "Share of requests answered by the fallback step stale (a prediction past its ttl).",
           _H_RELIABILITY),
    Metric("error_rate", "share", ("reliability", "error_rate"), "share of requests answered "
           "with nothing", "Share of requests the fallback chain answered with an error "
           "(nothing).", _H_RELIABILITY, load=True),
    Metric("stale_feature_rate", "share", ("reliability", "stale_feature_rate"),
           "share of requests served stale data",
           "Share of requests answered with features or a prediction past slo.freshness.",
           _H_RELIABILITY),
    Metric("stale_minutes_per_day", "per_day", ("reliability", "stale_minutes_per_day"),
           "minutes per day without fresh data",
           "Minutes per day in which some data in force was older than slo.freshness.",
           _H_RELIABILITY),
    Metric("pipeline_failures_per_day", "per_day", ("reliability", "pipeline_failures_per_day"),
           "pipeline failures per day",
           "Failed or preempted runs and stream outages begun in the measured window, per day.",
           _H_RELIABILITY),
    *_stats("latency_ms", "ms", "latency_ms", ("mean", "p50", "p95", "p99"), "latency",
            "from arrival to answer, over all requests (fallbacks included)", _H_LATENCY,
            alias="latency", load=True, keys={"p99": 7}),
    Metric("network_ms_mean", "ms", ("network_ms", "mean"), "mean network round trip (ms)",
           "Mean round trip between client and serving tier (scenario.network), part of "
           "latency; 0 without.", _H_NETWORK),
    Metric("device_ms_mean", "ms", ("device_ms", "mean"), "mean time on the device (ms)",
           "Mean on-device inference time over the requests an edge architecture answered "
           "on the phone.", _H_NETWORK),
    *_stats("queue_wait_ms", "ms", "queue_wait_ms", ("mean", "p99"), "queue wait",
            "from arrival until a replica took the request, over queued requests",
            _H_QUEUE_WAIT, alias="queue_wait", load=True),
    *_stats("service_ms", "ms", "service_ms", ("mean", "p99"), "service time",
            "(replica time of the request or its batch), over requests a replica took",
            _H_SERVICE, load=True),
    Metric("replicas_mean", "replicas", ("replicas_mean",), "mean ready replicas",
           "Serving replicas ready to serve, averaged over the measured window.", _H_REPLICAS,
           load=True),
    *_stats("feature_age_s", "s", "feature_age_s", ("mean", "p50", "p95"), "feature age",
            "(of the stalest feature class used), over real predictions", _H_FEATURE_AGE,
            alias="feature_age", keys={"mean": 6}),
    *(m for c in AGED_CLASSES for m in _stats(
        f"{c}_feature_age_s", "s", "feature_age_by_class_s", ("mean", "p50", "p95"),
        f"{c} feature age", f"over real predictions with {c} features (cold starts excluded)",
        _H_CLASS_AGE, json_prefix=(c,))),
    Metric("cold_start_rate", "share", ("cold_start_rate",), "share of requests cold-started",
           "Share of requests (timeouts excluded) whose entity had no features of some class "
           "yet.", _H_COLD_START),
    *_stats("model_age_s", "s", "model_age_s", ("mean", "p50", "p95", "max"), "model age",
            "(arrival minus the model's data cut-off), over real predictions", _H_MODEL_AGE,
            alias="model_age", aliased=("mean",)),
    Metric("trainings", "count", ("trainings",), "training runs",
           "Training runs (or continual updates) started in the measured window.",
           _H_TRAININGS),
    Metric("trainings_per_day", "per_day", ("trainings_per_day",), "training runs per day",
           "Training runs started in the measured window, per day.", _H_TRAININGS),
    Metric("deploys_per_day", "per_day", ("deploys_per_day",), "new models deployed per day",
           "New models that started serving in the measured window, per day.", _H_DEPLOYS),
    Metric("evaluation_s_mean", "s", ("evaluation", "s_mean"), "mean time testing a model (s)",
           "Mean time from the start of a candidate's test to its decision (training."
           "evaluation).", _H_DEPLOYS),
    Metric("evaluations_stopped_rate", "share", ("evaluation", "stopped_rate"),
           "share of tested models stopped", "Share of tests ended in the window that stopped "
           "their candidate (a bad model).", _H_DEPLOYS),
    Metric("candidates_superseded_per_day", "per_day", ("evaluation", "superseded_per_day"),
           "trained models never tested, per day", "Candidates dropped while waiting for a "
           "test because a newer one arrived, per day.", _H_DEPLOYS),
    *(Metric(f"quality_lost_{cause}", "metric", ("quality_lost", cause),
             f"quality lost to {_CAUSE_TEXT[cause][0]}",
             f"Metric lost per real prediction, on average, to {_CAUSE_TEXT[cause][1]}.",
             _H_LOST) for cause in LOSS_CAUSES),
    Metric("quality_mean", "metric", ("quality", "mean"), "mean quality",
           "Mean quality metric (e.g. CTR) over all requests, fallbacks at the fallback's "
           "quality.", _H_QUALITY, aliases=("quality",), key=4),
    Metric("slo_violation_rate", "share", ("slo_violation_rate",),
           "share of requests over the SLO",
           "Share of requests slower than slo.latency_p99 (empty without an SLO).", _H_SLO,
           load=True, key=8),
    Metric("wasted_prediction_rate", "share", ("wasted_prediction_rate",),
           "share of batch predictions never read",
           "Share of the predictions scoring jobs wrote that no request read before they were "
           "replaced.", _H_WASTED),
    Metric("utilization", "share", ("utilization",), "replica utilisation",
           "Time replicas spent serving over ready replica time.", _H_UTILIZATION, load=True),
    Metric("offered_load", "ratio", ("offered_load",), "offered load per replica",
           "Arrival rate into the queue times mean occupancy, per replica (stable below 1).",
           _H_OFFERED, load=True),
    *(Metric(f"cost_usd_per_day_{c}", "usd_per_day", ("cost_per_day", c),
             f"{c.replace('_', ' ')} cost (US$ per day)",
             f"Cost per day of {_COMPONENT_TEXT[c]}.", _H_COST,
             aliases=(f"cost_per_day_{c}",)) for c in COST_COMPONENTS),
    Metric("cost_usd_per_day", "usd_per_day", ("cost_per_day", "total"), "cost (US$ per day)",
           "Total cost per day: the sum of the components.", _H_COST,
           aliases=("cost_per_day", "cost"), key=3),
    Metric("value_usd_per_day", "usd_per_day", ("value_per_day",), "value (US$ per day)",
           "Expected outcomes times value_per_outcome, less the latency penalty, per day.",
           _H_VALUE, aliases=("value_per_day", "value"), key=2),
    Metric("net_value_usd_per_day", "usd_per_day", ("net_value_per_day",),
           "net value (US$ per day)", "Value per day minus cost per day.", _H_VALUE,
           aliases=("net_value_per_day", "net_value"), key=1),
)

METRIC: dict[str, Metric] = {m.column: m for m in METRICS}
COLUMNS: tuple[str, ...] = tuple(METRIC)


def aliases() -> dict[str, str]:
    """Every short metric name -> its summary column (search's ``ALIASES``)."""
    return {alias: m.column for m in METRICS for alias in m.aliases}


def load_columns() -> frozenset[str]:
    """The columns that depend on the load at the time (search's ``LOAD_COLUMNS``)."""
    return frozenset(m.column for m in METRICS if m.load)


def key_metrics() -> tuple[str, ...]:
    """The columns the verdict and the difference table lead with, in order."""
    return tuple(m.column for m in sorted((m for m in METRICS if m.key is not None),
                                          key=lambda m: m.key))


def label(column: str) -> str:
    """A plain-language label (with the unit) for a summary column; another column's name
    with spaces for underscores."""
    metric = METRIC.get(column)
    return metric.label if metric is not None else column.replace("_", " ")


def unit(column: str) -> str | None:
    """The unit (a key of :data:`UNITS`) of a summary column (or its ``_ci95``); None for a
    column that is not a metric."""
    metric = METRIC.get(column) or METRIC.get(column.removesuffix("_ci95"))
    return metric.unit if metric is not None else None


def json_order() -> list[Metric]:
    """The metrics in the order of the JSON object: by :data:`JSON_GROUPS`, then in the
    catalogue's order within a group."""
    rank = {group: i for i, group in enumerate(JSON_GROUPS)}
    return sorted(METRICS, key=lambda m: rank[m.json[0]])  # stable: catalogue order in a group


def json_metrics(row: Mapping, suffix: str = "",
                 number: Callable[[object], object] = lambda x: x) -> dict:
    """The metrics of one architecture's JSON object from a summary row: every metric at its
    ``json`` path, its value ``number(row[column + suffix])``. With a ``suffix`` (``_ci95``) the
    ``whole`` metrics (``requests``) are left out; without one they are whole numbers."""
    out: dict = {}
    for metric in json_order():
        if metric.whole:
            if suffix:
                continue
            value = int(round(row[metric.column]))
        else:
            value = number(row.get(metric.column + suffix))
        node = out
        for part in metric.json[:-1]:
            node = node.setdefault(part, {})
        node[metric.json[-1]] = value
    return out


def json_paths() -> list[str]:
    """Every metric's JSON path as text (``latency_ms.p99``), in the JSON's order."""
    return [m.json_path for m in json_order()]


def markdown_table() -> str:
    """The catalogue as a Markdown table (column, unit, JSON key, search names, definition),
    each column linked to its glossary section."""
    lines = ["| column | unit | JSON | search also accepts | definition |",
             "|---|---|---|---|---|"]
    for m in METRICS:
        link = f"[`{m.column}`](#{slug(m.glossary)})"
        names = ", ".join(f"`{a}`" for a in m.aliases) or "-"
        lines.append(f"| {link} | {m.unit} | `{m.json_path}` | {names} | {m.definition} |")
    return "\n".join(lines) + "\n"


def _check() -> None:
    """Catalogue mistakes fail at import: duplicate columns, aliases or JSON paths, unknown
    units or groups, key metrics out of sequence."""
    seen: dict[str, str] = {}
    for m in METRICS:
        for name in (m.column, *m.aliases):
            if name in seen:
                raise ValueError(f"catalogue: {name!r} names both {seen[name]} and {m.column}")
            seen[name] = m.column
        if m.unit not in UNITS:
            raise ValueError(f"catalogue: {m.column}: unknown unit {m.unit!r}")
        if m.json[0] not in JSON_GROUPS:
            raise ValueError(f"catalogue: {m.column}: JSON group {m.json[0]!r} is not in "
                             f"JSON_GROUPS")
    paths = [m.json for m in METRICS]
    if len(set(paths)) != len(paths):
        raise ValueError("catalogue: two metrics share a JSON path")
    for path in paths:
        if any(other[:len(path)] == path and other != path for other in paths):
            raise ValueError(f"catalogue: JSON path {'.'.join(path)} is also a group")
    keys = sorted(m.key for m in METRICS if m.key is not None)
    if keys != list(range(1, len(keys) + 1)):
        raise ValueError(f"catalogue: key metric places must be 1..n, got {keys}")


_check()
