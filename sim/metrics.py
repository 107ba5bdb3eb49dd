"""Streaming aggregation of per-request outcomes into Results, in memory independent of traffic.

Percentiles come from log-bucketed histograms: bucket edges grow by a factor ``GAMMA = 1.01`` from
1 microsecond to 10^7 seconds, and a percentile is reported at its bucket's geometric middle, so
its relative error is at most ``sqrt(1.01) - 1 < 0.5%``. Means are exact sums.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

GAMMA = 1.01
LOW_S = 1e-6
HIGH_S = 1e7
N_BINS = int(math.ceil(math.log(HIGH_S / LOW_S) / math.log(GAMMA))) + 2
_LOG_GAMMA = math.log(GAMMA)


def bin_index(values_s: np.ndarray) -> np.ndarray:
    """Histogram bin of each value: 0 below 1 us (including 0), N_BINS-1 above 10^7 s."""
    with np.errstate(divide="ignore", invalid="ignore"):
        k = np.floor(np.log(np.maximum(values_s, LOW_S) / LOW_S) / _LOG_GAMMA).astype(np.int64) + 1
    k = np.where(values_s < LOW_S, 0, k)
    return np.clip(k, 0, N_BINS - 1)


def bin_value(k: np.ndarray | int) -> np.ndarray:
    """The value a bin stands for: its geometric middle (0 for the lowest bin)."""
    k = np.asarray(k)
    return np.where(k == 0, 0.0, LOW_S * GAMMA ** (np.maximum(k, 1) - 0.5))


def quantile(counts: np.ndarray, q: float) -> float:
    """The q-quantile (0 < q <= 1) of a histogram; NaN when it is empty."""
    total = counts.sum()
    if total == 0:
        return float("nan")
    rank = max(1, math.ceil(q * total - 1e-9))
    k = int(np.searchsorted(np.cumsum(counts), rank, side="left"))
    return float(bin_value(k))


class Histogram:
    """A log-bucketed histogram of non-negative durations in seconds."""

    def __init__(self):
        self.counts = np.zeros(N_BINS, dtype=np.int64)

    def add(self, values_s: np.ndarray) -> None:
        if values_s.size:
            self.counts += np.bincount(bin_index(values_s), minlength=N_BINS)

    def quantile(self, q: float) -> float:
        return quantile(self.counts, q)

    def cdf(self) -> tuple[np.ndarray, np.ndarray]:
        """(values, cumulative share) at the occupied bins, for plotting."""
        total = self.counts.sum()
        occupied = np.flatnonzero(self.counts)
        if total == 0:
            return np.empty(0), np.empty(0)
        cum = np.cumsum(self.counts)[occupied] / total
        return bin_value(occupied), cum


@dataclass
class Outcomes:
    """What happened to each request of a chunk under one architecture (arrays of equal length).

    Ages are NaN for requests answered by the fallback. ``busy_s`` is the replica time each
    request occupied from ``service_start_s`` on (0 for precomputed predictions and for requests
    that gave up waiting).
    """

    t_s: np.ndarray
    latency_s: np.ndarray
    queue_wait_s: np.ndarray
    fallback: np.ndarray
    timed_out: np.ndarray
    feature_age_s: np.ndarray
    model_age_s: np.ndarray
    quality: np.ndarray
    busy_s: np.ndarray
    service_start_s: np.ndarray
    queued: np.ndarray  # went through the serving queue

    def select(self, mask: np.ndarray) -> "Outcomes":
        return Outcomes(**{k: v[mask] for k, v in self.__dict__.items()})


_SERIES = ("requests", "fallbacks", "latency_s", "quality", "value", "feature_age_s",
           "feature_age_n", "model_age_s", "model_age_n", "busy_s", "slo_violations")


@dataclass
class Accumulator:
    """Everything measured about one architecture, accumulated chunk by chunk."""

    name: str
    kind: str
    n_buckets: int
    bucket_s: float
    warmup_s: float
    end_s: float
    slo_s: float | None
    penalty_per_100ms: float
    latency: Histogram = field(default_factory=Histogram)
    queue_wait: Histogram = field(default_factory=Histogram)
    feature_age: Histogram = field(default_factory=Histogram)
    model_age: Histogram = field(default_factory=Histogram)
    totals: dict = field(default_factory=dict)
    series: dict = field(default_factory=dict)
    series_latency: np.ndarray | None = None

    def __post_init__(self):
        self.totals = {k: 0.0 for k in ("requests", "fallbacks", "timeouts", "latency_s",
                                        "queue_wait_s", "queued", "feature_age_s",
                                        "feature_age_n", "model_age_s", "model_age_n",
                                        "quality", "value", "busy_s", "slo_violations")}
        self.series = {k: np.zeros(self.n_buckets) for k in _SERIES}
        self.series_latency = np.zeros((self.n_buckets, N_BINS), dtype=np.int64)

    def value_weight(self, latency_s: np.ndarray) -> np.ndarray:
        """1 - latency penalty, capped so that a request never has negative value."""
        if self.penalty_per_100ms == 0:
            return np.ones_like(latency_s)
        return 1.0 - np.minimum(1.0, self.penalty_per_100ms * latency_s / 0.1)

    def add(self, out: Outcomes) -> None:
        """Add a chunk's outcomes; requests in the warm-up are left out.

        Replica busy time is counted where it happens: the part of each service that falls in
        the measured window, whenever the request arrived.
        """
        self._add_busy(out)
        if out.t_s.size and out.t_s[0] < self.warmup_s:
            out = out.select(out.t_s >= self.warmup_s)
        n = out.t_s.size
        if n == 0:
            return
        tot = self.totals
        real = ~out.fallback
        value = out.quality * self.value_weight(out.latency_s)
        slo = (out.latency_s > self.slo_s) if self.slo_s is not None else np.zeros(n, bool)
        tot["requests"] += n
        tot["fallbacks"] += int(out.fallback.sum())
        tot["timeouts"] += int(out.timed_out.sum())
        tot["latency_s"] += float(out.latency_s.sum())
        tot["queued"] += int(out.queued.sum())
        tot["queue_wait_s"] += float(out.queue_wait_s[out.queued].sum())
        fa, ma = out.feature_age_s[real], out.model_age_s[real]
        fa_ok, ma_ok = ~np.isnan(fa), ~np.isnan(ma)
        tot["feature_age_s"] += float(fa[fa_ok].sum())
        tot["feature_age_n"] += int(fa_ok.sum())
        tot["model_age_s"] += float(ma[ma_ok].sum())
        tot["model_age_n"] += int(ma_ok.sum())
        tot["quality"] += float(out.quality.sum())
        tot["value"] += float(value.sum())
        tot["slo_violations"] += int(slo.sum())
        self.latency.add(out.latency_s)
        self.queue_wait.add(out.queue_wait_s[out.queued])
        self.feature_age.add(fa[fa_ok])
        self.model_age.add(ma[ma_ok])

        b = np.minimum(((out.t_s - self.warmup_s) / self.bucket_s).astype(np.int64),
                       self.n_buckets - 1)
        m = self.n_buckets
        s = self.series
        s["requests"] += np.bincount(b, minlength=m)
        s["fallbacks"] += np.bincount(b, weights=out.fallback, minlength=m)
        s["latency_s"] += np.bincount(b, weights=out.latency_s, minlength=m)
        s["quality"] += np.bincount(b, weights=out.quality, minlength=m)
        s["value"] += np.bincount(b, weights=value, minlength=m)
        fa_all = np.where(real, out.feature_age_s, np.nan)
        ma_all = np.where(real, out.model_age_s, np.nan)
        s["feature_age_s"] += np.bincount(b, weights=np.nan_to_num(fa_all), minlength=m)
        s["feature_age_n"] += np.bincount(b, weights=~np.isnan(fa_all), minlength=m)
        s["model_age_s"] += np.bincount(b, weights=np.nan_to_num(ma_all), minlength=m)
        s["model_age_n"] += np.bincount(b, weights=~np.isnan(ma_all), minlength=m)
        s["slo_violations"] += np.bincount(b, weights=slo, minlength=m)
        flat = b * N_BINS + bin_index(out.latency_s)
        self.series_latency += np.bincount(flat, minlength=m * N_BINS).reshape(m, N_BINS)

    def _add_busy(self, out: Outcomes) -> None:
        busy = out.busy_s > 0
        if not busy.any():
            return
        start = out.service_start_s[busy]
        end = start + out.busy_s[busy]
        inside = np.clip(np.minimum(end, self.end_s) - np.maximum(start, self.warmup_s), 0, None)
        self.totals["busy_s"] += float(inside.sum())
        b = np.clip(((start - self.warmup_s) / self.bucket_s).astype(np.int64), 0,
                    self.n_buckets - 1)
        self.series["busy_s"] += np.bincount(b, weights=inside, minlength=self.n_buckets)
