"""Replications: means with 95% confidence intervals, paired differences, and a verdict.

Replication ``r`` uses the random streams ``(seed, r)``, so replications are independent and the
same ``(seed, r)`` always gives the same numbers, whatever runs them and in which order. Within
a replication every architecture sees the same requests (common random numbers), so the
difference between two architectures is computed per replication and its confidence interval
(the *paired* one) is much narrower than the one from comparing two independent means (the
*unpaired*, Welch, one), which is reported alongside.
"""

from __future__ import annotations

import math
import os
from typing import Callable

import numpy as np
import pandas as pd

from sim.results.catalogue import key_metrics
from sim.engine.run import simulate
from sim.studies.executors import LocalExecutor
from sim.results.metrics import Histogram
from sim.results.results import Results
from sim.scenario import Scenario
from sim.units import format_usd

LEVEL = 0.95
# Differences the verdict and the difference table lead with, in this order (the catalogue's
# ``key``: net value, value, cost, quality, coverage, feature age, p99 latency, SLO violations).
KEY_METRICS = key_metrics()



def _t_ppf(q: float, dof: float) -> float:
    """Student's t quantile (scipy.stats is imported here, on first use: it costs a quarter of
    a second of every ``import sim``)."""
    from scipy import stats
    return float(stats.t.ppf(q, dof))

def t_half_width(values: np.ndarray, level: float = LEVEL) -> float:
    """Student-t confidence half-width of the mean of independent values (NaN below 2)."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    n = values.size
    if n < 2:
        return float("nan")
    return float(_t_ppf(0.5 + level / 2, n - 1) * values.std(ddof=1) / math.sqrt(n))


def welch_half_width(a: np.ndarray, b: np.ndarray, level: float = LEVEL) -> float:
    """Half-width of the CI of mean(a) - mean(b) for independent samples (Welch)."""
    n, m = len(a), len(b)
    if n < 2 or m < 2:
        return float("nan")
    va, vb = np.var(a, ddof=1) / n, np.var(b, ddof=1) / m
    if va + vb == 0:
        return 0.0
    dof = (va + vb) ** 2 / (va ** 2 / (n - 1) + vb ** 2 / (m - 1))
    return float(_t_ppf(0.5 + level / 2, dof) * math.sqrt(va + vb))


def run(scenario: Scenario, replications: int = 1, *, replication: int = 0,
        baseline: str | None = None, target_precision: float | None = None,
        max_replications: int = 50, workers: int = 1, engine: str = "fast",
        progress: Callable[[float], None] | None = None) -> Results:
    """Simulate ``replications`` independent replications and combine them.

    ``baseline`` names the architecture others are compared with (default: the first batch
    architecture, else the first). With ``target_precision`` (e.g. 0.1), replications are added
    until the 95% CI half-width of every paired net-value difference is at most that share of
    the difference (or of the baseline's net value when the difference is nearly zero), up to
    ``max_replications``.
    """
    if replications < 1:
        raise ValueError("replications must be >= 1")
    baseline = baseline or default_baseline(scenario)
    if baseline not in scenario.architectures:
        raise ValueError(f"baseline {baseline!r} is not an architecture of this scenario "
                         f"(choose from {', '.join(scenario.architectures)})")
    runs: list[Results] = []
    target = replications
    while len(runs) < target:
        start = replication + len(runs)
        batch = list(range(start, replication + target))
        runs.extend(_simulate_many(scenario, batch, workers, engine, progress, len(runs), target))
        if target_precision is not None and len(runs) >= target:
            combined = combine(runs, baseline)
            needed = replications_needed(combined, target_precision)
            target = min(max_replications, max(target, needed))
    return combine(runs, baseline, target_precision=target_precision)


def default_baseline(scenario: Scenario) -> str:
    for name, spec in scenario.architectures.items():
        if spec.kind == "batch":
            return name
    return next(iter(scenario.architectures))


def _simulate_many(scenario, indices, workers, engine, progress, done_before, total):
    if progress is not None:
        progress(done_before / total)
    if workers > 1 and len(indices) > 1:
        def done(i):
            if progress is not None:
                progress((done_before + i + 1) / total)

        with LocalExecutor(min(workers, len(indices))) as executor:
            return executor.map(_replication, [(scenario, r, engine) for r in indices], done)
    out = []
    for i, r in enumerate(indices):
        step = (lambda f, i=i: progress((done_before + i + f) / total)) if progress else None
        out.append(simulate(scenario, replication=r, progress=step, engine=engine))
    return out


def _replication(scenario, replication: int, engine: str):
    """One replication in a worker process (module level, so it pickles)."""
    return simulate(scenario, replication=replication, engine=engine)


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def _numeric_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns
            if c not in ("architecture", "kind", "replication") and
            pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])]


def combine(runs: list[Results], baseline: str, target_precision: float | None = None) -> Results:
    """Means, CIs, paired differences and the verdict over replications of one scenario."""
    first = runs[0]
    per_rep = pd.concat([r.summary.assign(replication=r.replication) for r in runs],
                        ignore_index=True)
    numeric = _numeric_columns(first.summary)
    order = list(first.summary["architecture"])
    rows = []
    for name in order:
        group = per_rep[per_rep["architecture"] == name]
        row = {"architecture": name, "kind": group["kind"].iloc[0], "replications": len(runs)}
        for col in first.summary.columns:
            if col in numeric:
                row[col] = float(group[col].mean()) if group[col].notna().any() else float("nan")
            elif col not in ("architecture", "kind"):
                row[col] = group[col].iloc[0] if col != "queue_stable" else \
                    (None if group[col].isna().all() else bool(group[col].fillna(True).all()))
        for col in numeric:
            row[f"{col}_ci95"] = t_half_width(group[col].to_numpy(float))
        rows.append(row)
    summary = pd.DataFrame(rows)
    differences = _differences(per_rep, order, baseline, numeric)
    timeseries = (pd.concat([r.timeseries for r in runs])
                  .groupby(["architecture", "bucket_start_s"], sort=False).mean(numeric_only=True)
                  .reset_index()) if len(runs) > 1 else first.timeseries
    distributions = {}
    for name in order:
        merged = {}
        for key in first.distributions[name]:
            hist = Histogram()
            for r in runs:
                hist.counts += r.distributions[name][key].counts
            merged[key] = hist
        distributions[name] = merged
    notes = list(dict.fromkeys(n for r in runs for n in r.notes))
    combined = Results(first.scenario, summary, timeseries, distributions,
                       replication=first.replication, notes=notes, replications=len(runs),
                       per_replication=per_rep, differences=differences, baseline=baseline)
    combined.incidents = pd.concat([r.incidents for r in runs if r.incidents is not None],
                                   ignore_index=True) if runs[0].incidents is not None else None
    combined.verdict = verdict(combined, target_precision)
    return combined


def _differences(per_rep: pd.DataFrame, order: list[str], baseline: str,
                 numeric: list[str]) -> pd.DataFrame:
    base = per_rep[per_rep["architecture"] == baseline].set_index("replication")
    rows = []
    for name in order:
        if name == baseline:
            continue
        other = per_rep[per_rep["architecture"] == name].set_index("replication")
        for metric in KEY_METRICS + tuple(m for m in numeric if m not in KEY_METRICS):
            a, b = other[metric].to_numpy(float), base[metric].to_numpy(float)
            if np.isnan(a).all() or np.isnan(b).all():
                continue
            diff = a - b
            mean = float(np.nanmean(diff))
            paired = t_half_width(diff)
            unpaired = welch_half_width(a, b)
            rows.append({"architecture": name, "baseline": baseline, "metric": metric,
                         "difference": mean, "ci95_paired": paired,
                         "ci95_unpaired": unpaired, "low": mean - paired, "high": mean + paired,
                         "sd_paired": float(np.std(diff, ddof=1)) if diff.size > 1 else float("nan")})
    return pd.DataFrame(rows, columns=["architecture", "baseline", "metric", "difference",
                                       "ci95_paired", "ci95_unpaired", "low", "high",
                                       "sd_paired"])


def replications_needed(results: Results, precision: float, metric: str =
                        "net_value_usd_per_day") -> int:
    """Replications for every paired difference's half-width to be within ``precision`` of it."""
    d = results.differences
    d = d[d["metric"] == metric]
    n = results.replications
    if d.empty:
        return n
    base_value = abs(float(results.summary.set_index("architecture")
                           .loc[results.baseline, metric]))
    needed = n
    for row in d.itertuples():
        if math.isnan(row.sd_paired):
            needed = max(needed, n + 1)
            continue
        scale = max(abs(row.difference), 1e-3 * base_value, 1e-12)
        t = _t_ppf(0.975, max(n - 1, 1))
        needed = max(needed, math.ceil((t * row.sd_paired / (precision * scale)) ** 2))
    return needed


def verdict(results: Results, target_precision: float | None = None,
            metric: str = "net_value_usd_per_day") -> str:
    """Plain sentences: which architecture beats the baseline on net value, and how sure we are."""
    d = results.differences
    d = d[d["metric"] == metric]
    n = results.replications
    base = results.baseline
    if d.empty:
        return f"Only one architecture ({base}): nothing to compare."
    lines = []
    for row in d.itertuples():
        if n < 2 or math.isnan(row.ci95_paired):
            lines.append(f"{row.architecture} vs {base}: net value {format_usd(row.difference)}/day "
                         f"from a single replication; run with --replications 5 or more for a "
                         f"confidence interval.")
            continue
        interval = f"(95% CI {format_usd(row.low)} to {format_usd(row.high)})"
        if row.low > 0:
            lines.append(f"{row.architecture} beats {base} on net value by "
                         f"{format_usd(row.difference)}/day {interval}.")
        elif row.high < 0:
            lines.append(f"{row.architecture} loses to {base} on net value by "
                         f"{format_usd(-row.difference)}/day (95% CI {format_usd(-row.high)} to "
                         f"{format_usd(-row.low)}).")
        else:
            more = _replications_to_detect(row.difference, row.sd_paired, n)
            hint = f"; run about {more} replications to tell" if more else ""
            lines.append(f"No difference in net value between {row.architecture} and {base} "
                         f"detectable with {n} replications {interval}{hint}.")
    return "\n".join(lines)


def _replications_to_detect(difference: float, sd: float, n: int) -> int | None:
    if not difference or math.isnan(sd) or sd == 0:
        return None
    m = n
    for _ in range(20):  # fixed point: t quantile depends on m
        m_new = math.ceil((_t_ppf(0.975, max(m - 1, 1)) * sd / abs(difference)) ** 2)
        if m_new == m:
            break
        m = max(m_new, 2)
    return m if m > n else n + 1
