"""Streaming aggregation of per-request outcomes into Results, in memory independent of traffic.

Percentiles come from log-bucketed histograms in the manner of HdrHistogram: a value's bucket is
the top ``1 + 11 + MANTISSA_BITS`` bits of its IEEE-754 double (sign, exponent and the leading
``MANTISSA_BITS = 7`` mantissa bits), found with one shift of its bit pattern, no logarithm. Each
power of two is split into 128 buckets whose upper edge is at most ``1 + 1/128`` times their
lower one, from 1 microsecond to 10^9 seconds (about 32 years). A percentile is reported at its
bucket's geometric middle, so its relative error is at most ``RESOLUTION = sqrt(1 + 1/128) - 1``
(0.39%). Means are exact sums.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numba import njit

MANTISSA_BITS = 7
SHIFT = 52 - MANTISSA_BITS
RESOLUTION = math.sqrt(1.0 + 2.0 ** -MANTISSA_BITS) - 1.0  # relative error of a percentile
LOW_S = 1e-6
HIGH_S = 1e9  # model ages of monthly or rarer retraining fit


def _bits(x: float) -> int:
    return int(np.array(x, dtype=np.float64).view(np.int64))


BASE = _bits(LOW_S) >> SHIFT  # the bucket of 1 us is bin 1; bin 0 holds 0 and anything below
N_BINS = (_bits(HIGH_S) >> SHIFT) - BASE + 2  # the last bin holds 10^9 s and above


def bin_index(values_s: np.ndarray) -> np.ndarray:
    """Histogram bin of each value: 0 below 1 us (including 0 and NaN), N_BINS-1 from 10^9 s."""
    values_s = np.asarray(values_s, dtype=np.float64)
    k = (np.clip(values_s, LOW_S, HIGH_S).view(np.int64) >> SHIFT) - BASE + 1
    k = np.where(values_s >= LOW_S, k, 0)
    return np.where(values_s >= HIGH_S, N_BINS - 1, k)


def bin_value(k: np.ndarray | int) -> np.ndarray:
    """The value a bin stands for: its geometric middle (0 for the lowest bin)."""
    k = np.asarray(k, dtype=np.int64)
    lower = ((np.maximum(k, 1) - 1 + BASE) << SHIFT).view(np.float64)
    upper = ((np.maximum(k, 1) + BASE) << SHIFT).view(np.float64)
    return np.where(k == 0, 0.0, np.sqrt(lower * upper))


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

    Ages are NaN for requests answered by the fallback. ``feature_age_s`` is the age of the
    stalest feature class the prediction used; ``batch_age_s`` and ``stream_age_s`` each class's. ``busy_s`` is the replica time each
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
    service_s: np.ndarray | None = None  # replica time of the request (its batch's), NaN if none
    # The age of each feature class (NaN: none for this request; None: none in this chunk) and
    # whether some class had no features for the request's entity yet (a cold start).
    batch_age_s: np.ndarray | None = None
    stream_age_s: np.ndarray | None = None
    cold_start: np.ndarray | None = None
    # Whether the request met expired data (a stored prediction or a feature class past its
    # ttl), and what answered it: 0 its prediction, 1 a stale stored prediction, 2 the
    # default, 3 nothing (an error). None: nothing expired; every fallback got the default.
    expired: np.ndarray | None = None
    answer: np.ndarray | None = None
    # The round trip between client and serving tier (scenario.network), part of latency_s;
    # None without a network.
    network_s: np.ndarray | None = None
    # Time on the user's device (edge), 0 for requests answered elsewhere; None: no device.
    device_s: np.ndarray | None = None


TOTALS = ("requests", "fallbacks", "timeouts", "latency_s", "queue_wait_s", "queued",
          "feature_age_s", "feature_age_n", "model_age_s", "model_age_n", "quality", "value",
          "busy_s", "slo_violations", "service_s", "service_n")
SERIES = ("requests", "fallbacks", "latency_s", "quality", "value", "feature_age_s",
          "feature_age_n", "model_age_s", "model_age_n", "busy_s", "slo_violations",
          "queue_wait_s")
# Row indices, compile-time constants for the kernel below.
(T_REQUESTS, T_FALLBACKS, T_TIMEOUTS, T_LATENCY_S, T_QUEUE_WAIT_S, T_QUEUED, T_FEATURE_AGE_S,
 T_FEATURE_AGE_N, T_MODEL_AGE_S, T_MODEL_AGE_N, T_QUALITY, T_VALUE, T_BUSY_S,
 T_SLO_VIOLATIONS, T_SERVICE_S, T_SERVICE_N) = range(len(TOTALS))
(S_REQUESTS, S_FALLBACKS, S_LATENCY_S, S_QUALITY, S_VALUE, S_FEATURE_AGE_S, S_FEATURE_AGE_N,
 S_MODEL_AGE_S, S_MODEL_AGE_N, S_BUSY_S, S_SLO_VIOLATIONS, S_QUEUE_WAIT_S) = range(len(SERIES))


@njit(cache=True, nogil=True)
def _bin(x, scratch, scratch_bits):
    """:func:`bin_index` of one value; ``scratch_bits`` is an int64 view of ``scratch``, the
    one-element float64 array through which the value's bits are read."""
    if not x >= LOW_S:  # also NaN
        return 0
    if x >= HIGH_S:
        return N_BINS - 1
    scratch[0] = x
    return (scratch_bits[0] >> SHIFT) - BASE + 1


@njit(cache=True, nogil=True)
def _accumulate(t, latency, wait, fallback, timed_out, feature_age, model_age, quality, queued,
                busy, start, service, warmup, end, bucket, slo, penalty, totals, series,
                h_latency, h_wait, h_feature, h_model, h_service, series_latency):
    """One pass over a chunk's requests: sums, histograms and per-bucket series.

    Requests in the warm-up are skipped, but the part of any replica's busy time that falls in
    the measured window counts wherever the request arrived.
    """
    nb = series.shape[1]
    scratch = np.empty(1)
    bits = scratch.view(np.int64)
    for i in range(t.shape[0]):
        if busy[i] > 0:
            s = start[i]
            inside = min(s + busy[i], end) - max(s, warmup)
            if inside > 0:
                totals[T_BUSY_S] += inside
                b = int((s - warmup) / bucket) if s > warmup else 0
                series[S_BUSY_S, min(b, nb - 1)] += inside
        ti = t[i]
        if ti < warmup:
            continue
        b = min(int((ti - warmup) / bucket), nb - 1)
        lat = latency[i]
        q = quality[i]
        value = q
        if penalty > 0:
            value = q * (1.0 - min(1.0, penalty * lat / 0.1))
        k = _bin(lat, scratch, bits)
        h_latency[k] += 1
        series_latency[b, k] += 1
        totals[T_REQUESTS] += 1
        totals[T_LATENCY_S] += lat
        totals[T_QUALITY] += q
        totals[T_VALUE] += value
        series[S_REQUESTS, b] += 1
        series[S_LATENCY_S, b] += lat
        series[S_QUALITY, b] += q
        series[S_VALUE, b] += value
        if fallback[i]:
            totals[T_FALLBACKS] += 1
            series[S_FALLBACKS, b] += 1
        if timed_out[i]:
            totals[T_TIMEOUTS] += 1
        if lat > slo:
            totals[T_SLO_VIOLATIONS] += 1
            series[S_SLO_VIOLATIONS, b] += 1
        if queued[i]:
            totals[T_QUEUED] += 1
            totals[T_QUEUE_WAIT_S] += wait[i]
            series[S_QUEUE_WAIT_S, b] += wait[i]
            h_wait[_bin(wait[i], scratch, bits)] += 1
            sv = service[i]
            if sv == sv:
                totals[T_SERVICE_S] += sv
                totals[T_SERVICE_N] += 1
                h_service[_bin(sv, scratch, bits)] += 1
        if not fallback[i]:
            fa = feature_age[i]
            if fa == fa:
                totals[T_FEATURE_AGE_S] += fa
                totals[T_FEATURE_AGE_N] += 1
                series[S_FEATURE_AGE_S, b] += fa
                series[S_FEATURE_AGE_N, b] += 1
                h_feature[_bin(fa, scratch, bits)] += 1
            ma = model_age[i]
            if ma == ma:
                totals[T_MODEL_AGE_S] += ma
                totals[T_MODEL_AGE_N] += 1
                series[S_MODEL_AGE_S, b] += ma
                series[S_MODEL_AGE_N, b] += 1
                h_model[_bin(ma, scratch, bits)] += 1


CLASS_TOTALS = ("batch_age_s", "batch_age_n", "stream_age_s", "stream_age_n", "cold_starts")
RELIABILITY_TOTALS = ("expired", "expired_fallbacks", "stale_answers", "errors",
                      "stale_features", "network_s", "device_s", "device_n")


@njit(cache=True, nogil=True)
def _accumulate_classes(t, fallback, age, column, warmup, bucket, totals, series, histogram):
    """Sum, count (per bucket too) and histogram of one feature class's age over the measured
    real predictions; ``column`` is the class's row pair in ``totals``/``series``."""
    nb = series.shape[1]
    scratch = np.empty(1)
    bits = scratch.view(np.int64)
    for i in range(t.shape[0]):
        a = age[i]
        if t[i] < warmup or fallback[i] or not a == a:
            continue
        b = min(int((t[i] - warmup) / bucket), nb - 1)
        totals[column] += a
        totals[column + 1] += 1
        series[column, b] += a
        series[column + 1, b] += 1
        histogram[_bin(a, scratch, bits)] += 1


@dataclass
class Accumulator:
    """Everything measured about one architecture, accumulated chunk by chunk in fixed memory."""

    name: str
    kind: str
    n_buckets: int
    bucket_s: float
    warmup_s: float
    end_s: float
    slo_s: float | None
    penalty_per_100ms: float
    # slo.freshness of batch and stream data: older data counts as stale (None: no bound)
    freshness_s: tuple[float | None, float | None] = (None, None)
    latency: Histogram = field(default_factory=Histogram)
    queue_wait: Histogram = field(default_factory=Histogram)
    feature_age: Histogram = field(default_factory=Histogram)
    model_age: Histogram = field(default_factory=Histogram)
    service: Histogram = field(default_factory=Histogram)
    batch_age: Histogram = field(default_factory=Histogram)
    stream_age: Histogram = field(default_factory=Histogram)

    def __post_init__(self):
        self._class_totals = np.zeros(len(CLASS_TOTALS))
        self._class_series = np.zeros((len(CLASS_TOTALS), self.n_buckets))
        self._totals = np.zeros(len(TOTALS))
        self._series = np.zeros((len(SERIES), self.n_buckets))
        self.series_latency = np.zeros((self.n_buckets, N_BINS), dtype=np.int64)
        self._reliability = dict.fromkeys(RELIABILITY_TOTALS, 0)

    @property
    def totals(self) -> dict[str, float]:
        return {**dict(zip(TOTALS + CLASS_TOTALS, self._totals.tolist() +
                           self._class_totals.tolist())), **self._reliability}

    def _add_reliability(self, out: Outcomes) -> None:
        """Counts of the measured requests that met expired data, fell back because of it,
        were answered stale or with an error, or were served data older than the freshness
        bound."""
        bounded = any(b is not None for b in self.freshness_s)
        if out.expired is None and out.answer is None and not bounded:
            return
        measured = out.t_s >= self.warmup_s
        r = self._reliability
        if out.expired is not None:
            r["expired"] += int(np.count_nonzero(out.expired & measured))
            r["expired_fallbacks"] += int(np.count_nonzero(
                out.expired & out.fallback & ~out.timed_out & measured))
        if out.answer is not None:
            r["stale_answers"] += int(np.count_nonzero((out.answer == 1) & measured))
            r["errors"] += int(np.count_nonzero((out.answer == 3) & measured))
        if bounded:
            answered = ~out.fallback if out.answer is None else out.answer <= 1
            stale = np.zeros(out.t_s.size, bool)
            for age, bound in zip((out.batch_age_s, out.stream_age_s), self.freshness_s):
                if age is not None and bound is not None:
                    with np.errstate(invalid="ignore"):
                        stale |= age > bound
            r["stale_features"] += int(np.count_nonzero(answered & stale & measured))

    def add_counts(self, **counts) -> None:
        """Counts of measured requests that a fused kernel counted (expired data, stale
        features, ...) and their round trips' total (``network_s``)."""
        for key, value in counts.items():
            self._reliability[key] += value

    def kernel_arguments(self) -> tuple:
        """What the fused kernels (:mod:`sim.engine.architectures.fused`) add into, in their
        order: the measured window and SLO, then the totals, series and class arrays."""
        return (self.warmup_s, self.end_s, self.bucket_s,
                np.inf if self.slo_s is None else self.slo_s, self.penalty_per_100ms,
                self._totals, self._series, self._class_totals, self._class_series)

    @property
    def series(self) -> dict[str, np.ndarray]:
        return {**{name: self._series[i] for i, name in enumerate(SERIES)},
                **{name: self._class_series[i] for i, name in enumerate(CLASS_TOTALS)}}

    def add(self, out: Outcomes) -> None:
        """Add a chunk's outcomes; requests in the warm-up are left out."""
        if out.t_s.size == 0:
            return
        _accumulate(out.t_s, out.latency_s, out.queue_wait_s, out.fallback, out.timed_out,
                    out.feature_age_s, out.model_age_s, out.quality, out.queued, out.busy_s,
                    out.service_start_s,
                    np.full(out.t_s.size, np.nan) if out.service_s is None else out.service_s,
                    self.warmup_s, self.end_s, self.bucket_s,
                    np.inf if self.slo_s is None else self.slo_s, self.penalty_per_100ms,
                    self._totals, self._series, self.latency.counts, self.queue_wait.counts,
                    self.feature_age.counts, self.model_age.counts, self.service.counts,
                    self.series_latency)
        for column, age, histogram in ((0, out.batch_age_s, self.batch_age),
                                       (2, out.stream_age_s, self.stream_age)):
            if age is not None:
                _accumulate_classes(out.t_s, out.fallback, age, column, self.warmup_s,
                                    self.bucket_s, self._class_totals, self._class_series,
                                    histogram.counts)
        self._add_reliability(out)
        if out.network_s is not None:
            self._reliability["network_s"] += float(
                out.network_s[out.t_s >= self.warmup_s].sum())
        if out.device_s is not None:
            on_device = (out.device_s > 0) & (out.t_s >= self.warmup_s)
            self._reliability["device_s"] += float(out.device_s[on_device].sum())
            self._reliability["device_n"] += int(np.count_nonzero(on_device))
        if out.cold_start is not None:
            counted = np.flatnonzero(out.cold_start & (out.t_s >= self.warmup_s))
            if counted.size:
                self._class_totals[4] += counted.size
                b = np.minimum(((out.t_s[counted] - self.warmup_s) / self.bucket_s).astype(int),
                               self.n_buckets - 1)
                self._class_series[4] += np.bincount(b, minlength=self.n_buckets)
