"""The architectures section: batch and stream features, serving (batching, autoscaling) and the
four kinds.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union, get_args

import numpy as np
from pydantic import Field, model_validator

from sim.engine.batch_curve import batch_time_at
from sim.distributions import Distribution, ZERO
from sim.units import format_duration
from sim.scenario.fields import (Dist, MAX_UNITS, Model, NonNegativeDuration, PositiveDuration,
                                 Price, Rate)
from sim.scenario.operations import Training
from sim.scenario.deployment import _WithVariant
from sim.scenario.pipelines import (Failures, Pipelines, Spot, StreamOutages, check_fallback)


# --------------------------------------------------------------------------------------------
# Architectures
# --------------------------------------------------------------------------------------------

class BatchFeatures(Model):
    """Scheduled feature materialisation: data cut-off at the start of each run."""

    every: PositiveDuration = Field(description="Time between materialisation runs.")
    duration: NonNegativeDuration | None = Field(None, description="Run time; or give "
                                                 "throughput.")
    throughput: Rate | None = Field(None, description="Entities materialised per second.")
    overhead: NonNegativeDuration = Field(0.0, description="Fixed time added to each run.")
    nodes: int = Field(1, ge=1, le=MAX_UNITS, description="Nodes per run (cost only).")
    start_at: NonNegativeDuration = Field(0.0, description="Offset of the schedule, e.g. 2h "
                                          "for 02:00.")
    delay: Dist = Field(ZERO, description="Extra run time, one draw per run (waiting for a busy "
                        "cluster, late inputs): a run longer than `every` overruns the next.")
    failures: Failures | None = Field(None, description="Runs that fail: {probability, "
                                      "retry_after, retries}.")
    spot: Spot | None = Field(None, description="Runs on spot capacity: {discount, "
                              "preemptions_per_hour, restart}.")
    ttl: PositiveDuration | None = Field(None, description="The online store drops features "
                                         "older than this: a request then has none of them "
                                         "(counted as expired, with the quality of a cold "
                                         "start).")
    bytes_per_entity: float = Field(0.0, ge=0, le=1e12, description="Bytes of features stored "
                                    "per entity in the online store (storage cost).")

    @model_validator(mode="after")
    def _check(self) -> "BatchFeatures":
        if self.duration is not None and self.throughput is not None:
            raise ValueError("give either duration or throughput, not both")
        return self


class StreamFeatures(Model):
    """Features from a stream processor: windows, each visible ``lag`` after it closes."""

    lag: Dist = Field(ZERO, description="From a window closing to its features being visible.")
    window: Dist = Field(ZERO, description="Window length: a duration (1m) for tumbling windows, "
                         "or a distribution for windows that close irregularly (micro-batches); "
                         "0: every event is its own update.")
    nodes: int | Literal["auto"] = Field(1, description="Stream-processing nodes, running "
                                         "all day (cost); auto: enough for the peak event rate "
                                         "(needs node_capacity).")
    node_capacity: Rate | None = Field(None, description="Events one node processes per "
                                       "second: when given, a backlog builds whenever events "
                                       "arrive faster than the nodes process them (at peaks, "
                                       "after an outage) and adds to the lag.")
    events_per_request: float = Field(1.0, gt=0, le=1e6, description="Events the stream "
                                      "processes per prediction request (views, clicks...).")
    outages: StreamOutages | None = Field(None, description="The processor stops now and "
                                          "then: {every, duration}.")
    ttl: PositiveDuration | None = Field(None, description="The online store drops stream "
                                         "features older than this (counted as expired, "
                                         "with the quality of a cold start).")
    aggregation: Literal["stateful", "stateless"] = Field(
        "stateful", description="stateful: each event updates the window's running state; "
        "stateless: the aggregate is recomputed from the events in aggregation_window, for its "
        "entity at each event (window 0) or at each window's close (more events processed, "
        "no state held).")
    aggregation_window: PositiveDuration | None = Field(
        None, description="The span a feature aggregates (e.g. clicks in the last 1h): the "
        "events a stateless recompute reads again.")
    state_bytes: float = Field(0.0, ge=0, le=1e12, description="Bytes of window state held per "
                               "entity (stateful), priced by costs.stream_state_gb_month.")

    @model_validator(mode="after")
    def _check(self) -> "StreamFeatures":
        if self.nodes == "auto" and self.node_capacity is None:
            raise ValueError("nodes: auto sizes the nodes from the event rate; give "
                             "node_capacity (events per second one node processes)")
        if isinstance(self.nodes, int) and not 1 <= self.nodes <= MAX_UNITS:
            raise ValueError(f"nodes must be between 1 and {MAX_UNITS} (got {self.nodes})")
        if self.aggregation == "stateless" and self.aggregation_window is None:
            raise ValueError("aggregation stateless needs aggregation_window (the span each "
                             "recompute reads again, e.g. 1h)")
        return self


class RequestFeatures(Model):
    """Features computed in the request from its own payload (fresh by construction).

    They are computed by the serving replica before inference, so their time occupies the
    replica and waits in its queue like inference does: most teams compute them in the serving
    process, and a separate feature service would be a queue of its own to size.
    """

    compute: Dist = Field(description="Time to compute the request-time features, on the "
                          "replica (per request; per item in a batch).")


class Features(Model):
    """Where the features used at request time come from."""

    batch: BatchFeatures | None = Field(None, description="Scheduled feature materialisation.")
    stream: StreamFeatures | None = Field(None, description="Features from a stream processor.")
    request: RequestFeatures | None = Field(None, description="Features computed in the "
                                            "request: {compute: DURATION or distribution}.")


class Batching(Model):
    """Dynamic batching: a free replica serves up to ``max_batch`` waiting requests at once.

    A batch leaves the queue as soon as a replica is free and either ``max_batch`` requests are
    waiting or the oldest has waited ``max_wait``; it then occupies the replica for the longest
    feature lookup among its requests (one multi-get) plus ``fixed`` (one draw per batch) plus
    ``per_item`` for each request (one draw per request).
    """

    max_batch: int = Field(ge=1, le=MAX_UNITS,
                           description="Most requests served together in one batch.")
    max_wait: NonNegativeDuration = Field(0.0, description="Longest the oldest waiting request "
                                          "is held back for a fuller batch (the linger).")
    fixed: Dist = Field(ZERO, description="Time per batch, whatever its size.")
    per_item: Dist = Field(ZERO, description="Time added for each request in the batch.")
    batch_time: dict[Annotated[int, Field(ge=1, le=MAX_UNITS)], Dist] | None = Field(
        None, description="Instead of fixed and per_item: the time of a whole batch as "
        "measured, by batch size, e.g. {1: 1.3ms, 8: 1.8ms, 128: 2.1ms, 256: 3.5ms} (each a "
        "duration or a distribution); interpolated between the sizes given, quantile by "
        "quantile.")

    @model_validator(mode="after")
    def _check(self) -> "Batching":
        if self.batch_time is not None:
            if not self.batch_time:
                raise ValueError("batch_time needs at least one batch size")
            # set to a time (a resolved scenario lists both at 0 beside batch_time)
            given = [k for k in ("fixed", "per_item") if k in self.model_fields_set
                     and not getattr(self, k).is_zero]
            if given:
                raise ValueError(f"give batch_time (measured times by batch size) or fixed and "
                                 f"per_item, not both (got {', '.join(given)} too)")
            object.__setattr__(self, "batch_time", dict(sorted(self.batch_time.items())))
        return self

    @property
    def table_sizes(self) -> np.ndarray:
        """The batch sizes of ``batch_time``, ascending (empty without it)."""
        return np.array(list(self.batch_time or {}), dtype=float)

    def batch_mean_s(self, size: int) -> float:
        """Mean time of a batch of ``size`` requests, without request-time features."""
        if self.batch_time is None:
            return self.fixed.mean + size * self.per_item.mean
        means = np.array([d.mean for d in self.batch_time.values()])
        return float(batch_time_at(self.table_sizes, means, float(size)))


class Autoscaling(Model):
    """Replicas added and removed by an autoscaler that looks at the last ``every``.

    Every ``every`` the autoscaler computes ``desired = ceil(replicas x observed / target)``
    (as the Kubernetes Horizontal Pod Autoscaler does), from the utilisation of the ready
    replicas or from the mean number of waiting requests per ready replica over the last
    interval, and keeps it between ``min`` and ``max``.

    A decision takes effect ``decision_lag`` later (one draw per decision; at 0, at once).
    A scale-up is then asked for and paid for from that moment: it takes loaded replicas from
    the ``warm_pool`` first, which serve at once, and starts the rest, each drawing its own
    ``node_start`` and ``model_load`` (or ``warmup``, the two together) before it serves. A
    scale-down removes the replicas idle when it takes effect (never one that is busy),
    and is decided only while no replica is starting and at least ``cooldown`` after the last
    change. While a decision waits to take effect the autoscaler keeps measuring but decides
    nothing new. The warm pool refills in the background: each replica taken is replaced by
    one that starts and loads (``node_start`` + ``model_load``); the pool is paid for all the
    time, on top of the serving replicas (``max`` counts serving replicas only). The queue
    target counts every waiting request, those a batcher holds back for ``max_wait``
    included. Delays are drawn from random streams of their own, in the order decisions are
    made and replicas asked for, so every architecture of a scenario meets the same delays.
    """

    min: int = Field(ge=1, le=MAX_UNITS, description="Fewest replicas.")
    max: int = Field(ge=1, le=MAX_UNITS, description="Most replicas (serving, ready or "
                     "starting; the warm pool is on top).")
    target_utilization: float | None = Field(None, gt=0, le=1, description="Share of time "
                                             "the ready replicas should be busy (0.6 = 60%).")
    target_queue: float | None = Field(None, gt=0, description="Waiting requests per ready "
                                       "replica to aim for, on average over the interval.")
    every: PositiveDuration = Field(30.0, description="How often the autoscaler looks and "
                                    "decides.")
    tolerance: float = Field(0.1, ge=0, lt=1, description="No change while observed/target "
                             "is within this share of 1 (Kubernetes uses 0.1).")
    decision_lag: Dist = Field(ZERO, description="From a decision to it taking effect (metrics "
                               "delay, stabilisation, the scheduler): a duration or a "
                               "distribution, one draw per decision.")
    node_start: Dist = Field(ZERO, description="From asking for a replica to its node or "
                             "container running: a duration or a distribution, one draw per "
                             "replica.")
    model_load: Dist = Field(ZERO, description="From the node running to the model loaded and "
                             "the replica serving: a duration or a distribution, one draw per "
                             "replica.")
    warmup: Dist = Field(ZERO, description="Instead of node_start and model_load: from asking "
                         "for a replica to it serving, both together (a duration or a "
                         "distribution).")
    warm_pool: int = Field(0, ge=0, le=MAX_UNITS, description="Replicas kept started and "
                           "loaded but not serving, paid for: a scale-up takes them first "
                           "(they serve as soon as the decision takes effect) and the pool "
                           "refills in the background.")
    cooldown: NonNegativeDuration = Field(300.0, description="No removal sooner than this "
                                          "after the last change.")

    @model_validator(mode="after")
    def _check(self) -> "Autoscaling":
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) must be at least min ({self.min})")
        given = [k for k in ("target_utilization", "target_queue") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of target_utilization or target_queue "
                             f"(got {', '.join(given) or 'none'})")
        # by value, not by the keys given: a resolved scenario writes all three (zeros too)
        split = [k for k in ("node_start", "model_load") if not getattr(self, k).is_zero]
        if split and not self.warmup.is_zero:
            raise ValueError(f"give warmup (node start and model load together) or node_start "
                             f"and model_load, not both (got warmup and {' and '.join(split)})")
        return self

    @property
    def startup(self) -> tuple[Distribution, Distribution]:
        """The two parts of a new replica's start-up, drawn one after the other: (node
        start, model load), or with ``warmup`` (warmup, 0)."""
        if self.warmup.is_zero:
            return self.node_start, self.model_load
        return self.warmup, ZERO

    @property
    def mean_startup_s(self) -> float:
        """Mean time from asking for a replica to it serving (without the decision lag)."""
        first, second = self.startup
        return first.mean + second.mean


class SlowState(Model):
    """One state of a replica's speed: how much slower it works, and for how long."""

    slowdown: float = Field(ge=0.001, le=1000, description="How many times slower the replica "
                            "works in this state: 1 is normal speed, 3.5 three and a half "
                            "times slower.")
    mean: PositiveDuration | None = Field(None, description="Mean time spent in this state each "
                                          "time (exponentially distributed); or give length.")
    length: Dist | None = Field(None, description="How long each stay in this state lasts, as "
                                "a distribution (instead of mean).")
    next: list[float] | None = Field(None, description="With three or more states: the "
                                     "probability of each state coming next (0 for this one); "
                                     "default: the others equally likely.")

    @model_validator(mode="after")
    def _check(self) -> "SlowState":
        if (self.mean is None) == (self.length is None):
            raise ValueError("give mean (an exponential stay) or length (a distribution), "
                             "not both and not neither")
        if self.length is not None and not self.length.mean > 0:
            raise ValueError("length must have a mean above 0")
        return self

    @property
    def mean_s(self) -> float:
        return float(self.mean if self.mean is not None else self.length.mean)


class SlowPeriods(Model):
    """Stretches of time in which a replica works slower (CPU throttling under a container's
    quota, noisy neighbours, garbage-collection pauses, thermal or power capping).

    The replica's speed follows a few states, each with a ``slowdown`` and a time spent in it;
    after a stay the next state is drawn (two states alternate). Work in progress is stretched
    while a slow state lasts: a request needing 10 ms of work that meets a 3.5x slowdown for
    all of it holds its replica for 35 ms. What is slowed is the replica's own work (inference,
    a batch's fixed time, request-time features); a feature lookup waits on the store and is
    not. ``scope: replica`` (the default) gives every replica its own independent stretches, as
    when each replica is a container throttled by its own CPU quota; ``scope: host`` slows
    every replica together, as when they share one machine and a noisy neighbour or a paused
    virtual CPU slows them all.
    """

    scope: Literal["replica", "host"] = Field("replica", description="replica: each replica "
                                              "slows on its own; host: all replicas slow "
                                              "together.")
    states: list[SlowState] = Field(min_length=2, max_length=8, description="The speeds, e.g. "
                                    "[{slowdown: 1, mean: 2s}, {slowdown: 3.5, mean: 30ms}].")

    @model_validator(mode="after")
    def _check(self) -> "SlowPeriods":
        n = len(self.states)
        for k, state in enumerate(self.states):
            if state.next is None:
                continue
            if len(state.next) != n:
                raise ValueError(f"states[{k}].next has {len(state.next)} probabilities; give "
                                 f"one per state ({n})")
            if any(not 0 <= p <= 1 for p in state.next) or abs(sum(state.next) - 1) > 1e-6:
                raise ValueError(f"states[{k}].next must be probabilities that add up to 1")
            if state.next[k] != 0:
                raise ValueError(f"states[{k}].next[{k}] must be 0: a stay ends by moving to "
                                 "another state")
        return self

    def jumps(self) -> np.ndarray:
        """The probability of moving from each state (row) to each other (column)."""
        n = len(self.states)
        p = np.empty((n, n))
        for k, state in enumerate(self.states):
            if state.next is not None:
                p[k] = state.next
            else:
                p[k] = 1.0 / (n - 1)
                p[k, k] = 0.0
        return p

    def visit_shares(self) -> np.ndarray:
        """The long-run share of stays in each state (the jump chain's stationary law)."""
        p = self.jumps()
        n = p.shape[0]
        a = np.vstack([p.T - np.eye(n), np.ones(n)])
        b = np.r_[np.zeros(n), 1.0]
        return np.linalg.lstsq(a, b, rcond=None)[0]

    def time_shares(self) -> np.ndarray:
        """The long-run share of time spent in each state (stays weighted by their means)."""
        time = self.visit_shares() * np.array([s.mean_s for s in self.states])
        return time / time.sum()

    @property
    def mean_stay_s(self) -> float:
        """The mean length of a stay, over all states: the time between changes of speed."""
        return float(self.visit_shares() @ np.array([s.mean_s for s in self.states]))

    @property
    def mean_speed(self) -> float:
        """Work done per second of time, on average (1 without slowdown): the time-weighted
        mean of 1/slowdown."""
        return float(self.time_shares() @ (1.0 / np.array([s.slowdown for s in self.states])))


class AfterIdle(Model):
    """A replica's work that depends on how long the replica was idle before it.

    A CPU that has just been idle is slower for a while (caches gone cold, a power state to
    leave), a GPU that has been busy back to back faster: measured one request at a time with
    pauses, a model server took 13% longer than its average after 10 ms of idling and 4% less
    right after the previous request (docs/fidelity.md). The idle time before a request (or
    a batch) is when its replica started it minus when that replica was last free: 0 for one
    that waited in the queue, however long the replica then stood idle while a batch lingered
    counted in; a replica that has never served (at the start, or new from a scale-up) counts
    as idle for ever (the last factor). The replica's work (the service time, a batch's fixed,
    per_item or batch_time, request-time features and time_per_size) is multiplied by the
    ``slowdown`` read off at that idle time: straight lines between the ``idle`` points given,
    flat beyond the first and the last. The feature lookup waits on a store and is not
    multiplied. ``predsim calibrate latency`` fits it from a time-ordered series of service
    times (docs/measuring-inputs.md).
    """

    idle: list[NonNegativeDuration] = Field(min_length=1, max_length=64, description="Idle "
                                            "times before a request, increasing, e.g. [0, 1ms, "
                                            "10ms].")
    slowdown: list[float] = Field(min_length=1, max_length=64, description="The work's "
                                  "multiplier at each idle time, e.g. [0.96, 1.0, 1.13]: 1 as "
                                  "measured, above 1 slower, below 1 faster.")

    @model_validator(mode="after")
    def _check(self) -> "AfterIdle":
        if len(self.idle) != len(self.slowdown):
            raise ValueError(f"give one slowdown per idle time (got {len(self.idle)} idle "
                             f"times and {len(self.slowdown)} slowdowns)")
        for k in range(1, len(self.idle)):
            if not self.idle[k] > self.idle[k - 1]:
                raise ValueError(f"idle must increase: idle[{k}] "
                                 f"({format_duration(self.idle[k])}) is not after idle[{k - 1}] "
                                 f"({format_duration(self.idle[k - 1])})")
        for k, s in enumerate(self.slowdown):
            if not 0.001 <= s <= 1000:
                raise ValueError(f"slowdown[{k}] must be between 0.001 and 1000: a multiplier "
                                 f"of the work, 1 as measured (got {s:g})")
        return self

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(idle times in seconds, slowdowns) as float64 arrays, for the kernels."""
        return (np.ascontiguousarray(self.idle, dtype=np.float64),
                np.ascontiguousarray(self.slowdown, dtype=np.float64))

    def factor(self, idle_s) -> np.ndarray:
        """The slowdown at each idle time ``idle_s`` (seconds; ``inf`` for a replica that never
        served): linear between the points, flat beyond the ends."""
        x = np.asarray(idle_s, dtype=float)
        return np.interp(np.minimum(x, self.idle[-1]), self.idle, self.slowdown)


class Serving(Model):
    """Serving replicas: FIFO, each runs feature lookup then inference for one request (or one
    batch of requests with ``batching``)."""

    replicas: int = Field(ge=1, le=MAX_UNITS,
                          description="Serving replicas, each serving one request (or "
                          "batch) at a time; with autoscaling, the number at the start.")
    service_time: Dist | None = Field(None, description="Inference time per request on a "
                                      "replica (without batching).")
    timeout: PositiveDuration | None = Field(None, description="Requests slower than this get "
                                             "the fallback.")
    batching: Batching | None = Field(None, description="Dynamic batching: {max_batch, "
                                      "max_wait, fixed, per_item}; replaces service_time.")
    autoscaling: Autoscaling | None = Field(None, description="Add and remove replicas with "
                                            "load: {min, max, target_utilization or "
                                            "target_queue, every, warmup, cooldown}.")
    time_per_size: NonNegativeDuration = Field(0.0, description="Work added per unit of a "
                                               "request's size (tokens, candidates: a replayed "
                                               "log's size column), e.g. 20us per token; on the "
                                               "replica, per request or per item of a batch.")
    replica_hour: Price | None = Field(None, ge=0, description="US$ per replica-hour of this "
                                       "serving section, when it differs from "
                                       "costs.replica_hour (a GPU beside CPUs).")
    slow_periods: SlowPeriods | None = Field(None, description="Stretches in which replicas "
                                             "work slower: {scope, states: [{slowdown, mean or "
                                             "length}, ...]}.")
    after_idle: AfterIdle | None = Field(None, description="The replica's work multiplied by "
                                         "a slowdown that depends on how long the replica was "
                                         "idle before the request (0 when it waited in the "
                                         "queue): {idle: [0, 1ms, 10ms], slowdown: [0.96, 1.0, "
                                         "1.13]}, straight lines between the points, flat "
                                         "beyond; the service time (a batch's fixed, per_item "
                                         "or batch_time) and request-time work are multiplied, "
                                         "the feature lookup is not.")

    @model_validator(mode="after")
    def _check(self) -> "Serving":
        if (self.service_time is None) == (self.batching is None):
            raise ValueError("give service_time (one request at a time) or batching (fixed "
                             "and per_item times), not both and not neither")
        b = self.batching
        if b is not None and self.timeout is not None and b.max_wait >= self.timeout:
            raise ValueError(f"batching.max_wait ({format_duration(b.max_wait)}) must be "
                             f"shorter than timeout ({format_duration(self.timeout)}), or every "
                             f"request held for a batch would time out")
        a = self.autoscaling
        if a is not None and not a.min <= self.replicas <= a.max:
            raise ValueError(f"replicas ({self.replicas}) is where autoscaling starts: it must "
                             f"be between autoscaling.min ({a.min}) and max ({a.max})")
        return self

    def price_per_hour(self, costs) -> float:
        """US$ per replica-hour: this section's own price, else the scenario's."""
        return self.replica_hour if self.replica_hour is not None else costs.replica_hour

    def mean_occupancy_s(self, feature_lookup: Distribution,
                         request_features: "RequestFeatures | None" = None) -> float:
        """Mean replica time per request: one request at a time, or a full batch shared (which
        waits for the slowest of its ``max_batch`` feature lookups); request-time features
        add their compute time per request. With ``after_idle`` the work is at its slowdown
        for no idling (the first: requests back to back): the idle times, and so the mean
        slowdown, depend on the load, but a queue that grows without bound is busy back to
        back, so this is the occupancy that says whether the replicas keep up (offered load,
        queue stability)."""
        extra = request_features.compute.mean if request_features is not None else 0.0
        # slow periods stretch the replica's own work by 1 / (mean speed) in the long run
        stretch = 1.0 / self.slow_periods.mean_speed if self.slow_periods is not None else 1.0
        if self.after_idle is not None:
            stretch *= self.after_idle.slowdown[0]
        if self.batching is None:
            return feature_lookup.mean + (self.service_time.mean + extra) * stretch
        b = self.batching
        # E[max of B draws] = integral of F^-1(u) B u^(B-1) du, on a midpoint grid
        u = (np.arange(4096) + 0.5) / 4096
        slowest = float(np.mean(feature_lookup.ppf(u) * b.max_batch * u ** (b.max_batch - 1)))
        return slowest / b.max_batch + (b.batch_mean_s(b.max_batch) / b.max_batch + extra) \
            * stretch


class _Scheduled(_WithVariant):
    """Scheduled scoring jobs writing predictions to a store."""

    every: PositiveDuration = Field(description="Time between scoring jobs.")
    throughput: Rate = Field(description="Entities scored per second by a job.")
    overhead: NonNegativeDuration = Field(0.0, description="Fixed time added to each job.")
    nodes: int = Field(1, ge=1, le=MAX_UNITS, description="Nodes per job (cost only).")
    start_at: NonNegativeDuration = Field(0.0, description="Offset of the schedule, e.g. 2h "
                                          "for 02:00.")
    lookup: Dist = Field(ZERO, description="Time to read a stored prediction.")
    timeout: PositiveDuration | None = Field(None, description="Lookups slower than this get "
                                             "the fallback.")
    training: Training | None = Field(None, description="This architecture's own retraining, "
                                      "instead of the scenario's training section (shared "
                                      "otherwise).")
    delay: Dist = Field(ZERO, description="Extra run time of a scoring job, one draw per run "
                        "(a busy cluster, late inputs): a job longer than `every` overruns the "
                        "next.")
    failures: Failures | None = Field(None, description="Scoring jobs that fail: "
                                      "{probability, retry_after, retries}.")
    spot: Spot | None = Field(None, description="Scoring on spot capacity: {discount, "
                              "preemptions_per_hour, restart}.")
    ttl: PositiveDuration | None = Field(None, description="The store drops predictions older "
                                         "than this (from their data cut-off): a request then "
                                         "falls back (see fallback).")
    prediction_bytes: float = Field(0.0, ge=0, le=1e12, description="Bytes stored per "
                                    "prediction (storage cost).")
    fallback: list[str] = Field(["default"], description="What answers a request without a "
                                "valid prediction, in order: stale (the last stored prediction "
                                "however old), default (a popular default: quality.fallback), "
                                "error (nothing; counted as an error).")
    pipelines: Pipelines | None = Field(None, description="Training and serving pipelines: "
                                        "{kind: dual, skew_loss, skewed_share} or {kind: "
                                        "unified or log_and_wait, cost_per_day}.")

    @model_validator(mode="after")
    def _check_fallback(self):
        check_fallback(self.fallback, stores_predictions=True)
        return self


class BatchArchitecture(_Scheduled):
    """Scheduled scoring jobs; requests read the stored prediction."""

    kind: Literal["batch"] = Field(description="batch")


class OnlineArchitecture(_WithVariant):
    """Prediction at request time with features from a batch pipeline."""

    kind: Literal["online"] = Field(description="online")
    training: Training | None = Field(None, description="This architecture's own retraining, "
                                      "instead of the scenario's training section (shared "
                                      "otherwise).")
    features: Features = Field(description="features.batch: how often features are materialised.")
    feature_lookup: Dist = Field(ZERO, description="Time to fetch features, on the replica.")
    serving: Serving = Field(description="Serving replicas.")
    fallback: list[str] = Field(["default"], description="What answers a request without a "
                                "prediction (timed out), in order: default (a popular default: "
                                "quality.fallback) or error (nothing; counted as an error).")
    pipelines: Pipelines | None = Field(None, description="Training and serving pipelines: "
                                        "{kind: dual, skew_loss, skewed_share} or {kind: "
                                        "unified or log_and_wait, cost_per_day}.")

    @model_validator(mode="after")
    def _check(self):
        if self.features.batch is None:
            raise ValueError("online needs features.batch (how often features are materialised)")
        if self.features.stream is not None:
            raise ValueError("online has no stream features; use kind: streaming")
        check_fallback(self.fallback, stores_predictions=False)
        return self


class StreamingArchitecture(_WithVariant):
    """Prediction at request time with batch features plus features from a stream processor."""

    kind: Literal["streaming"] = Field(description="streaming")
    training: Training | None = Field(None, description="This architecture's own retraining, "
                                      "instead of the scenario's training section (shared "
                                      "otherwise).")
    features: Features = Field(description="features.stream (lag, window) and optionally features.batch.")
    feature_lookup: Dist = Field(ZERO, description="Time to fetch features, on the replica.")
    serving: Serving = Field(description="Serving replicas.")
    fallback: list[str] = Field(["default"], description="What answers a request without a "
                                "prediction (timed out), in order: default (a popular default: "
                                "quality.fallback) or error (nothing; counted as an error).")
    pipelines: Pipelines | None = Field(None, description="Training and serving pipelines: "
                                        "{kind: dual, skew_loss, skewed_share} or {kind: "
                                        "unified or log_and_wait, cost_per_day}.")

    @model_validator(mode="after")
    def _check(self):
        if self.features.stream is None:
            raise ValueError("streaming needs features.stream (lag and window)")
        check_fallback(self.fallback, stores_predictions=False)
        return self


class HybridArchitecture(_Scheduled):
    """Batch predictions for the most popular entities, online prediction for the rest."""

    kind: Literal["hybrid"] = Field(description="hybrid")
    head_share: float = Field(gt=0, le=1, description="Share of entities, most popular first, "
                              "that get precomputed predictions.")
    features: Features = Field(description="Features for the online part (features.batch required).")
    feature_lookup: Dist = Field(ZERO, description="Time to fetch features, on the replica.")
    serving: Serving = Field(description="Serving replicas.")

    @model_validator(mode="after")
    def _check(self):
        if self.features.batch is None:
            raise ValueError("hybrid needs features.batch for its online part")
        return self


class Sync(Model):
    """How often a device fetches its features (computed by the server at that moment)."""

    every: PositiveDuration = Field(description="Time between a device's syncs (each device "
                                    "at its own phase of the cycle).")
    offline: float = Field(0.0, ge=0, lt=1, description="Share of scheduled syncs a device "
                           "misses because it is offline; its features then stay as they were "
                           "until the next sync that happens.")


class CloudFallback(Model):
    """An edge architecture's cloud path: online prediction on serving replicas for the
    requests the device does not answer itself."""

    slower_than: PositiveDuration | None = Field(None, description="Requests whose on-device "
                                                 "inference would take longer than this go "
                                                 "to the cloud (a slow phone).")
    cold: bool = Field(True, description="Devices with no synced features yet (a new user) "
                       "ask the cloud.")
    features: Features = Field(description="The cloud's features (features.batch required).")
    feature_lookup: Dist = Field(ZERO, description="Time to fetch features, on the replica.")
    serving: Serving = Field(description="The cloud's serving replicas.")

    @model_validator(mode="after")
    def _check(self):
        if self.features.batch is None:
            raise ValueError("cloud needs features.batch (how often the cloud's features are "
                             "materialised)")
        if self.features.stream is not None:
            raise ValueError("cloud: stream features are not modelled on the edge's cloud path")
        return self


class EdgeArchitecture(_WithVariant):
    """Prediction on the user's device: no serving replicas, features as fresh as the device's
    last sync, models that reach devices after a rollout delay; optionally a cloud path."""

    kind: Literal["edge"] = Field(description="edge")
    training: Training | None = Field(None, description="This architecture's own retraining, "
                                      "instead of the scenario's training section (shared "
                                      "otherwise).")
    device_time: Dist = Field(description="On-device inference time per request (a phone is "
                              "slower than a server).")
    sync: Sync = Field(description="Feature syncs: {every, offline}.")
    rollout: Dist = Field(ZERO, description="From a model's deploy to a device having it "
                          "(downloads spread over days: not every device updates at once).")
    request_features: RequestFeatures | None = Field(None, description="Features computed on "
                                                     "the device from the request (its session), "
                                                     "fresh by construction: {compute}.")
    cloud: CloudFallback | None = Field(None, description="The cloud path for slow devices and "
                                        "new users: {slower_than, cold, features, "
                                        "feature_lookup, serving}.")
    fallback: list[str] = Field(["default"], description="What answers a request the cloud "
                                "path times out on: default or error.")

    @model_validator(mode="after")
    def _check(self):
        check_fallback(self.fallback, stores_predictions=False)
        if self.cloud is not None and self.cloud.slower_than is None and not self.cloud.cold:
            raise ValueError("cloud: give slower_than or cold: true, or no request ever goes "
                             "to the cloud")
        return self


def serving_of(spec) -> tuple[str, Serving] | tuple[None, None]:
    """(key path within the architecture, serving section) of an architecture's replicas: its
    own ``serving``, or an edge's ``cloud.serving``; (None, None) without replicas."""
    if getattr(spec, "serving", None) is not None:
        return "serving", spec.serving
    cloud = getattr(spec, "cloud", None)
    if cloud is not None:
        return "cloud.serving", cloud.serving
    return None, None


# The kinds' sections; their names (the ``kind`` literal) are the kinds a scenario may use, and
# sim.engine.architectures.registry gives each its runtime class and traits.
ARCHITECTURE_SPECS = (BatchArchitecture, OnlineArchitecture, StreamingArchitecture,
                      HybridArchitecture, EdgeArchitecture)
Architecture = Annotated[Union[ARCHITECTURE_SPECS], Field(discriminator="kind")]
KINDS = tuple(get_args(spec.model_fields["kind"].annotation)[0] for spec in ARCHITECTURE_SPECS)
