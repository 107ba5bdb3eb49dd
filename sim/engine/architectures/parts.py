"""Building blocks: stored batch predictions, online serving, and their feature pipelines."""

from __future__ import annotations

import numpy as np
import simpy
from numba import njit

from sim.engine.architectures.backlog import StreamFlow
from sim.engine.architectures.base import World
from sim.engine.control import Attempts, Incident, Run, apportioned_usd, periodic
from sim.engine.freshness import Timeline, _last_visible
from sim.scenario import BatchFeatures, Serving, StreamFeatures, _Scheduled
from sim.engine.serving import BatchingPool, ReplicaPool
from sim.engine.slow_periods import SlowPath
from sim.engine.workload import Population


class StoredPredictions:
    """Scheduled scoring jobs writing predictions to a store that requests read.

    A job scheduled at ``s`` scores every entity that exists at ``s`` (its data cut-off), or only
    those in the popularity head for a hybrid, with the model deployed at ``s``, and takes
    ``entities / throughput + overhead``. A request reads the latest finished job's prediction;
    an entity created after that job's cut-off has none and gets the fallback. Usage is tracked
    per job so that predictions replaced before anyone read them count as wasted.
    """

    def __init__(self, spec: _Scheduled, head_slots: int | None = None):
        self.spec = spec
        self.head_slots = head_slots
        self.jobs = Timeline("predictions")
        self.runs: list[Run] = []
        self.incidents: list[Incident] = []
        self.population: Population | None = None
        self._seen: np.ndarray | None = None  # entities that read the current job (bits)
        self._seen_job = np.full(1, -1, dtype=np.int64)  # the job those bits are for
        self._used: list[int] = []  # per job, the entities that read its predictions
        self._counts = np.zeros(0, dtype=np.int64)  # scratch: new readers per job in a chunk

    def lead_s(self, population_size: int) -> float:
        longest = population_size / self.spec.throughput + self.spec.overhead
        return 2 * self.spec.every + longest + _delay_lead(self.spec)

    def start(self, env: simpy.Environment, world: World) -> None:
        self.population = world.population
        self.model = world.model.deploys
        # a bit per entity: whether it has read the job in force yet (31 million users: 3.9
        # MB, where a last-read job per user took 124 MB that random reads kept missing)
        self._seen = np.zeros((world.population.n_slots >> 6) + 1, dtype=np.uint64)
        self.attempts = Attempts(self.spec, "batch_scoring", world.streams, self.runs,
                                 self.incidents)
        env.process(periodic(env, self.spec.every, self.spec.start_at, world.history_start_s,
                             self._job))

    def _job(self, env: simpy.Environment, scheduled_s: float):
        spec = self.spec
        scored = self.population.count_at(scheduled_s, self.head_slots)
        model_cutoff = self.model.cutoff_at(scheduled_s)

        def publish():
            self.jobs.append(env.now, scheduled_s, model_cutoff_s=model_cutoff, scored=scored)
            self._used.append(0)

        yield from self.attempts.run(env, scheduled_s, scored / spec.throughput + spec.overhead,
                                     publish)

    def serve(self, t_s: np.ndarray, slot: np.ndarray, lookup: np.ndarray,
              created_at_s: np.ndarray | None = None):
        """(latency, fallback, timed_out, expired, feature_age, model_cutoff) for requests read
        from store, given each request's store-lookup time (and its entity's creation time,
        when the caller has it). The feature age is NaN for a fallback, except for an expired
        prediction (older than the ttl), which keeps its age and model cut-off (a ``stale``
        fallback may still serve it)."""
        n = t_s.size
        latency, feature_age, model_cutoff = np.empty(n), np.empty(n), np.empty(n)
        fallback, timed_out = np.empty(n, dtype=np.bool_), np.empty(n, dtype=np.bool_)
        expired = np.empty(n, dtype=np.bool_)
        if n == 0:
            return latency, fallback, timed_out, expired, feature_age, model_cutoff
        jobs = self.jobs.arrays()
        if len(self._used) > self._counts.size:
            self._counts = np.zeros(len(self._used), dtype=np.int64)
        timeout = np.inf if self.spec.timeout is None else float(self.spec.timeout)
        ttl = np.inf if self.spec.ttl is None else float(self.spec.ttl)
        if created_at_s is None:
            created_at_s = self.population.created_at_s(slot)
        _read_store(np.ascontiguousarray(t_s, dtype=np.float64), np.ascontiguousarray(slot),
                    created_at_s,
                    np.ascontiguousarray(lookup, dtype=np.float64), jobs["visible_at_s"],
                    jobs["best"], jobs["cutoff_s"],
                    jobs.get("model_cutoff_s", jobs["cutoff_s"]), timeout, ttl,
                    self._seen, self._seen_job, self._counts, latency, fallback, timed_out,
                    expired, feature_age, model_cutoff)
        for k in np.flatnonzero(self._counts):
            self._used[k] += int(self._counts[k])
            self._counts[k] = 0
        return latency, fallback, timed_out, expired, feature_age, model_cutoff

    def wasted(self, start_s: float, end_s: float) -> tuple[int, int]:
        """(scored, unused) over jobs whose predictions were replaced within the window.

        Only jobs that came into force after requests began are counted, so every use of their
        predictions was simulated.
        """
        rows = self.jobs.rows
        if not rows:
            return 0, 0
        best = self.jobs.arrays()["best"]
        visible = self.jobs.arrays()["visible_at_s"]
        scored = unused = 0
        for i, row in enumerate(rows):
            if visible[i] < 0:
                continue  # in force before requests begin (time 0): its use was not simulated
            if best[i] != i:
                replaced_at = visible[i]  # overtaken by a newer cut-off before it was read
            else:
                k = int(np.searchsorted(best, i, side="right"))  # first job that replaced it
                if k == len(rows):
                    continue  # still in use at the end: its waste is not known yet
                replaced_at = visible[k]
            if start_s < replaced_at <= end_s:
                scored += int(row["scored"])
                unused += int(row["scored"]) - self._used[i]
        return scored, unused

    def cost_usd_per_day(self, prices, start_s: float, end_s: float) -> float:
        return _runs_usd_per_day(self.spec, self.runs, prices, start_s, end_s)

    def storage_usd_per_day(self, prices, start_s: float, end_s: float) -> float:
        """One stored prediction per entity scored (the head's, for a hybrid), per GB-month."""
        return gb_month_usd_per_day(
            mean_entities(self.population, start_s, end_s, self.head_slots) *
            self.spec.prediction_bytes, prices.storage_gb_month)


def _delay_lead(spec) -> float:
    """How much longer than computed a run may take: its delay's 99.99th percentile."""
    return 0.0 if spec.delay.is_zero else float(spec.delay.ppf(np.array(0.9999)))


def _runs_usd_per_day(spec, runs: list[Run], prices, start_s: float, end_s: float) -> float:
    """Node-hours of a scheduled job's runs (failed and preempted ones included), at the batch
    node price less any spot discount, per day of the window."""
    price = prices.batch_node_hour * (1.0 - (spec.spot.discount if spec.spot else 0.0))
    return apportioned_usd(runs, lambda r: r.duration_s / 3600 * r.nodes * price, start_s,
                           end_s)


@njit(cache=True, nogil=True)
def _read_store(t_s, slot, created_at_s, lookup_s, visible_at_s, best, cutoff_s, model_cutoff_s,
                timeout_s, ttl_s, seen, seen_job, counts, latency, fallback, timed_out,
                expired, feature_age, model_cutoff):
    """Each request reads the prediction of the job in force at its time (the visible job with
    the newest cut-off); it has none if there is no job yet or its entity was created after the
    job's cut-off, and falls back then, when the lookup exceeds the timeout, or when the
    prediction is older than the ttl (expired: its age and model cut-off are kept).

    Counts, per job, the entities reading its predictions for the first time (for wasted
    predictions): the job in force never goes back in time, so one bit per entity (``seen``,
    for the job ``seen_job[0]``, cleared when a newer job comes into force) tells a new
    (job, entity) pair. An expired read is not a use.
    """
    m = visible_at_s.shape[0]
    j = _last_visible(visible_at_s, t_s[0])
    for i in range(t_s.shape[0]):
        while j + 1 < m and visible_at_s[j + 1] <= t_s[i]:
            j += 1
        job = best[j] if j >= 0 else -1
        late = lookup_s[i] > timeout_s
        timed_out[i] = late
        latency[i] = timeout_s if late else lookup_s[i]
        expired[i] = False
        if job < 0:
            fallback[i] = True
            feature_age[i] = np.nan
            model_cutoff[i] = np.nan
            continue
        cut = cutoff_s[job]
        model_cutoff[i] = model_cutoff_s[job]
        missed = late or created_at_s[i] > cut
        age = t_s[i] - cut
        gone = (not missed) and age > ttl_s
        expired[i] = gone
        fallback[i] = missed or gone
        feature_age[i] = np.nan if missed else age
        if not (missed or gone):
            if job != seen_job[0]:
                seen_job[0] = job
                seen[:] = 0
            s = slot[i]
            bit = np.uint64(1) << np.uint64(s & 63)
            word = s >> 6
            if not seen[word] & bit:
                seen[word] |= bit
                counts[job] += 1


class BatchFeaturePipeline:
    """Scheduled feature materialisation; requests see features as of the last finished run."""

    def __init__(self, spec: BatchFeatures):
        self.spec = spec
        self.refreshes = Timeline("batch features")
        self.runs: list[Run] = []
        self.incidents: list[Incident] = []

    def lead_s(self, population_size: int) -> float:
        return 2 * self.spec.every + self._duration(population_size) + _delay_lead(self.spec)

    def _duration(self, entities: int) -> float:
        spec = self.spec
        if spec.throughput is not None:
            return entities / spec.throughput + spec.overhead
        return (spec.duration or 0.0) + spec.overhead

    def start(self, env: simpy.Environment, world: World) -> None:
        self.population = world.population
        self.attempts = Attempts(self.spec, "feature_pipeline", world.streams, self.runs,
                                 self.incidents)
        env.process(periodic(env, self.spec.every, self.spec.start_at, world.history_start_s,
                             self._materialise))

    def _materialise(self, env: simpy.Environment, scheduled_s: float):
        yield from self.attempts.run(env, scheduled_s,
                                     self._duration(self.population.count_at(scheduled_s)),
                                     lambda: self.refreshes.append(env.now, scheduled_s))

    def feature_cutoff_s(self, t_s: np.ndarray) -> np.ndarray:
        return self.refreshes.at(t_s, "cutoff_s")

    def cost_usd_per_day(self, prices, start_s: float, end_s: float) -> float:
        return _runs_usd_per_day(self.spec, self.runs, prices, start_s, end_s)

    def storage_usd_per_day(self, prices, start_s: float, end_s: float) -> float:
        """Every entity's features in the online store, per GB-month."""
        return gb_month_usd_per_day(mean_entities(self.population, start_s, end_s) *
                                    self.spec.bytes_per_entity, prices.storage_gb_month)


class StreamPipeline:
    """Stream features computed over windows.

    Windows close one after another, each ``window`` long (a fixed length: tumbling windows
    closing at multiples of it; a distribution: a renewal process of window lengths), and a
    window's features become visible ``lag`` after it closes (one lag draw per window). A
    request's stream-feature age is its time minus the close of the newest visible window: for
    evenly spread requests, ``lag + U(0, window)`` with tumbling windows (mean
    ``E[lag] + window / 2``, at most ``lag + window``), and ``E[lag] + E[W^2] / (2 E[W])`` for
    renewal windows with a constant lag (age of information). With ``window: 0`` every event is
    its own update and the age is the request's own lag draw.
    """

    def __init__(self, spec: StreamFeatures):
        self.spec = spec
        self.windows = Timeline("stream windows")
        self.flow: StreamFlow | None = None
        self.incidents: list[Incident] = []

    def lead_s(self) -> float:
        window = self.spec.window
        if window.is_zero:
            return 0.0
        return 2 * float(window.ppf(np.array(0.9999))) + float(self.spec.lag.ppf(np.array(0.9999)))

    def start(self, env: simpy.Environment, world: World) -> None:
        """Draw the outages and integrate the backlog (with outages or node_capacity), and
        start the windows (unless every event is its own update)."""
        spec = self.spec
        self.flow = StreamFlow(spec, world.scenario.workload, world.history_start_s,
                               world.scenario.end_s, world.streams)
        self.incidents.extend(Incident("stream_processing", "outage", float(a), float(b))
                              for a, b in zip(self.flow.outage_starts, self.flow.outage_ends))
        window = spec.window
        if window.is_zero:
            return
        self._rng = world.streams["stream_windows"]
        since = max(world.history_start_s, -self.lead_s())
        if window.kind == "constant":
            env.process(periodic(env, window.mean, 0.0, since, self._close))
        else:
            env.process(self._renewals(env, since))

    def _renewals(self, env: simpy.Environment, since_s: float):
        if since_s > env.now:
            yield env.timeout(since_s - env.now)
        while True:
            yield env.timeout(float(self.spec.window.ppf(self._rng.random())))
            env.process(self._close(env, env.now))

    def _close(self, env: simpy.Environment, closed_s: float):
        """A window closes: its events are processed (at once, or after a backlog or an
        outage), then its features are visible ``lag`` later."""
        lag = float(self.spec.lag.ppf(self._rng.random()))
        if self.flow is not None and self.flow.active:
            lag += self.flow.visible_at(closed_s) - closed_s
        yield env.timeout(lag)
        self.windows.append(env.now, closed_s)

    def event_cutoff_s(self, t_s: np.ndarray, lag_s: np.ndarray) -> np.ndarray:
        """With window 0: the data time of each request's stream features, its time less its
        own lag, or less, when the processor is behind, the newest event processed."""
        if self.flow is not None and self.flow.active:
            return self.flow.processed_until(t_s) - lag_s
        return t_s - lag_s

    def age_s(self, t_s: np.ndarray, lag_s: np.ndarray | None) -> np.ndarray:
        """Stream-feature age; ``lag_s`` (each request's own lag) is used when window is 0."""
        if self.spec.window.is_zero:
            if self.flow is not None and self.flow.active:
                return t_s - self.event_cutoff_s(t_s, lag_s)
            return lag_s
        return t_s - self.windows.at(t_s, "cutoff_s")

    @property
    def nodes(self) -> int:
        return self.flow.nodes if self.flow is not None else int(self.spec.nodes)

    def cost_usd_per_day(self, prices, start_s: float, end_s: float, population) -> float:
        """Nodes all day, plus events processed at ``costs.stream_per_million_events``, plus
        window state held (stateful: ``state_bytes`` per entity) per GB-month."""
        spec = self.spec
        nodes_usd = self.nodes * 24 * prices.stream_node_hour
        events = self.flow.events_per_day(start_s, end_s) if self.flow is not None else 0.0
        seen = self.flow.rate_seen_by_events(start_s, end_s) if self.flow is not None else 0.0
        # re-reads at the rate an average event arrives at, E[r^2] / E[r]
        processed = events * events_read_per_event(self.spec, population, seen)
        events_usd = processed / 1e6 * prices.stream_per_million_events
        state_usd = 0.0
        if spec.aggregation == "stateful" and spec.state_bytes > 0:
            state_usd = gb_month_usd_per_day(mean_entities(population, start_s, end_s) *
                                             spec.state_bytes, prices.stream_state_gb_month)
        return nodes_usd + events_usd + state_usd


def events_read_per_event(spec, population, events_per_s: float) -> float:
    """Events a stream processor reads per event arriving. Stateful: 1 (it adds the event to
    the window's running state). Stateless, every event its own update (window 0): the event
    and the entity's other events within ``aggregation_window`` ``W``, read again, ``1 + W x
    rate x sum(p_e^2)`` on average (an entity with a share ``p_e`` of the events has ``W x rate
    x p_e`` of them in its window and makes a share ``p_e`` of the recomputes; ``rate`` is the
    rate at the event's time, so over a day the rate an average event sees, ``E[r^2] / E[r]``).
    Stateless with windows of mean length ``w``: each window's close reads the last ``W`` of
    events again, ``W / w`` per event (at least 1)."""
    if spec.aggregation == "stateful":
        return 1.0
    if spec.window.is_zero:
        return 1.0 + spec.aggregation_window * events_per_s * concentration(population)
    return max(1.0, spec.aggregation_window / spec.window.mean)


DAYS_PER_MONTH = 365.25 / 12


def gb_month_usd_per_day(bytes_held: float, usd_per_gb_month: float) -> float:
    """US$ per day of holding ``bytes_held`` at a price per GB-month (10^9 bytes, a month of
    365.25 / 12 days)."""
    return bytes_held / 1e9 * usd_per_gb_month / DAYS_PER_MONTH


def mean_entities(population, start_s: float, end_s: float,
                  head_slots: int | None = None) -> float:
    """Entities existing over a window, on average (they arrive evenly: the mean of the two
    ends)."""
    return (population.count_at(start_s, head_slots) + population.count_at(end_s, head_slots)) / 2


def concentration(population) -> float:
    """``sum(p_e^2)`` over entities, ``p_e`` each one's share of requests: the chance that two
    requests are about the same entity (1/N when uniform; Zipf sums; a replayed log's own
    counts)."""
    counts = getattr(population, "request_counts", None)
    if counts is not None:
        shares = counts / counts.sum()
        return float(np.sum(shares ** 2))
    n = population.n_slots
    popularity = population.popularity
    if popularity.kind == "uniform":
        return 1.0 / n
    from sim.inputs.fit import ZipfMass
    s = popularity.exponent
    return ZipfMass(2 * s, n)(0, n) / ZipfMass(s, n)(0, n) ** 2


class OnlineServing:
    """Serving replicas: each request waits FIFO for a replica, which looks up its features,
    computes any request-time features and runs the model (all occupy the replica, as in a
    synchronous serving worker).

    With ``batching`` or ``autoscaling`` the queue is the event loop of
    :class:`~sim.engine.serving.BatchingPool`, which carries requests still waiting at a chunk's end
    into the next chunk; otherwise it is the Kiefer-Wolfowitz recursion of
    :class:`~sim.engine.serving.ReplicaPool`.
    """

    def __init__(self, serving: Serving, feature_lookup, end_s: float,
                 request_features=None):
        self.spec = serving
        self.feature_lookup = feature_lookup
        self.request_features = request_features
        self.end_s = end_s
        self.evented = serving.batching is not None or serving.autoscaling is not None
        slow = serving.slow_periods
        if self.evented:
            every = serving.autoscaling.every if serving.autoscaling else 0.0
            self.pool = BatchingPool(serving, eval_until_s=end_s + every)
        else:
            self.pool = ReplicaPool(serving.replicas, serving.timeout,
                                    host=slow is None or slow.scope == "host",
                                    after_idle=serving.after_idle)

    def start(self, world) -> None:
        """Draw the slow periods' paths (from the run's random streams), if there are any."""
        slow = self.spec.slow_periods
        if slow is not None:
            auto = self.spec.autoscaling
            paths = 1 if slow.scope == "host" else (auto.max if auto else self.spec.replicas)
            self.pool.slow = SlowPath(slow, paths, world.streams, start_s=0.0)
        if self.spec.autoscaling is not None:  # the start-up delays, from their own streams
            self.pool.use_streams(world.streams)

    @property
    def mean_occupancy_s(self) -> float:
        return self.spec.mean_occupancy_s(self.feature_lookup, self.request_features)

    def serve(self, t_s: np.ndarray, lookup: np.ndarray, work: np.ndarray):
        """(latency, queue_wait, timed_out, busy, service start, service time) for requests
        served online, given each one's feature lookup and work on the replica (inference and
        request-time features, stretched by any slow periods and multiplied by the
        ``after_idle`` slowdown)."""
        if self.pool.slow is not None or self.pool.after_idle is not None:
            wait, started, occupancy = self.pool.serve_split(t_s, lookup, work)
        else:
            occupancy = lookup + work
            wait, started = self.pool.serve(t_s, occupancy)
        timeout = np.inf if self.spec.timeout is None else float(self.spec.timeout)
        n = t_s.size
        latency, busy, start, service = np.empty(n), np.empty(n), np.empty(n), np.empty(n)
        timed_out = np.empty(n, dtype=np.bool_)
        if n:
            _decide(np.ascontiguousarray(t_s, dtype=np.float64),
                    np.ascontiguousarray(occupancy, dtype=np.float64), wait, started, timeout,
                    latency, timed_out, busy, start, service)
        return latency, wait, timed_out, busy, start, service

    def serve_evented(self, inputs: dict[str, np.ndarray], until_s: float, final: bool = False):
        """The requests decided by ``until_s`` (see :meth:`BatchingPool.serve`), with their
        ``latency_s``, ``timed_out`` and ``service_s`` (replica time of their batch)."""
        r = self.pool.serve(inputs, until_s, final)
        timeout = self.spec.timeout
        latency = r["wait_s"] + np.where(r["started"], r["occupancy_s"], 0.0)
        if timeout is None:
            timed_out = np.zeros(latency.size, bool)
        else:
            timed_out = ~r["started"] | (latency > timeout)
            latency = np.where(timed_out, timeout, latency)
        r.update(latency_s=latency, timed_out=timed_out,
                 service_s=np.where(r["started"], r["occupancy_s"], np.nan))
        return r

    # the autoscaler log's column of each kind of replica-seconds
    _KINDS = {"paid": "replica_s", "ready": "ready_replica_s", "asked": "asked_replica_s",
              "starting": "starting_replica_s"}

    def replica_seconds(self, start_s: float, end_s: float, ready: bool = False) -> float:
        """Replica-seconds in [start_s, end_s]: paid for (starting and the warm pool
        included), or ``ready``."""
        return float(self.bucket_replica_seconds(np.array([start_s, end_s]), ready)[0])

    def bucket_replica_seconds(self, edges_s: np.ndarray, ready: bool = False,
                               kind: str | None = None) -> np.ndarray:
        """Replica-seconds per time bucket between consecutive ``edges_s``: paid for, or
        ``ready``; or ``kind``: ``paid``, ``ready``, ``asked`` (asked for by the autoscaler,
        a scale-up still within its decision lag included) or ``starting`` (asked for, not yet
        serving)."""
        edges_s = np.asarray(edges_s, dtype=float)
        kind = kind or ("ready" if ready else "paid")
        if self.spec.autoscaling is None:
            return (0.0 if kind == "starting" else self.spec.replicas) * np.diff(edges_s)
        log = self.pool.log()
        column = log[self._KINDS[kind]]
        return np.diff(_accumulated(log["t_s"], column, self.spec.autoscaling.every, edges_s))

    def cost_usd_per_day(self, prices, start_s: float, end_s: float) -> float:
        return self.replica_seconds(start_s, end_s) / (end_s - start_s) * 24 * \
            self.spec.price_per_hour(prices)


@njit(cache=True, nogil=True)
def _decide(t_s, occupancy, wait, started, timeout, latency, timed_out, busy, start, service):
    """Per request served online: latency (the timeout for a request that gave up or would
    answer later), whether it timed out, the replica time it used, when and for how long."""
    for i in range(t_s.shape[0]):
        s = started[i]
        lat = wait[i] + occupancy[i]
        late = (not s) or lat > timeout
        timed_out[i] = late
        latency[i] = timeout if late else lat
        busy[i] = occupancy[i] if s else 0.0
        start[i] = t_s[i] + wait[i]
        service[i] = occupancy[i] if s else np.nan


def _accumulated(t_s: np.ndarray, values: np.ndarray, every_s: float,
                 x_s: np.ndarray) -> np.ndarray:
    """The sum of ``values`` up to each time in ``x_s``, each value spread evenly over its
    autoscaler interval ``[t - every, t]`` (the intervals follow one another)."""
    if t_s.size == 0:
        return np.zeros(x_s.shape)
    cum = np.r_[0.0, np.cumsum(values)]
    j = np.searchsorted(t_s, x_s, side="right")  # intervals wholly before x
    k = np.minimum(j, t_s.size - 1)
    part = np.clip((x_s - (t_s[k] - every_s)) / every_s, 0.0, 1.0)
    return cum[j] + np.where(j < t_s.size, values[k] * part, 0.0)
