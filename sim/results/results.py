"""Results of one run: tidy pandas tables with units in column names, and the JSON contract.

``Results.summary`` has one row per architecture; ``Results.timeseries`` one row per time bucket
per architecture; ``Results.distributions`` the histograms behind the percentiles (for plots).
See ``docs/glossary.md`` for how each column is computed, and ``sim/results/catalogue.py`` for each
metric's unit, JSON key, search names and label (a new metric: its entry there, its kernel in
:func:`collect`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import metadata

import numpy as np
import pandas as pd

from sim.results.catalogue import AGED_CLASSES, COST_COMPONENTS, LOSS_CAUSES, json_metrics
from sim.results.metrics import Accumulator, Histogram, quantile
from sim.results.reliability import failures_per_day, incident_frame, stale_minutes_per_day
from sim.scenario import Scenario
from sim.units import DAY_S


def version() -> str:
    try:
        return metadata.version("predsim-ml")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "0+unknown"


class NonFiniteResult(ValueError):
    """A result that overflowed to infinity (or is NaN where a number is required): the
    scenario's numbers are too large to simulate. ``where`` names the metric."""

    def __init__(self, where: str, value: float, scenario: str = ""):
        self.where = where
        self.value = value
        prefix = f"{scenario}: " if scenario else ""
        super().__init__(
            f"{prefix}the result {where} is {value} (it overflowed): the scenario's numbers "
            f"are too large to simulate; make the prices, the value per outcome, the metric or "
            f"the times smaller")


def check_finite(data, where: str = "", scenario: str = ""):
    """``data`` (the JSON object) with every NaN (not applicable) made None; NonFiniteResult
    naming the first infinite number (as a key path such as
    ``architectures[online].value_per_day``)."""
    if isinstance(data, dict):
        return {key: check_finite(value, f"{where}.{key}" if where else str(key), scenario)
                for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        out = []
        for i, value in enumerate(data):
            label = value.get("name") if isinstance(value, dict) else None
            out.append(check_finite(value, f"{where}[{label if isinstance(label, str) else i}]",
                                    scenario))
        return out
    if isinstance(data, float) and math.isnan(data):
        return None
    if isinstance(data, float) and not math.isfinite(data):
        raise NonFiniteResult(where, data, scenario)
    return data


@dataclass
class Results:
    """What a run measured, per architecture."""

    scenario: Scenario
    summary: pd.DataFrame
    timeseries: pd.DataFrame
    distributions: dict[str, dict[str, Histogram]]
    replication: int = 0
    notes: list[str] = field(default_factory=list)
    replications: int = 1
    per_replication: pd.DataFrame | None = None
    differences: pd.DataFrame | None = None
    baseline: str | None = None
    verdict: str | None = None
    # What went wrong in the pipelines (failed or preempted runs, stream outages), per
    # architecture: columns architecture, component, cause, start_s, end_s.
    incidents: pd.DataFrame | None = None

    @property
    def seed(self) -> int:
        return self.scenario.seed

    @property
    def plot(self):
        """Figures of these results: ``results.plot.latency_cdf()`` and friends."""
        from sim.report.plots import Plotter
        return Plotter(self)

    def to_dict(self) -> dict:
        """The ``predsim run --json`` object (DESIGN.md), with the run's provenance.

        With several replications every number is the mean over replications, each
        architecture carries ``ci95`` (the same keys, holding 95% confidence half-widths), and
        ``differences`` holds each architecture minus the baseline with paired and unpaired
        95% confidence intervals.
        """
        archs = []
        for row in self.summary.to_dict("records"):
            entry = {"name": row["architecture"], "kind": row["kind"]}
            entry.update(_metrics(row, ""))
            entry["queue_stable"] = (None if pd.isna(row["queue_stable"])
                                     else bool(row["queue_stable"]))
            if self.replications > 1:
                entry["ci95"] = _metrics(row, "_ci95")
            archs.append(entry)
        out = {
            "scenario": self.scenario.name,
            "seed": self.scenario.seed,
            "replications": self.replications,
            "first_replication": self.replication,
            "predsim_version": version(),
            "horizon_s": self.scenario.horizon,
            "warmup_s": self.scenario.warmup,
            "metric": self.scenario.quality.metric,
            "baseline": self.baseline,
            "architectures": archs,
        }
        if self.differences is not None:
            out["differences"] = [
                {"architecture": d["architecture"], "baseline": d["baseline"],
                 "metric": d["metric"], "difference": _num(d["difference"]),
                 "ci95_paired": [_num(d["difference"] - d["ci95_paired"]),
                                 _num(d["difference"] + d["ci95_paired"])],
                 "ci95_unpaired": [_num(d["difference"] - d["ci95_unpaired"]),
                                   _num(d["difference"] + d["ci95_unpaired"])]}
                for d in self.differences.to_dict("records")]
            out["verdict"] = self.verdict
        out["notes"] = self.notes
        out["resolved_scenario"] = self.scenario.to_yaml_dict()
        # Valid JSON always: NaN (not applicable) is already null; anything infinite is an error
        # that names the metric, never an Infinity token or a crash in json.dumps.
        return check_finite(out, scenario=self.scenario.name)


def _metrics(row: dict, suffix: str) -> dict:
    """The per-architecture metrics of the JSON contract from a summary row: each metric of
    the catalogue at its JSON path (``suffix`` ``_ci95``: their confidence half-widths)."""
    return json_metrics(row, suffix, _num)


def _num(x) -> float | None:
    """JSON-safe number: NaN becomes null (infinity is caught by :func:`check_finite`)."""
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def collect(scenario: Scenario, architectures: list, accumulators: list[Accumulator],
            replication: int = 0) -> Results:
    """Turn accumulated sums and histograms into Results."""
    start_s, end_s = scenario.warmup, scenario.end_s
    days = scenario.horizon / DAY_S
    value_per_outcome = scenario.business.value_per_outcome
    rows, series, notes, distributions = [], [], [], {}
    for arch, acc in zip(architectures, accumulators):
        t = acc.totals
        n = t["requests"]
        per = (lambda x: x / n) if n else (lambda x: float("nan"))
        costs = arch.cost_usd_per_day(start_s, end_s)
        scored, unused = arch.wasted(start_s, end_s)
        stats = arch.serving_stats()
        if stats:
            replicas = stats["replicas"]
            utilization = t["busy_s"] / (replicas * scenario.horizon)
            offered = t["queued"] / scenario.horizon * stats["mean_occupancy_s"] / replicas
            stable = offered < 1.0
            if not stable:
                auto = stats["serving"].spec.autoscaling
                fix = ("raise autoscaling.max" if auto is not None and
                       replicas >= auto.max - 1e-9 else "add replicas")
                notes.append(f"{arch.name}: the serving queue is unstable: requests arrive faster "
                             f"than {replicas:.3g} replica(s) can serve them (offered load "
                             f"{offered:.2f} >= 1). Waits grow without bound; {fix}.")
        else:
            utilization = offered = float("nan")
            stable = None
        behind = stream_behind(arch, start_s, end_s)
        if behind is not None:
            notes.append(behind)
        value = t["value"] * value_per_outcome / days
        rows.append({
            "architecture": arch.name,
            "kind": arch.kind,
            "requests": int(n),
            "coverage": per(n - t["fallbacks"]),
            "timeout_rate": per(t["timeouts"]),
            "expired_rate": per(t["expired"]),
            "timeout_fallback_rate": per(t["timeouts"]),
            "missing_fallback_rate": per(t["fallbacks"] - t["timeouts"] - t["expired_fallbacks"]),
            "expired_fallback_rate": per(t["expired_fallbacks"]),
            "stale_answer_rate": per(t["stale_answers"]),
            "error_rate": per(t["errors"]),
            "stale_feature_rate": (per(t["stale_features"]) if scenario.slo.has_freshness
                                   else float("nan")),
            "stale_minutes_per_day": stale_minutes_per_day(arch, scenario.slo, start_s, end_s),
            "pipeline_failures_per_day": failures_per_day(arch, start_s, end_s),
            "latency_ms_mean": per(t["latency_s"]) * 1e3,
            "latency_ms_p50": acc.latency.quantile(0.50) * 1e3,
            "latency_ms_p95": acc.latency.quantile(0.95) * 1e3,
            "latency_ms_p99": acc.latency.quantile(0.99) * 1e3,
            "network_ms_mean": per(t["network_s"]) * 1e3,
            "device_ms_mean": (t["device_s"] / t["device_n"] * 1e3 if t["device_n"]
                               else float("nan")),
            "queue_wait_ms_mean": (t["queue_wait_s"] / t["queued"] * 1e3) if t["queued"] else float("nan"),
            "queue_wait_ms_p99": acc.queue_wait.quantile(0.99) * 1e3,
            "service_ms_mean": (t["service_s"] / t["service_n"] * 1e3) if t["service_n"] else float("nan"),
            "service_ms_p99": acc.service.quantile(0.99) * 1e3,
            "replicas_mean": stats["replicas"] if stats else float("nan"),
            "feature_age_s_mean": t["feature_age_s"] / t["feature_age_n"] if t["feature_age_n"] else float("nan"),
            "feature_age_s_p50": acc.feature_age.quantile(0.50),
            "feature_age_s_p95": acc.feature_age.quantile(0.95),
            **_class_ages(t, acc),
            "cold_start_rate": per(t["cold_starts"]),
            "model_age_s_mean": t["model_age_s"] / t["model_age_n"] if t["model_age_n"] else float("nan"),
            "model_age_s_p50": acc.model_age.quantile(0.50),
            "model_age_s_p95": acc.model_age.quantile(0.95),
            "model_age_s_max": acc.model_age.quantile(1.0),
            "trainings": _trainings(arch, start_s, end_s),
            "trainings_per_day": _trainings(arch, start_s, end_s) / days,
            **_tests(arch, start_s, end_s),
            **_losses(arch),
            "quality_mean": per(t["quality"]),
            "slo_violation_rate": per(t["slo_violations"]) if scenario.slo.latency_p99 else float("nan"),
            "wasted_prediction_rate": unused / scored if scored else float("nan"),
            "utilization": utilization,
            "offered_load": offered,
            "queue_stable": stable,
            **{f"cost_usd_per_day_{c}": costs[c] for c in COST_COMPONENTS},
            "cost_usd_per_day": costs["total"],
            "value_usd_per_day": value,
            "net_value_usd_per_day": value - costs["total"],
        })
        distributions[arch.name] = {"latency_s": acc.latency, "queue_wait_s": acc.queue_wait,
                                    "service_s": acc.service,
                                    "feature_age_s": acc.feature_age, "model_age_s": acc.model_age,
                                    "batch_feature_age_s": acc.batch_age,
                                    "stream_feature_age_s": acc.stream_age}
        series.append(_series_frame(scenario, arch, acc, stats))
    summary = pd.DataFrame(rows)
    timeseries = pd.concat(series, ignore_index=True)
    return Results(scenario, summary, timeseries, distributions, replication, notes,
                   incidents=incident_frame(architectures).assign(replication=replication))


def stream_behind(arch, start_s: float, end_s: float) -> str | None:
    """A note when an architecture's stream processor cannot keep up with the mean event rate:
    its backlog, and the age of its stream features, then grow without bound."""
    stream = getattr(arch, "stream", None)
    flow = getattr(stream, "flow", None)
    if flow is None or not math.isfinite(flow.capacity_per_s):
        return None
    mean_per_s = flow.events_per_day(start_s, end_s) / DAY_S
    if mean_per_s < flow.capacity_per_s:
        return None
    return (f"{arch.name}: the stream processor falls behind for good: events arrive at "
            f"{mean_per_s:.3g}/s on average, more than its {flow.nodes} node(s) process "
            f"({flow.capacity_per_s:.3g}/s). Stream features age without bound; add nodes "
            f"or raise node_capacity (nodes: auto sizes them for the peak).")


def _class_ages(t: dict, acc: Accumulator) -> dict[str, float]:
    """Mean, median and 95th percentile of each feature class's age (NaN: the architecture
    has no such features)."""
    out = {}
    for c in AGED_CLASSES:
        n = t[f"{c}_age_n"]
        histogram = getattr(acc, f"{c}_age")
        out[f"{c}_feature_age_s_mean"] = t[f"{c}_age_s"] / n if n else float("nan")
        out[f"{c}_feature_age_s_p50"] = histogram.quantile(0.50)
        out[f"{c}_feature_age_s_p95"] = histogram.quantile(0.95)
    return out


def _trainings(arch, start_s: float, end_s: float) -> float:
    """Training runs started in the measured window by the model history ``arch`` serves with."""
    count = getattr(arch, "trainings", None)
    return float(count(start_s, end_s)) if count is not None else float("nan")


def _tests(arch, start_s: float, end_s: float) -> dict[str, float]:
    """New models deployed per day, and how testing them went (NaN without tests)."""
    model = getattr(getattr(arch, "world", None), "model", None)
    if model is None:
        return dict.fromkeys(("deploys_per_day", "evaluation_s_mean", "evaluations_stopped_rate",
                              "candidates_superseded_per_day"), float("nan"))
    stats = model.test_stats(start_s, end_s)
    tested = model.training is not None and model.training.evaluation is not None
    nan = float("nan")
    return {"deploys_per_day": stats["deploys_per_day"],
            "evaluation_s_mean": stats["test_hours_mean"] * 3600 if tested else nan,
            "evaluations_stopped_rate": stats["tests_stopped_share"] if tested else nan,
            "candidates_superseded_per_day": (stats["candidates_superseded_per_day"] if tested
                                              else nan)}


def _losses(arch) -> dict[str, float]:
    """Mean metric lost per real prediction to each cause (``quality_lost_<cause>``)."""
    sums = getattr(arch, "losses", None) or {}
    n = sums.get("predictions", 0)
    return {f"quality_lost_{k}": sums[k] / n if n else float("nan") for k in LOSS_CAUSES}


def _series_frame(scenario: Scenario, arch, acc: Accumulator, stats) -> pd.DataFrame:
    s = acc.series
    m = acc.n_buckets
    start = scenario.warmup + np.arange(m) * acc.bucket_s
    width = np.minimum(acc.bucket_s, scenario.end_s - start)
    edges = np.r_[start, start[-1] + width[-1]]
    serving = stats["serving"] if stats else None
    n = s["requests"]
    with np.errstate(invalid="ignore", divide="ignore"):
        frame = pd.DataFrame({
            "architecture": arch.name,
            "bucket_start_s": start,
            "bucket_s": width,
            "requests": n.astype(np.int64),
            "arrival_rate_per_s": n / width,
            "coverage": 1 - s["fallbacks"] / n,
            "latency_ms_mean": s["latency_s"] / n * 1e3,
            "latency_ms_p99": [quantile(acc.series_latency[i], 0.99) * 1e3 for i in range(m)],
            "quality_mean": s["quality"] / n,
            "feature_age_s_mean": s["feature_age_s"] / s["feature_age_n"],
            **{f"{c}_feature_age_s_mean": s[f"{c}_age_s"] / s[f"{c}_age_n"]
               for c in AGED_CLASSES},
            "cold_start_rate": s["cold_starts"] / n,
            "model_age_s_mean": s["model_age_s"] / s["model_age_n"],
            "slo_violation_rate": s["slo_violations"] / n if acc.slo_s else np.nan,
            "replicas": (serving.bucket_replica_seconds(edges) / width) if stats else np.nan,
            **{f"replicas_{kind}": (serving.bucket_replica_seconds(edges, kind=kind) / width
                                    if stats else np.nan)
               for kind in ("asked", "starting", "ready")},
            "utilization": (s["busy_s"] / serving.bucket_replica_seconds(edges, ready=True)
                            if stats else np.nan),
            "queue_length_mean": s["queue_wait_s"] / width if stats else np.nan,
            "value_usd": s["value"] * scenario.business.value_per_outcome,
        })
    return frame
