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
on generated ones). Drift, training losses, a network, tests of new models, freshness bounds and
stream backlogs are computed by numpy between the passes, as the staged path computes them.
Scenarios that use something these kernels do not do (dynamic batching, autoscaling, slow
periods, ``after_idle``, request-time work, expiring features, fallback chains other than the
default, the edge kind) take the staged path; which one ran changes nothing but time.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from sim.engine.freshness import _last_visible, drift_loss
from sim.engine.serving import _down, take_replica
from sim.results.metrics import (Outcomes, S_BUSY_S, S_FALLBACKS, S_FEATURE_AGE_N, S_FEATURE_AGE_S,
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
        if not v == v:  # an infinite age at no slope: NaN, no loss (np.maximum keeps NaN)
            return 0.0
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
    if n == 0:  # a hybrid chunk whose requests are all in the head
        return
    c = free_at_s.shape[0]
    jb = _last_visible(b_visible, t_s[0])
    js = _last_visible(s_visible, t_s[0])
    jm = _last_visible(m_visible, t_s[0])
    nb, ns, nm = b_visible.shape[0], s_visible.shape[0], m_visible.shape[0]
    for i in range(n):
        a = t_s[i]
        start, wait_s[i], ok = take_replica(a, free_at_s[0], patience_s)
        started[i] = ok
        if ok:
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
    return 0.0 if value < 0.0 else value  # np.maximum(value, 0): a NaN stays NaN


# Which requests a second pass serves: all from stored predictions (batch), all online, or a
# hybrid's mix (the stored head and the online tail, by a mask).
STORED, ONLINE, MIXED = 0, 1, 2
# Rows of the per-request outputs (``keep``): floats, then flags.
(O_LATENCY, O_WAIT, O_QUALITY, O_BUSY, O_START, O_SERVICE, O_FEATURE, O_BATCH, O_STREAM,
 O_MODEL) = range(10)
(O_FALLBACK, O_TIMED_OUT, O_QUEUED, O_COLD, O_EXPIRED) = range(5)


@njit(cache=True, nogil=True)
def metrics(t_s, head, stored_only,
            h_latency, h_fallback, h_timed_out, h_expired, h_feature_age, h_model_cutoff,
            h_p_model, h_p_batch, h_drift, h_trained, h_network,
            lookup_s, work_s, wait_s, started, timeout_s, batch_age_s, stream_age_s,
            model_age_s, has_batch, has_stream, p_model, p_batch, p_stream, drift_s, trained_s,
            network_s, codes, params, missing, fresh, fallback_value, lost_batch, lost_stream,
            skew, variant, bound_batch, bound_stream,
            warmup, end, bucket, slo, penalty, totals, series, class_totals, class_series, sums,
            hist_latency, hist_wait, hist_feature, hist_model, hist_service, hist_batch,
            hist_stream, series_latency, keep, out, flags):
    """Second pass: each request's answer, losses, quality and value, added to the
    accumulator's arrays exactly as :func:`sim.results.metrics._accumulate` and
    ``_accumulate_classes`` add them.

    Requests read from stored predictions (the ``h_`` arrays, in the order of those requests:
    the store's latency, fallbacks, time-outs, expiries, prediction ages and model cut-offs;
    a prediction age becomes NaN in place wherever the request fell back, as the staged path
    leaves it) and requests served online (the queue's waits and the first pass's ages, in the
    order of those requests): the ones where ``head`` holds (a hybrid), or all of one part
    (``head`` None: the stored part when ``stored_only`` is not None). ``codes``, ``params`` and
    ``missing`` have a row for each (stored, online); the losses' sums go to ``sums[0]`` and
    ``sums[1]``. ``*drift*``, ``*trained*`` and ``*network*`` are empty when the scenario has
    none. Per-request outcomes go to the rows of ``out`` and ``flags`` when ``keep``.
    """
    nb = series.shape[1]
    scratch = np.empty(1)
    bits = scratch.view(np.int64)
    h_has_drift, h_has_trained = h_drift.shape[0] > 0, h_trained.shape[0] > 0
    h_has_network = h_network.shape[0] > 0
    has_drift, has_trained = drift_s.shape[0] > 0, trained_s.shape[0] > 0
    has_network = network_s.shape[0] > 0
    jh = 0
    jt = 0
    for i in range(t_s.shape[0]):
        ti = t_s[i]
        sa = np.nan
        # ``head`` is None unless the chunk mixes the two parts, ``stored_only`` None unless
        # every request reads stored predictions: numba compiles a kernel for each of the
        # three with the selection settled, and drops the part a pure one does not have.
        if head is None:
            if stored_only is None:
                stored = False
            else:
                stored = True
        else:
            stored = head[i]
        if stored:
            part = 0
            j = jh
            jh += 1
            fb = h_fallback[j]
            late = h_timed_out[j]
            gone = h_expired[j]
            latency = h_latency[j]
            if h_has_network:
                latency = latency + h_network[j]
            model_age = ti - h_model_cutoff[j]
            lm = _loss(codes[0, 0], params[0, 0, 0], params[0, 0, 1], fresh, model_age,
                       h_p_model, j)
            ba = h_feature_age[j]
            stale = _loss(codes[0, 1], params[0, 1, 0], params[0, 1, 1], fresh, ba, h_p_batch,
                          j)
            cold = lost_batch if not ba == ba else 0.0
            drift = h_drift[j] if h_has_drift else 0.0
            trained = h_trained[j] if h_has_trained else 0.0
            if fb:
                h_feature_age[j] = np.nan
                model_age = np.nan
                ba = np.nan
            cold_start = fb and not late and not gone
            wait = 0.0
            busy = 0.0
            begin = ti
            s = False
            occ = np.nan
            queued = False
        else:
            part = 1
            j = jt
            jt += 1
            occ = lookup_s[j] + work_s[j]
            s = started[j]
            wait = wait_s[j]
            lat = wait + occ
            late = (not s) or lat > timeout_s
            fb = late
            gone = False
            latency = timeout_s if late else lat
            if has_network:
                latency = latency + network_s[j]
            busy = occ if s else 0.0
            begin = ti + wait
            queued = True
            model_age = model_age_s[j]
            lm = _loss(codes[1, 0], params[1, 0, 0], params[1, 0, 1], fresh, model_age,
                       p_model, j)
            stale = 0.0
            cold = 0.0
            cold_start = False
            ba = np.nan
            if has_batch:
                ba = batch_age_s[j]
                stale = _loss(codes[1, 1], params[1, 1, 0], params[1, 1, 1], fresh, ba,
                              p_batch, j)
                if not ba == ba:
                    cold = lost_batch
                    cold_start = True
            if has_stream:
                sa = stream_age_s[j]
                stale += _loss(codes[1, 2], params[1, 2, 0], params[1, 2, 1], fresh, sa,
                               p_stream, j)
                if not sa == sa:
                    cold += lost_stream
                    cold_start = True
            drift = drift_s[j] if has_drift else 0.0
            trained = trained_s[j] if has_trained else 0.0
            if late:
                model_age = np.nan
                ba = np.nan
                sa = np.nan
                cold_start = False
        q = fallback_value if fb else _value(lm, stale, cold, missing[part], skew, variant,
                                             drift, trained, fresh)
        if keep:
            out[O_LATENCY, i] = latency
            out[O_WAIT, i] = wait
            out[O_QUALITY, i] = q
            out[O_BUSY, i] = busy
            out[O_START, i] = begin
            out[O_SERVICE, i] = occ if s else np.nan
            out[O_FEATURE, i] = _fmax(ba, sa)
            out[O_BATCH, i] = ba
            out[O_STREAM, i] = sa
            out[O_MODEL, i] = model_age
            flags[O_FALLBACK, i] = fb
            flags[O_TIMED_OUT, i] = late
            flags[O_QUEUED, i] = queued
            flags[O_COLD, i] = cold_start
            flags[O_EXPIRED, i] = gone
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
        if not fb:
            sums[part, L_PREDICTIONS] += 1.0
            sums[part, L_MODEL] += lm
            sums[part, L_FEATURES] += stale
            sums[part, L_COLD] += cold
            sums[part, L_DRIFT] += drift
            sums[part, L_TRAINED] += trained
            if ba > bound_batch or sa > bound_stream:
                sums[0, L_STALE_FEATURES] += 1.0
        if gone:
            sums[0, L_EXPIRED] += 1.0
            if fb and not late:
                sums[0, L_EXPIRED_FALLBACKS] += 1.0
        # The accumulation below is _accumulate's and _accumulate_classes', written out: a
        # compiled helper taking the arrays costs about 150 ns a call here (reference counts
        # on every array argument), measured, against 20 ns for this whole pass.
        v = q
        if penalty > 0:
            v = q * (1.0 - min(1.0, penalty * latency / 0.1))
        k = _bin(latency, scratch, bits)
        hist_latency[k] += 1
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
        if late:
            totals[T_TIMEOUTS] += 1
        if latency > slo:
            totals[T_SLO_VIOLATIONS] += 1
            series[S_SLO_VIOLATIONS, b] += 1
        if queued:
            totals[T_QUEUED] += 1
            totals[T_QUEUE_WAIT_S] += wait
            series[S_QUEUE_WAIT_S, b] += wait
            hist_wait[_bin(wait, scratch, bits)] += 1
            if s:
                totals[T_SERVICE_S] += occ
                totals[T_SERVICE_N] += 1
                hist_service[_bin(occ, scratch, bits)] += 1
        if cold_start:
            class_totals[4] += 1
            class_series[4, b] += 1
        if fb:
            continue
        fa = _fmax(ba, sa)
        if fa == fa:
            totals[T_FEATURE_AGE_S] += fa
            totals[T_FEATURE_AGE_N] += 1
            series[S_FEATURE_AGE_S, b] += fa
            series[S_FEATURE_AGE_N, b] += 1
            hist_feature[_bin(fa, scratch, bits)] += 1
        if model_age == model_age:
            totals[T_MODEL_AGE_S] += model_age
            totals[T_MODEL_AGE_N] += 1
            series[S_MODEL_AGE_S, b] += model_age
            series[S_MODEL_AGE_N, b] += 1
            hist_model[_bin(model_age, scratch, bits)] += 1
        if ba == ba:  # each feature class's age (_accumulate_classes)
            class_totals[0] += ba
            class_totals[1] += 1
            class_series[0, b] += ba
            class_series[1, b] += 1
            hist_batch[_bin(ba, scratch, bits)] += 1
        if sa == sa:
            class_totals[2] += sa
            class_totals[3] += 1
            class_series[2, b] += sa
            class_series[3, b] += 1
            hist_stream[_bin(sa, scratch, bits)] += 1


@njit(cache=True, nogil=True, inline="always")
def _fmax(a, b):
    """``np.fmax``: the larger, a NaN giving way to the other."""
    if not a == a:
        return b
    if not b == b:
        return a
    return a if a >= b else b


class QualityPlan:
    """What the second pass needs to know about the quality of one part of an architecture
    (its stored predictions, or its online predictions): the curves (model, batch features,
    stream features), what a cold start and each missing feature class cost, the constant
    losses (skew, the model variant) and the freshness bounds."""

    def __init__(self, arch, accumulator, has_batch: bool, has_stream: bool,
                 has_request: bool):
        q = arch.scenario.quality
        # slo.freshness: data older than this counts as stale (infinite: no bound)
        self.bound_batch, self.bound_stream = (np.inf if b is None else float(b)
                                               for b in accumulator.freshness_s)
        self.fresh, self.fallback = float(q.fresh), float(q.fallback)
        self.model = Curve(q.model_staleness, q.fresh)
        self.batch = Curve(q.curve("batch") if has_batch else None, q.fresh)
        self.stream = Curve(q.curve("stream") if has_stream else None, q.fresh)
        self.curves = (self.model, self.batch, self.stream)
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


class Plan:
    """An architecture's fused plan: the quality of its stored part and of its online part
    (None where it has no such part), packed as the second pass takes them."""

    def __init__(self, stored: QualityPlan | None, online: QualityPlan | None):
        self.stored, self.online = stored, online
        self.mode = MIXED if stored and online else (STORED if stored else ONLINE)
        parts = [p or q for p, q in ((stored, online), (online, stored))]
        self.codes = np.array([[c.code for c in p.curves] for p in parts], dtype=np.int64)
        self.params = np.array([[[c.a, c.b] for c in p.curves] for p in parts], dtype=float)
        self.missing = np.array([float(p.missing) for p in parts])
        first = parts[0]
        self.constants = (first.fresh, first.fallback, first.lost_batch, first.lost_stream,
                          first.skew, first.variant, first.bound_batch, first.bound_stream)


def stored_part(arch, chunk, mask=None) -> dict:
    """The first pass of requests read from stored predictions (all of the chunk, or those at
    the positions ``mask``): the store read, the model that scored them, the losses numpy
    computes."""
    plan = arch._plan.stored
    t, slot = chunk.t_s, chunk.slot
    lookup = chunk.sample(arch.spec.lookup, "lookup")
    created = chunk.created_at_s(arch.world.population)
    if mask is not None:
        t, slot, lookup, created = t[mask], slot[mask], lookup[mask], created[mask]
    latency, fallback, timed_out, expired, age, cutoff = arch.store.serve(t, slot, lookup,
                                                                         created)
    # a job run during a test scored the test's users with the candidate
    cutoff = arch.world.model.assign(t - age, slot, cutoff)
    drift, trained, network = _extras(arch, chunk, t, cutoff, age, mask)
    return dict(latency=latency, fallback=fallback, timed_out=timed_out, expired=expired,
                age=age, cutoff=cutoff, p_model=plan.model.prepared(np.subtract(t, cutoff)),
                p_batch=plan.batch.prepared(age), drift=drift, trained=trained,
                network=network)


def online_part(arch, chunk, mask=None) -> dict:
    """The first pass of requests served online one at a time (all of the chunk, or those at
    the positions ``mask``): queue, feature ages and model, and the losses numpy computes."""
    plan = arch._plan.online
    spec = arch.spec
    t, slot = chunk.t_s, chunk.slot
    created = chunk.created_at_s(arch.world.population)
    lookup = chunk.sample(spec.feature_lookup, "feature_lookup")
    work = chunk.sample(spec.serving.service_time, "service")
    lag = arch._stream_lag(chunk)
    if mask is not None:
        t, slot, created, lookup, work = t[mask], slot[mask], created[mask], lookup[mask], \
            work[mask]
        lag = None if lag is None else lag[mask]
    n = t.size
    features, stream = arch.features, arch.stream
    wait, started = np.empty(n), np.empty(n, dtype=np.bool_)
    batch_age = np.empty(n) if features is not None else EMPTY
    stream_age = np.empty(n) if stream is not None else EMPTY
    cutoff = np.empty(n)
    b = features.refreshes.arrays() if features is not None else NO_TIMELINE
    given, mode, s = EMPTY, NO_STREAM, NO_TIMELINE
    if stream is not None:
        if stream.spec.window.is_zero:  # each request's own lag (behind any backlog)
            given, mode = stream.age_s(t, lag), OWN_LAG
        else:
            mode, s = WINDOWS, stream.windows.arrays()
    m = arch.world.model.deploys.arrays()
    pool = arch.serving.pool
    online_ages(t, created, lookup, work, pool.patience_s, pool.free_at_s, features is not None,
                b["visible_at_s"], b["best"], b["cutoff_s"], mode, s["visible_at_s"],
                s["best"], s["cutoff_s"], given, m["visible_at_s"], m["best"], m["cutoff_s"],
                wait, started, batch_age, stream_age, cutoff)
    cutoff = arch.world.model.assign(t, slot, cutoff)  # a test's users get its candidate
    model_age = np.subtract(t, cutoff)
    newest = None
    if features is not None and stream is not None:
        newest = np.fmin(batch_age, stream_age)
    elif features is not None or stream is not None:
        newest = batch_age if features is not None else stream_age
    drift, trained, network = _extras(arch, chunk, t, cutoff, newest, mask)
    serving = spec.serving
    return dict(lookup=lookup, work=work, wait=wait, started=started,
                timeout=np.inf if serving.timeout is None else float(serving.timeout),
                batch_age=batch_age, stream_age=stream_age, model_age=model_age,
                has_batch=features is not None, has_stream=stream is not None,
                p_model=plan.model.prepared(model_age), p_batch=plan.batch.prepared(batch_age),
                p_stream=plan.stream.prepared(stream_age), drift=drift, trained=trained,
                network=network)


def _extras(arch, chunk, t, model_cutoff, newest_age, mask) -> tuple:
    """The per-request losses to drift and to how each model was trained, and the round
    trips, as the staged path computes them (empty arrays for what the scenario lacks)."""
    drift = EMPTY
    if arch.scenario.drift:
        drift = drift_loss(arch.scenario.drift, t, model_cutoff,
                           None if newest_age is None else t - newest_age)
    trained = arch.world.model.training_loss(model_cutoff)
    network = EMPTY
    if arch.network is not None:
        network = _column(chunk.network_s(arch.network), chunk.size)
        network = network if mask is None else network[mask]
    return drift, EMPTY if trained is None else trained, network


NO_STORED = dict(latency=EMPTY, fallback=np.empty(0, np.bool_), timed_out=np.empty(0, np.bool_),
                 expired=np.empty(0, np.bool_), age=EMPTY, cutoff=EMPTY, p_model=EMPTY,
                 p_batch=EMPTY, drift=EMPTY, trained=EMPTY, network=EMPTY)
NO_ONLINE = dict(lookup=EMPTY, work=EMPTY, wait=EMPTY, started=np.empty(0, np.bool_),
                 timeout=np.inf, batch_age=EMPTY, stream_age=EMPTY, model_age=EMPTY,
                 has_batch=False, has_stream=False, p_model=EMPTY, p_batch=EMPTY,
                 p_stream=EMPTY, drift=EMPTY, trained=EMPTY, network=EMPTY)
NO_TIMELINE = {"visible_at_s": EMPTY, "best": np.empty(0, dtype=np.int64), "cutoff_s": EMPTY}


def second_pass(arch, chunk, accumulator, keep: bool, stored: dict | None = None,
                online: dict | None = None, head=None):
    """Run :func:`metrics` over the chunk, add its sums to the architecture's losses and the
    accumulator's counts; return the chunk's outcomes when ``keep`` (else None)."""
    plan = arch._plan
    h, o = stored or NO_STORED, online or NO_ONLINE
    t = chunk.t_s
    n = t.size
    out = np.empty((10, n if keep else 0))
    flags = np.empty((5, n if keep else 0), dtype=np.bool_)
    sums = np.zeros((2, N_SUMS))
    a = accumulator
    (fresh, fallback, lost_batch, lost_stream, skew, variant, bound_batch,
     bound_stream) = plan.constants
    metrics(t, head, True if plan.mode == STORED else None,
            h["latency"], h["fallback"], h["timed_out"], h["expired"], h["age"], h["cutoff"],
            h["p_model"], h["p_batch"], h["drift"], h["trained"], h["network"],
            o["lookup"], o["work"], o["wait"], o["started"], o["timeout"], o["batch_age"],
            o["stream_age"], o["model_age"], o["has_batch"], o["has_stream"], o["p_model"],
            o["p_batch"], o["p_stream"], o["drift"], o["trained"], o["network"],
            plan.codes, plan.params, plan.missing, fresh, fallback, lost_batch, lost_stream,
            skew, variant, bound_batch, bound_stream, *a.kernel_arguments(), sums,
            a.latency.counts, a.queue_wait.counts, a.feature_age.counts, a.model_age.counts,
            a.service.counts, a.batch_age.counts, a.stream_age.counts, a.series_latency,
            keep, out, flags)
    if plan.stored is not None:
        plan.stored.add_losses(arch.losses, sums[0])
    if plan.online is not None:
        plan.online.add_losses(arch.losses, sums[1])
    network = h["network"] if plan.mode == STORED else o["network"]
    if plan.mode == MIXED and arch.network is not None:  # both parts' (either may be empty)
        network = _column(chunk.network_s(arch.network), n)
    a.add_counts(expired=int(sums[0, L_EXPIRED]),
                 expired_fallbacks=int(sums[0, L_EXPIRED_FALLBACKS]),
                 stale_features=int(sums[0, L_STALE_FEATURES]),
                 network_s=float(network[t >= a.warmup_s].sum()) if network.size else 0.0)
    if not keep:
        return None
    return _outcomes(plan.mode, t, out, flags, network, o["has_stream"])


def _column(values, n: int) -> np.ndarray:
    """A per-request array of ``values`` (a scalar repeated)."""
    return np.full(n, float(values)) if np.isscalar(values) else values


def _outcomes(mode: int, t, out, flags, network, has_stream: bool) -> Outcomes:
    """A chunk's outcomes from the second pass's rows, as the staged path gives them."""
    n = t.size
    columns = dict(t_s=t, latency_s=out[O_LATENCY], queue_wait_s=out[O_WAIT],
                   quality=out[O_QUALITY], busy_s=out[O_BUSY], service_start_s=out[O_START],
                   service_s=out[O_SERVICE], feature_age_s=out[O_FEATURE],
                   batch_age_s=out[O_BATCH], stream_age_s=out[O_STREAM], model_age_s=out[O_MODEL],
                   fallback=flags[O_FALLBACK], timed_out=flags[O_TIMED_OUT],
                   queued=flags[O_QUEUED], cold_start=flags[O_COLD], expired=flags[O_EXPIRED],
                   network_s=network if network.size else None)
    if mode == STORED:
        columns["stream_age_s"] = None
    elif mode == ONLINE:
        columns["expired"] = None
    else:  # a hybrid's parts merged: every column written out (base.full_answers)
        columns["answer"] = np.where(columns["fallback"], 2, 0).astype(np.int8)
        if network.size == 0:
            columns["network_s"] = np.zeros(n)
        columns["device_s"] = np.zeros(n)
    return Outcomes(**columns)
