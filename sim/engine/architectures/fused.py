"""Fused kernels: what an architecture does to a chunk of requests, in two compiled passes.

The staged path (``serve`` then :meth:`Accumulator.add`) makes eight passes over a chunk's arrays
(queue, decisions, feature and model ages, losses, quality, outcomes, metrics, feature classes),
each allocating its arrays. Here the online kinds (``online``, ``streaming``) and ``batch`` do it
in two:

1. **Ages** (and the queue): the FIFO recursion, the feature and model ages from the refresh
   timelines (a merge of two sorted sequences each), written to a few scratch arrays.
2. **Quality and metrics**: every loss, the quality, the value, and the accumulation into the
   totals, the per-bucket series and the histograms.

Between them, ``2 ** (-age / half-life)`` of the exponential staleness curves is computed by
numpy's vectorised ``exp2`` (about 1.5 ns a value, against about 10 for a compiled scalar one,
and the very same bits as the staged path). Per-request outcomes are written only when someone
asks for them (``observe``, the request-by-request comparisons with the reference engine).

Every float is computed by the same operations in the same order as the staged path, so the
results are the same to the bit (``tests/test_fused.py`` runs both on every bundled scenario and
on generated ones). Scenarios that use something these kernels do not do (dynamic batching,
autoscaling, slow periods, request-time features, fallback chains, a network, drift, expiring
features, freshness bounds, model tests, training losses) take the staged path; which one ran
changes nothing but time.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from sim.engine.freshness import _last_visible
from sim.engine.serving import _down
from sim.results.metrics import (S_BUSY_S, S_FALLBACKS, S_FEATURE_AGE_N, S_FEATURE_AGE_S,
                                 S_LATENCY_S, S_MODEL_AGE_N, S_MODEL_AGE_S, S_QUALITY,
                                 S_QUEUE_WAIT_S, S_REQUESTS, S_SLO_VIOLATIONS, S_VALUE,
                                 T_BUSY_S, T_FALLBACKS, T_FEATURE_AGE_N, T_FEATURE_AGE_S,
                                 T_LATENCY_S, T_MODEL_AGE_N, T_MODEL_AGE_S, T_QUALITY,
                                 T_QUEUE_WAIT_S, T_QUEUED, T_REQUESTS, T_SERVICE_N, T_SERVICE_S,
                                 T_SLO_VIOLATIONS, T_TIMEOUTS, T_VALUE, _bin)
from sim.units import DAY_S

# How a staleness curve is evaluated in the kernels (one code per curve).
NO_CURVE, EXPONENTIAL, LINEAR, TABLE = 0, 1, 2, 3
# Where a request's stream features come from.
NO_STREAM, WINDOWS, OWN_LAG = 0, 1, 2
# Chunk-local sums over the measured requests (index into ``sums``): real predictions, their
# losses by cause, and counts of expired and stale data.
(L_PREDICTIONS, L_MODEL, L_FEATURES, L_COLD, L_DRIFT, L_TRAINED, L_EXPIRED, L_EXPIRED_FALLBACKS,
 L_STALE_FEATURES, N_SUMS) = range(10)
EMPTY = np.empty(0)


class Curve:
    """A staleness curve as the kernels take it: a code, two numbers and a table.

    exponential: ``(1 - 2 ** (age * a)) * b`` with ``a = -1 / half_life``, ``b = fresh - floor``
    (the power computed by numpy between the passes); linear: ``fresh - max(age * a + fresh,
    b)`` with ``a = per_day / 1 day``, ``b = floor``; table: ``fresh - interp(age)`` (by numpy
    between the passes). No loss
    without a curve or where the age is NaN (as :func:`sim.engine.freshness.staleness_loss`).
    """

    def __init__(self, curve, fresh: float):
        self.code, self.a, self.b, self.fresh = NO_CURVE, 0.0, 0.0, float(fresh)
        self.x, self.y = EMPTY, EMPTY
        if curve is None:
            return
        if curve.exponential is not None:
            c = curve.exponential
            self.code, self.a, self.b = EXPONENTIAL, -1.0 / c.half_life, fresh - c.floor
        elif curve.linear is not None:
            c = curve.linear
            self.code, self.a, self.b = LINEAR, c.per_day / DAY_S, c.floor
        else:
            self.code = TABLE
            self.x = np.array([a for a, _ in curve.table], dtype=float)
            self.y = np.array([v for _, v in curve.table], dtype=float)

    def prepared(self, age: np.ndarray) -> np.ndarray:
        """What the second pass needs computed by numpy first: ``2 ** (age * a)`` for an
        exponential curve, the losses themselves for a table (as the staged path computes
        them, for the same bits); an empty array otherwise."""
        if self.code == EXPONENTIAL:
            x = np.multiply(age, self.a)
            return np.exp2(x, out=x)
        if self.code == TABLE:
            loss = np.interp(age, self.x, self.y)
            np.subtract(self.fresh, loss, out=loss)
            np.copyto(loss, 0.0, where=np.isnan(loss))
            return loss
        return EMPTY


@njit(cache=True, nogil=True, inline="always")
def _loss(code, a, b, fresh, age, prepared, i):
    """Metric lost to one age (see :class:`Curve`)."""
    if code == NO_CURVE or not age == age:
        return 0.0
    if code == EXPONENTIAL:
        return (1.0 - prepared[i]) * b
    if code == LINEAR:
        v = age * a
        v += fresh
        return fresh - (v if v >= b else b)
    return prepared[i]


@njit(cache=True, nogil=True)
def online_ages(t_s, created_s, lookup_s, work_s, patience_s, free_at_s,
                has_batch, b_visible, b_best, b_cutoff, stream_mode, s_visible, s_best, s_cutoff,
                lag_s, m_visible, m_best, m_cutoff,
                wait_s, started, batch_age_s, stream_age_s, model_cutoff_s):
    """First pass of an online architecture served one request at a time: the FIFO queue
    (:func:`sim.engine.serving.fifo_queue`, the replicas' free times carried in
    ``free_at_s``), each request's batch-feature and stream-feature ages (NaN where its entity
    was created after the class's data time: a cold start) and its model's data cut-off. Stream
    ages come from the windows' timeline (``WINDOWS``) or are given (``OWN_LAG``: each
    request's own lag, or the age behind a backlog)."""
    n = t_s.shape[0]
    c = free_at_s.shape[0]
    jb = _last_visible(b_visible, t_s[0])
    js = _last_visible(s_visible, t_s[0])
    jm = _last_visible(m_visible, t_s[0])
    nb, ns, nm = b_visible.shape[0], s_visible.shape[0], m_visible.shape[0]
    for i in range(n):
        a = t_s[i]
        free = free_at_s[0]
        start = a if a > free else free
        w = start - a
        if w >= patience_s:
            wait_s[i] = patience_s
            started[i] = False
        else:
            wait_s[i] = w
            started[i] = True
            _down(free_at_s, c, start + (lookup_s[i] + work_s[i]))
        # the refresh in force on each timeline: a merge of two sorted sequences
        if has_batch:
            while jb + 1 < nb and b_visible[jb + 1] <= a:
                jb += 1
            cut = b_cutoff[b_best[jb]] if jb >= 0 else np.nan
            batch_age_s[i] = np.nan if created_s[i] > cut else a - cut
        if stream_mode != NO_STREAM:
            if stream_mode == WINDOWS:
                while js + 1 < ns and s_visible[js + 1] <= a:
                    js += 1
                age = a - (s_cutoff[s_best[js]] if js >= 0 else np.nan)
            else:
                age = lag_s[i]
            stream_age_s[i] = np.nan if created_s[i] > a - age else age
        while jm + 1 < nm and m_visible[jm + 1] <= a:
            jm += 1
        model_cutoff_s[i] = m_cutoff[m_best[jm]] if jm >= 0 else np.nan


@njit(cache=True, nogil=True)
def _value(lm, stale, cold, constant_loss, skew, variant, drift, trained, fresh):
    """A prediction's metric from its losses, added in the staged path's order and clamped
    to [0, fresh]; a model's training loss comes after the clamp (a lift may pass fresh)."""
    loss = lm + stale
    loss += cold
    loss += constant_loss
    if skew != 0.0:
        loss += skew
    if variant != 0.0:
        loss += variant
    loss += drift
    value = fresh - loss
    if value < 0.0:
        value = 0.0
    elif value > fresh:
        value = fresh
    value -= trained
    return value if value > 0.0 else 0.0


@njit(cache=True, nogil=True)
def online_metrics(t_s, lookup_s, work_s, wait_s, started, timeout_s,
                   batch_age_s, stream_age_s, model_age_s, has_batch, has_stream,
                   codes, params, p_model, p_batch, p_stream, drift_s, trained_s, network_s,
                   fresh, fallback_value, lost_batch, lost_stream, constant_loss, skew, variant,
                   bound_batch, bound_stream,
                   warmup, end, bucket, slo, penalty,
                   totals, series, class_totals, class_series, sums,
                   h_latency, h_wait, h_feature, h_model, h_service, h_batch, h_stream,
                   series_latency, keep, o_latency, o_timed_out, o_quality, o_busy, o_start,
                   o_service, o_feature, o_batch, o_stream, o_model, o_cold):
    """Second pass of an online architecture: each request's decision (answered or timed
    out), losses, quality and value, added to the accumulator's arrays exactly as
    :func:`sim.results.metrics._accumulate` and ``_accumulate_classes`` add them; per-request
    outcomes into the ``o_`` arrays when ``keep``. ``drift_s``, ``trained_s`` and
    ``network_s`` are empty when the scenario has none."""
    nb = series.shape[1]
    scratch = np.empty(1)
    bits = scratch.view(np.int64)
    cm, am, bm = codes[0], params[0, 0], params[0, 1]
    cb, ab, bb = codes[1], params[1, 0], params[1, 1]
    cs, as_, bs = codes[2], params[2, 0], params[2, 1]
    has_drift = drift_s.shape[0] > 0
    has_trained = trained_s.shape[0] > 0
    has_network = network_s.shape[0] > 0
    for i in range(t_s.shape[0]):
        ti = t_s[i]
        occ = lookup_s[i] + work_s[i]
        s = started[i]
        wait = wait_s[i]
        lat = wait + occ
        late = (not s) or lat > timeout_s
        latency = timeout_s if late else lat
        if has_network:
            latency = latency + network_s[i]
        busy = occ if s else 0.0
        begin = ti + wait
        model_age = model_age_s[i]
        lm = _loss(cm, am, bm, fresh, model_age, p_model, i)
        stale = 0.0
        cold = 0.0
        cold_any = False
        ba = np.nan
        sa = np.nan
        if has_batch:
            ba = batch_age_s[i]
            stale = _loss(cb, ab, bb, fresh, ba, p_batch, i)
            if not ba == ba:
                cold = lost_batch
                cold_any = True
        if has_stream:
            sa = stream_age_s[i]
            stale += _loss(cs, as_, bs, fresh, sa, p_stream, i)
            if not sa == sa:
                cold += lost_stream
                cold_any = True
        drift = drift_s[i] if has_drift else 0.0
        trained = trained_s[i] if has_trained else 0.0
        q = fallback_value if late else _value(lm, stale, cold, constant_loss, skew, variant,
                                               drift, trained, fresh)
        if keep:
            o_latency[i] = latency
            o_timed_out[i] = late
            o_quality[i] = q
            o_busy[i] = busy
            o_start[i] = begin
            o_service[i] = occ if s else np.nan
            if late:
                o_feature[i] = np.nan
                o_batch[i] = np.nan
                o_stream[i] = np.nan
                o_model[i] = np.nan
            else:
                o_feature[i] = _fmax(ba, sa)
                o_batch[i] = ba
                o_stream[i] = sa
                o_model[i] = model_age
            o_cold[i] = cold_any and not late
        # busy time inside the measured window, wherever the request arrived
        if busy > 0:
            inside = min(begin + busy, end) - max(begin, warmup)
            if inside > 0:
                totals[T_BUSY_S] += inside
                b = int((begin - warmup) / bucket) if begin > warmup else 0
                series[S_BUSY_S, min(b, nb - 1)] += inside
        if ti < warmup:
            continue
        b = min(int((ti - warmup) / bucket), nb - 1)
        if not late:
            sums[L_PREDICTIONS] += 1.0
            sums[L_MODEL] += lm
            sums[L_FEATURES] += stale
            sums[L_COLD] += cold
            sums[L_DRIFT] += drift
            sums[L_TRAINED] += trained
            if ba > bound_batch or sa > bound_stream:
                sums[L_STALE_FEATURES] += 1.0
        v = q
        if penalty > 0:
            v = q * (1.0 - min(1.0, penalty * latency / 0.1))
        k = _bin(latency, scratch, bits)
        h_latency[k] += 1
        series_latency[b, k] += 1
        totals[T_REQUESTS] += 1
        totals[T_LATENCY_S] += latency
        totals[T_QUALITY] += q
        totals[T_VALUE] += v
        series[S_REQUESTS, b] += 1
        series[S_LATENCY_S, b] += latency
        series[S_QUALITY, b] += q
        series[S_VALUE, b] += v
        if late:
            totals[T_FALLBACKS] += 1
            series[S_FALLBACKS, b] += 1
            totals[T_TIMEOUTS] += 1
        if latency > slo:
            totals[T_SLO_VIOLATIONS] += 1
            series[S_SLO_VIOLATIONS, b] += 1
        totals[T_QUEUED] += 1
        totals[T_QUEUE_WAIT_S] += wait
        series[S_QUEUE_WAIT_S, b] += wait
        h_wait[_bin(wait, scratch, bits)] += 1
        if s:
            totals[T_SERVICE_S] += occ
            totals[T_SERVICE_N] += 1
            h_service[_bin(occ, scratch, bits)] += 1
        if late:
            continue
        fa = _fmax(ba, sa)
        if fa == fa:
            totals[T_FEATURE_AGE_S] += fa
            totals[T_FEATURE_AGE_N] += 1
            series[S_FEATURE_AGE_S, b] += fa
            series[S_FEATURE_AGE_N, b] += 1
            h_feature[_bin(fa, scratch, bits)] += 1
        if model_age == model_age:
            totals[T_MODEL_AGE_S] += model_age
            totals[T_MODEL_AGE_N] += 1
            series[S_MODEL_AGE_S, b] += model_age
            series[S_MODEL_AGE_N, b] += 1
            h_model[_bin(model_age, scratch, bits)] += 1
        if ba == ba:  # each feature class's age (_accumulate_classes)
            class_totals[0] += ba
            class_totals[1] += 1
            class_series[0, b] += ba
            class_series[1, b] += 1
            h_batch[_bin(ba, scratch, bits)] += 1
        if sa == sa:
            class_totals[2] += sa
            class_totals[3] += 1
            class_series[2, b] += sa
            class_series[3, b] += 1
            h_stream[_bin(sa, scratch, bits)] += 1
        if cold_any:
            class_totals[4] += 1
            class_series[4, b] += 1


@njit(cache=True, nogil=True)
def batch_metrics(t_s, store_latency, fallback, timed_out, expired, feature_age_s,
                  model_cutoff_s, codes, params, p_model, p_batch, drift_s, trained_s,
                  network_s, fresh, fallback_value, lost_batch, constant_loss, skew, variant,
                  bound_batch, warmup, end, bucket, slo, penalty,
                  totals, series, class_totals, class_series, sums,
                  h_latency, h_feature, h_model, h_batch, series_latency,
                  keep, o_latency, o_quality, o_model, o_cold):
    """Second pass of a batch architecture (after the store read,
    :func:`sim.engine.architectures.parts._read_store`): losses, quality and accumulation.
    ``feature_age_s`` (the store's: NaN where the prediction was missing, the age where it had
    expired) becomes NaN wherever the request fell back, in place, as the staged path leaves
    it; per-request latency, quality, model age and cold starts into the ``o_`` arrays when
    ``keep``."""
    nb = series.shape[1]
    scratch = np.empty(1)
    bits = scratch.view(np.int64)
    cm, am, bm = codes[0], params[0, 0], params[0, 1]
    cb, ab, bb = codes[1], params[1, 0], params[1, 1]
    has_drift = drift_s.shape[0] > 0
    has_trained = trained_s.shape[0] > 0
    has_network = network_s.shape[0] > 0
    for i in range(t_s.shape[0]):
        ti = t_s[i]
        fb = fallback[i]
        latency = store_latency[i]
        if has_network:
            latency = latency + network_s[i]
        model_age = ti - model_cutoff_s[i]
        lm = _loss(cm, am, bm, fresh, model_age, p_model, i)
        ba = feature_age_s[i]
        stale = _loss(cb, ab, bb, fresh, ba, p_batch, i)
        cold = lost_batch if not ba == ba else 0.0
        drift = drift_s[i] if has_drift else 0.0
        trained = trained_s[i] if has_trained else 0.0
        q = fallback_value if fb else _value(lm, stale, cold, constant_loss, skew, variant,
                                             drift, trained, fresh)
        if fb:
            feature_age_s[i] = np.nan
            model_age = np.nan
            ba = np.nan
        cold_start = fb and not timed_out[i] and not expired[i]
        if keep:
            o_latency[i] = latency
            o_quality[i] = q
            o_model[i] = model_age
            o_cold[i] = cold_start
        if ti < warmup:
            continue
        b = min(int((ti - warmup) / bucket), nb - 1)
        if not fb:
            sums[L_PREDICTIONS] += 1.0
            sums[L_MODEL] += lm
            sums[L_FEATURES] += stale
            sums[L_COLD] += cold
            sums[L_DRIFT] += drift
            sums[L_TRAINED] += trained
            if ba > bound_batch:
                sums[L_STALE_FEATURES] += 1.0
        if expired[i]:
            sums[L_EXPIRED] += 1.0
            if fb and not timed_out[i]:
                sums[L_EXPIRED_FALLBACKS] += 1.0
        v = q
        if penalty > 0:
            v = q * (1.0 - min(1.0, penalty * latency / 0.1))
        k = _bin(latency, scratch, bits)
        h_latency[k] += 1
        series_latency[b, k] += 1
        totals[T_REQUESTS] += 1
        totals[T_LATENCY_S] += latency
        totals[T_QUALITY] += q
        totals[T_VALUE] += v
        series[S_REQUESTS, b] += 1
        series[S_LATENCY_S, b] += latency
        series[S_QUALITY, b] += q
        series[S_VALUE, b] += v
        if fb:
            totals[T_FALLBACKS] += 1
            series[S_FALLBACKS, b] += 1
        if timed_out[i]:
            totals[T_TIMEOUTS] += 1
        if latency > slo:
            totals[T_SLO_VIOLATIONS] += 1
            series[S_SLO_VIOLATIONS, b] += 1
        if cold_start:
            class_totals[4] += 1
            class_series[4, b] += 1
        if fb:
            continue
        if ba == ba:
            totals[T_FEATURE_AGE_S] += ba
            totals[T_FEATURE_AGE_N] += 1
            series[S_FEATURE_AGE_S, b] += ba
            series[S_FEATURE_AGE_N, b] += 1
            h_feature[_bin(ba, scratch, bits)] += 1
            class_totals[0] += ba  # the batch class's age (_accumulate_classes)
            class_totals[1] += 1
            class_series[0, b] += ba
            class_series[1, b] += 1
            h_batch[_bin(ba, scratch, bits)] += 1
        if model_age == model_age:
            totals[T_MODEL_AGE_S] += model_age
            totals[T_MODEL_AGE_N] += 1
            series[S_MODEL_AGE_S, b] += model_age
            series[S_MODEL_AGE_N, b] += 1
            h_model[_bin(model_age, scratch, bits)] += 1


@njit(cache=True, nogil=True, inline="always")
def _fmax(a, b):
    """``np.fmax``: the larger, a NaN giving way to the other."""
    if not a == a:
        return b
    if not b == b:
        return a
    return a if a >= b else b

class QualityPlan:
    """What the second pass needs to know about an architecture's quality: its curves (model,
    batch features, stream features), what a cold start and each missing class cost, and the
    constant losses (skew, the model variant)."""

    def __init__(self, arch, accumulator, has_batch: bool, has_stream: bool,
                 has_request: bool):
        q = arch.scenario.quality
        # slo.freshness: data older than this counts as stale (infinite: no bound)
        self.bound_batch, self.bound_stream = (np.inf if b is None else float(b)
                                               for b in accumulator.freshness_s)
        self.fresh, self.fallback = float(q.fresh), float(q.fallback)
        self.has_batch, self.has_stream = has_batch, has_stream
        self.model = Curve(q.model_staleness, q.fresh)
        self.batch = Curve(q.curve("batch") if has_batch else None, q.fresh)
        self.stream = Curve(q.curve("stream") if has_stream else None, q.fresh)
        curves = (self.model, self.batch, self.stream)
        self.codes = np.array([c.code for c in curves], dtype=np.int64)
        self.params = np.array([[c.a, c.b] for c in curves], dtype=float)
        self.lost_batch = q.fresh - q.cold_start("batch")
        self.lost_stream = q.fresh - q.cold_start("stream")
        lacked = [c for c, present in (("batch", has_batch), ("stream", has_stream))
                  if not present] + ([] if has_request else ["request"])
        # summed as the staged path sums it (from the integer 0), for the same bits
        self.missing = sum(q.fresh - q.without(c) for c in lacked)
        self.skew, self.variant = float(arch.skew_loss), float(arch.variant_loss)

    def add_losses(self, losses: dict, sums: np.ndarray) -> None:
        """Add a chunk's sums (the second pass's) to an architecture's losses by cause."""
        n = float(sums[L_PREDICTIONS])
        losses["predictions"] += n
        losses["model_staleness"] += sums[L_MODEL]
        losses["feature_staleness"] += sums[L_FEATURES]
        losses["cold_start"] += sums[L_COLD]
        losses["drift"] += sums[L_DRIFT]
        losses["model_training"] += sums[L_TRAINED]
        losses["missing_features"] += self.missing * n
        if self.skew:
            losses["skew"] += self.skew * n
        if self.variant:
            losses["model_variant"] += self.variant * n


def outputs(n: int, keep: bool, names: tuple[str, ...], flags: tuple[str, ...] = ()) -> dict:
    """Per-request output arrays of a second pass (empty ones when nobody asked: ``keep``
    False), floats for ``names`` and booleans for ``flags``."""
    size = n if keep else 0
    out = {k: np.empty(size) for k in names}
    out.update({k: np.empty(size, dtype=np.bool_) for k in flags})
    return out
