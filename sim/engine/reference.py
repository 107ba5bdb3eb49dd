"""The reference engine: every request is its own SimPy process through the same model.

Replicas are a ``simpy.Resource``; a request that has not got a replica when its timeout expires
gives up (``request | timeout``); stores and feature pipelines are read as they stand when the
request arrives; lookups and inference are ``env.timeout`` calls. With slow periods
(``serving.slow_periods``) the replicas are known by number (idle ones in a
``simpy.PriorityStore`` by how long they have been free, or in the batcher's own books) and a
replica's work is walked through its speed path a segment at a time in simulated time, from
this engine's own copy of the path (the same draws as the fast path's). With
``serving.after_idle`` the replicas are known by number too, each remembering when it was last
free, and a request's (or a batch's) work is multiplied by the slowdown at the time its replica
stood idle before it (:func:`_after_idle_factor`, written apart from the fast kernels'
interpolation). It shares with the
fast path only what defines the model (the scenario, the random draws, the control-plane
processes, the quality curves) and the metrics code, so the fast path's kernels are checked
against an implementation written the obvious way. It keeps its own books too: which entities
read which job's predictions (wasted predictions) and how many replicas it ran when (serving
cost, replicas, utilisation), so those are cross-checked as well. It is also the yardstick for
speed.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import simpy

from sim.engine.architectures.edge import EdgeModel, MAX_MISSED_SYNCS, device_uniform_one
from sim.engine.architectures.kinds import BatchModel, HybridModel, OnlineModel
from sim.engine.freshness import FEATURE_TIME_SLACK_S
from sim.engine.training import BUCKET_MULTIPLIERS
from sim.results.metrics import Outcomes
from sim.engine.architectures.kinds import COMPONENTS
from sim.results.results import Results, collect
from sim.scenario import Scenario
from sim.engine.slow_periods import SlowPath


def simulate_reference(scenario: Scenario, *, replication: int = 0,
                       progress: Callable[[float], None] | None = None,
                       observe: Callable[[str, Outcomes], None] | None = None) -> Results:
    from sim.engine.run import Run

    run = Run(scenario, replication)
    env = run.env
    models = [_RequestModel(a, run, env) for a in run.architectures]
    state = {"pending": 0, "arrivals_done": False}
    all_done = env.event()

    def finish_chunk(buffers, chunk_end_s):
        for model, accumulator, outcome in zip(models, run.accumulators, buffers):
            model.record_use(outcome)
            out = outcome.outcomes()
            if observe is not None:
                observe(model.name, out)
            accumulator.add(out)
        if progress is not None:
            progress(chunk_end_s / run.end_s)

    def arrivals(env):
        for start_s, end_s in run.chunk_bounds():
            if env.now < start_s:
                yield _AfterOthers(env, start_s - env.now)
            chunk = run.source.chunk(start_s, end_s)
            chunk.draw_all()
            buffers = [_ChunkOutcomes(chunk) for _ in models]
            counter = {"left": chunk.size * len(models)}
            if chunk.size == 0:
                finish_chunk(buffers, end_s)
                continue
            for i in range(chunk.size):
                delay = chunk.t_s[i] - env.now
                if delay > 0:
                    yield _AfterOthers(env, delay)
                for model, buffer in zip(models, buffers):
                    state["pending"] += 1
                    env.process(request(model, chunk, i, buffer, counter, end_s, buffers))
        state["arrivals_done"] = True
        if state["pending"] == 0:
            all_done.succeed()

    def request(model, chunk, i, buffer, counter, end_s, buffers):
        yield from model.serve_one(env, chunk, i, buffer)
        state["pending"] -= 1
        counter["left"] -= 1
        if counter["left"] == 0:
            finish_chunk(buffers, end_s)
        if state["arrivals_done"] and state["pending"] == 0 and not all_done.triggered:
            all_done.succeed()

    env.process(arrivals(env))
    env.run(until=all_done)
    if env.now < run.end_s:  # the control plane to the end of the horizon, as the fast engine
        env.run(until=run.end_s)
    every = max((m.batcher.spec.autoscaling.every for m in models
                 if m.batcher is not None and m.batcher.spec.autoscaling), default=0.0)
    if every:  # the autoscalers' evaluations up to the end of the horizon and one beyond
        env.run(until=max(env.now, run.end_s) + 1.5 * every)
    return collect(scenario, [_OwnBooks(model) for model in models], run.accumulators,
                   replication=replication)


class _AfterOthers(simpy.events.Event):
    """A timeout that fires after every other event due at the same instant, so a request
    arriving exactly when the control plane changes state (a refresh completing at a round
    time, as happens with replayed logs) sees the new state, as the fast path's lookups do
    (a refresh visible at ``t`` is in force for a request at ``t``)."""

    def __init__(self, env: simpy.Environment, delay: float):
        super().__init__(env)
        self._ok = True
        self._value = None
        env.schedule(self, priority=simpy.core.NORMAL + 1, delay=delay)


class _ChunkOutcomes:
    """Per-request outcome arrays of one chunk for one architecture, filled request by request."""

    def __init__(self, chunk):
        n = chunk.size
        self.t_s = chunk.t_s
        self.slot = chunk.slot
        self.latency_s = np.zeros(n)
        self.queue_wait_s = np.zeros(n)
        self.fallback = np.zeros(n, bool)
        self.timed_out = np.zeros(n, bool)
        self.feature_age_s = np.full(n, np.nan)
        self.batch_age_s = np.full(n, np.nan)
        self.stream_age_s = np.full(n, np.nan)
        self.cold_start = np.zeros(n, bool)
        self.model_age_s = np.full(n, np.nan)
        self.quality = np.zeros(n)
        self.busy_s = np.zeros(n)
        self.service_start_s = chunk.t_s.copy()
        self.queued = np.zeros(n, bool)
        self.service_s = np.full(n, np.nan)
        self.job = np.full(n, -1, dtype=np.int64)
        self.expired = np.zeros(n, bool)
        self.answer = np.zeros(n, np.int8)
        self.network_s = np.zeros(n)
        self.device_s = np.zeros(n)

    def outcomes(self) -> Outcomes:
        return Outcomes(t_s=self.t_s, latency_s=self.latency_s, queue_wait_s=self.queue_wait_s,
                        fallback=self.fallback, timed_out=self.timed_out,
                        feature_age_s=self.feature_age_s, model_age_s=self.model_age_s,
                        quality=self.quality, busy_s=self.busy_s,
                        service_start_s=self.service_start_s, queued=self.queued,
                        service_s=self.service_s, batch_age_s=self.batch_age_s,
                        stream_age_s=self.stream_age_s, cold_start=self.cold_start,
                        expired=self.expired, answer=self.answer, network_s=self.network_s,
                        device_s=self.device_s)


def _network_time(network, slot: int, u: float) -> float:
    """One request's round trip (scenario.network): its user's region, by the hash that
    splits users in tests, and that region's rtt at ``u``."""
    if network is None:
        return 0.0
    parts = network.parts
    rtt = parts[-1][1]
    if len(parts) > 1:
        bucket = (float(slot) * BUCKET_MULTIPLIERS["region"] + 0.5) % 1.0
        edge = 0.0
        for share, region_rtt in parts:
            edge += share
            if bucket < edge:
                rtt = region_rtt
                break
    else:
        rtt = parts[0][1]
    return float(rtt.ppf(_one(u))[0])


def _feature_losses(spec, ages: dict, request: bool,
                    ttl: dict | None = None) -> tuple[float, float, float, float]:
    """(staleness, cold start, missing, expired) losses of one prediction whose architecture
    has the feature classes in ``ages`` (class -> age, NaN for an entity with none yet; a class
    older than its ``ttl`` has expired)."""
    staleness = cold = missing = expired = 0.0
    ttl = ttl or {}
    for c in ("batch", "stream"):
        if c not in ages:
            missing += spec.fresh - spec.without(c)
        elif math.isnan(ages[c]):
            cold += spec.fresh - spec.cold_start(c)
        elif ttl.get(c) is not None and ages[c] > ttl[c]:
            expired += spec.fresh - spec.cold_start(c)
        elif spec.curve(c) is not None:
            staleness += spec.fresh - _curve(spec.curve(c), spec.fresh, ages[c])
    if not request:
        missing += spec.fresh - spec.without("request")
    return staleness, cold, missing, expired


def _used(ages: dict, ttl: dict | None) -> dict:
    """The ages of the feature classes a prediction used: an expired class's age is NaN."""
    ttl = ttl or {}
    return {c: (math.nan if ttl.get(c) is not None and a > ttl[c] else a)
            for c, a in ages.items()}


def _newest_cutoff(t: float, ages: dict, ttl: dict | None = None) -> float:
    """The data time of the freshest features a prediction used (NaN if it had none)."""
    known = [a for a in _used(ages, ttl).values() if not math.isnan(a)]
    return t - min(known) if known else math.nan


def _quality(scenario: Scenario, t: float, ages: dict, request: bool, model_age: float,
             model_cutoff: float, ttl: dict | None = None, skew: float = 0.0) -> float:
    """Quality of one prediction, written out in scalar arithmetic (DESIGN.md's definition)."""
    spec = scenario.quality
    loss = sum(d.quality_drop * _drift_share(d, t, model_cutoff, _newest_cutoff(t, ages, ttl))
               for d in scenario.drift)
    loss += sum(_feature_losses(spec, ages, request, ttl)) + skew
    if spec.model_staleness is not None:
        loss += spec.fresh - _curve(spec.model_staleness, spec.fresh, model_age)
    return min(max(spec.fresh - loss, 0.0), spec.fresh)


def _drift_share(d, t: float, model_cutoff: float, feature_cutoff: float) -> float:
    """The share of a drift's ``quality_drop`` lost by one prediction (sim.scenario.Drift)."""

    def shift_since(data_time: float) -> float:
        if d.kind == "sudden":
            return 1.0 if data_time < d.at <= t else 0.0
        if d.kind == "gradual":
            def built_up(x):
                return min(max((x - d.at) / d.ramp, 0.0), 1.0)
            return max(0.0, built_up(t) - built_up(data_time))
        phase = max(t, d.at) - max(data_time, d.at)
        return (1.0 - math.cos(2.0 * math.pi * phase / d.period)) / 2.0

    by_model = shift_since(model_cutoff - d.recovery_data)
    if d.visible_in_features == 0 or math.isnan(feature_cutoff):
        return by_model
    by_features = shift_since(feature_cutoff + FEATURE_TIME_SLACK_S)
    return by_model - d.visible_in_features * (by_model - min(by_model, by_features))


def _add_losses(losses: dict, scenario: Scenario, t: float, ages: dict, request: bool,
                model_cutoff: float, ttl: dict | None = None, skew: float = 0.0) -> None:
    """One measured prediction's losses by cause, in scalar arithmetic (as ``_quality``)."""
    spec = scenario.quality
    losses["predictions"] += 1
    losses["skew"] += skew
    for key, loss in zip(("feature_staleness", "cold_start", "missing_features",
                          "expired_features"), _feature_losses(spec, ages, request, ttl)):
        losses[key] += loss
    if spec.model_staleness is not None:
        losses["model_staleness"] += spec.fresh - _curve(spec.model_staleness, spec.fresh,
                                                         t - model_cutoff)
    losses["drift"] += sum(d.quality_drop * _drift_share(d, t, model_cutoff,
                                                         _newest_cutoff(t, ages, ttl))
                           for d in scenario.drift)


def _curve(curve, fresh: float, age_s: float) -> float:
    if curve.exponential is not None:
        c = curve.exponential
        return c.floor + (fresh - c.floor) * 2.0 ** (-age_s / c.half_life)
    if curve.linear is not None:
        c = curve.linear
        return max(c.floor, fresh + c.per_day * age_s / 86400.0)
    points = curve.table
    if age_s <= points[0][0]:
        return points[0][1]
    for (a0, v0), (a1, v1) in zip(points, points[1:]):
        if age_s <= a1:
            return v0 + (v1 - v0) * (age_s - a0) / (a1 - a0)
    return points[-1][1]


def _in_force(timeline) -> float:
    """The data cut-off of the refresh in force now (NaN before any: no features yet)."""
    return timeline.rows[timeline.current]["cutoff_s"] if timeline.current >= 0 else math.nan


def _one(x: float) -> np.ndarray:
    return np.array([x], dtype=float)


class _RequestModel:
    """How one request flows through one architecture, step by step in simulated time."""

    def __init__(self, architecture, run, env: simpy.Environment):
        self.arch = architecture
        self.name = architecture.name
        self.scenario = run.scenario
        self.population = run.population
        self.lifecycle = run.models[architecture.name]
        self.model_deploys = self.lifecycle.deploys
        self.resource = self.batcher = self.numbered = None
        if isinstance(architecture, OnlineModel):
            spec = architecture.serving.spec
            speed = None
            if spec.slow_periods is not None:  # this engine's own copy of the paths
                capacity = spec.autoscaling.max if spec.autoscaling else spec.replicas
                speed = _Speed(spec.slow_periods, capacity, run.streams)
            if architecture.serving.evented:
                self.batcher = _Batcher(env, spec, speed, run.streams)
            elif speed is not None or spec.after_idle is not None:
                self.numbered = _NumberedReplicas(env, spec.replicas, speed, spec.after_idle)
            else:
                self.resource = simpy.Resource(env, capacity=spec.replicas)
        self.cloud = None
        if isinstance(architecture, EdgeModel) and architecture.cloud is not None:
            # the cloud path is an online architecture of its own; its replicas are this one's
            self.cloud = _RequestModel(architecture.cloud, run, env)
            self.resource, self.batcher, self.numbered = (self.cloud.resource,
                                                          self.cloud.batcher,
                                                          self.cloud.numbered)
        self.store = getattr(architecture, "store", None)
        self.used: dict[int, set] = {}
        spec = architecture.spec
        self.chain = list(spec.fallback)
        pipelines = getattr(spec, "pipelines", None)
        self.skew = pipelines.mean_loss if pipelines is not None else 0.0
        self.variant = spec.variant_loss * run.scenario.quality.fresh
        features = getattr(architecture, "features", None)
        stream = getattr(architecture, "stream", None)
        self.ttl = {"batch": features.spec.ttl if features is not None else None,
                    "stream": stream.spec.ttl if stream is not None else None}

    # -- the request paths --------------------------------------------------------------------
    def serve_one(self, env, chunk, i, out: _ChunkOutcomes):
        arch = self.arch
        if isinstance(arch, HybridModel):
            if chunk.slot[i] < arch.head_slots:
                yield from self._from_store(env, chunk, i, out)
            else:
                yield from self._online(env, chunk, i, out)
        elif isinstance(arch, BatchModel):
            yield from self._from_store(env, chunk, i, out)
        elif isinstance(arch, EdgeModel):
            on_device = yield from self._edge(env, chunk, i, out)
            if on_device:
                return
        else:
            yield from self._online(env, chunk, i, out)
        # the answer still travels back to the client: latency, not replica time
        network = _network_time(self.scenario.network, chunk.slot[i], chunk.u_network[i])
        out.network_s[i] = network
        out.latency_s[i] += network

    def _from_store(self, env, chunk, i, out):
        t = chunk.t_s[i]
        jobs = self.store.jobs
        job = jobs.current
        row = jobs.rows[job] if job >= 0 else None
        has = row is not None and \
            self.population.created_at_s(np.array([chunk.slot[i]]))[0] <= row["cutoff_s"]
        lookup = float(self.store.spec.lookup.ppf(_one(chunk.u_lookup[i]))[0])
        timeout = self.store.spec.timeout
        timed_out = timeout is not None and lookup > timeout
        latency = timeout if timed_out else lookup
        yield env.timeout(latency)
        ttl = self.store.spec.ttl
        expired = has and not timed_out and ttl is not None and t - row["cutoff_s"] > ttl
        fallback = (not has) or timed_out or expired
        out.latency_s[i] = latency
        out.timed_out[i] = timed_out
        out.fallback[i] = fallback
        out.expired[i] = expired
        out.cold_start[i] = not has and not timed_out
        if fallback:
            if self._fall_back(out, i, stale_ok=expired) != "stale":
                return
            # the last stored prediction, however old: scored as it is, counted as a fallback
            self._score(out, i, t, {"batch": t - row["cutoff_s"]}, self._model_of(
                row["cutoff_s"], chunk.slot[i], row["model_cutoff_s"]), use_ttl=False)
            return
        out.job[i] = job
        self._score(out, i, t, {"batch": t - row["cutoff_s"]}, self._model_of(
            row["cutoff_s"], chunk.slot[i], row["model_cutoff_s"]), use_ttl=False)

    def _edge(self, env, chunk, i, out):
        """A request on the user's device (True), or sent to the cloud path (False)."""
        arch = self.arch
        spec = arch.spec
        t = chunk.t_s[i]
        slot = int(chunk.slot[i])
        latency = float(spec.device_time.ppf(_one(chunk.u_device[i]))[0])
        if spec.request_features is not None:
            latency += float(spec.request_features.compute.ppf(
                _one(chunk.u_request_features[i]))[0])
        created = float(self.population.created_at_s(np.array([slot]))[0])
        every, offline = spec.sync.every, spec.sync.offline
        phase = ((float(slot) * BUCKET_MULTIPLIERS["sync"] + 0.5) % 1.0) * every
        k = math.floor((t - phase) / every)
        last = math.nan
        for _ in range(MAX_MISSED_SYNCS):  # back to the last sync the device made
            if offline == 0 or device_uniform_one(slot, k, arch.sync_salt) >= offline:
                last = phase + k * every
                break
            k -= 1
        age = t - last if last >= created else math.nan
        c = spec.cloud
        if c is not None and ((c.slower_than is not None and latency > c.slower_than) or
                              (c.cold and math.isnan(age))):
            yield from self.cloud._online(env, chunk, i, out)
            return False
        cutoff = math.nan
        for row in self.model_deploys.rows:  # the newest model (by cut-off) the device has
            if row["visible_at_s"] > t:
                break
            delay = 0.0
            if row["version"] != 0 and not spec.rollout.is_zero:
                u = device_uniform_one(slot, int(row["version"]), arch.rollout_salt)
                delay = float(spec.rollout.ppf(_one(u))[0])
            if row["visible_at_s"] + delay <= t and not row["cutoff_s"] <= cutoff:
                cutoff = row["cutoff_s"]
        yield env.timeout(latency)  # the device's own time: nothing shared waits on it
        out.latency_s[i] = latency
        out.device_s[i] = latency
        self._score(out, i, t, {"batch": age}, cutoff)
        return True

    def _fall_back(self, out, i, stale_ok: bool) -> str:
        """Answer request ``i`` by the first step of the fallback chain that can; the step."""
        for step in self.chain:
            if step == "stale" and not stale_ok:
                continue
            out.answer[i] = {"stale": 1, "default": 2, "error": 3}[step]
            out.quality[i] = {"stale": math.nan, "default": self.scenario.quality.fallback,
                              "error": 0.0}[step]
            return step
        raise AssertionError("a fallback chain ends with default or error")

    def _online(self, env, chunk, i, out):
        arch = self.arch
        t = chunk.t_s[i]
        created = float(self.population.created_at_s(np.array([chunk.slot[i]]))[0])
        ages = {}
        if arch.features is not None:
            refreshes = arch.features.refreshes
            cutoff = _in_force(refreshes)
            ages["batch"] = math.nan if created > cutoff else t - cutoff
        if arch.stream is not None:
            stream = arch.stream
            if stream.spec.window.is_zero:
                lag = float(stream.spec.lag.ppf(_one(chunk.u_stream_lag[i]))[0])
                cutoff = float(stream.event_cutoff_s(np.array([t]), np.array([lag]))[0])
            else:
                cutoff = _in_force(stream.windows)
            ages["stream"] = math.nan if created > cutoff else t - cutoff
        compute = 0.0
        if arch.request_features is not None:
            compute = float(arch.request_features.compute.ppf(
                _one(chunk.u_request_features[i]))[0])
        if arch.serving.spec.time_per_size > 0:  # work that grows with the request's size
            compute += arch.serving.spec.time_per_size * float(chunk.request_size[i])
        model_cutoff = self._model_of(
            t, chunk.slot[i], self.model_deploys.rows[self.model_deploys.current]["cutoff_s"])
        if self.batcher is not None:
            yield from self._batched(env, chunk, i, out, ages, model_cutoff, compute)
            return
        if self.numbered is not None:
            yield from self._slowed(env, chunk, i, out, ages, model_cutoff, compute)
            return
        occupancy = (float(arch.spec.feature_lookup.ppf(_one(chunk.u_feature_lookup[i]))[0]) +
                     float(arch.serving.spec.service_time.ppf(_one(chunk.u_service[i]))[0]) +
                     compute)
        timeout = arch.serving.spec.timeout
        out.queued[i] = True
        with self.resource.request() as slot:
            if timeout is None:
                yield slot
                granted = True
            else:
                fired = yield slot | env.timeout(timeout)
                granted = slot in fired
            if granted:
                wait = env.now - t
                out.service_start_s[i] = env.now
                out.busy_s[i] = occupancy
                out.service_s[i] = occupancy
                yield env.timeout(occupancy)
        self._answered(out, i, t, ages, model_cutoff, timeout,
                       (wait, occupancy) if granted else None)

    def _slowed(self, env, chunk, i, out, ages, model_cutoff, compute):
        """A request served one at a time by numbered replicas whose speed varies (slow
        periods) or whose work depends on their idle time before it (after_idle): it takes the
        replica free longest, looks up its features, then works (its work multiplied by the
        after_idle slowdown at start minus the time the replica became free) through the
        replica's speed path segment by segment, or for as long as the work takes."""
        arch = self.arch
        t = chunk.t_s[i]
        lookup = float(arch.spec.feature_lookup.ppf(_one(chunk.u_feature_lookup[i]))[0])
        work = float(arch.serving.spec.service_time.ppf(_one(chunk.u_service[i]))[0]) + compute
        timeout = arch.serving.spec.timeout
        replicas = self.numbered
        out.queued[i] = True
        get = replicas.store.get()
        if timeout is None:
            yield get
            granted = True
        else:
            yield get | env.timeout(timeout)
            # a request whose wait reaches its timeout gives up, even if a replica frees up
            # at that very instant (it then goes to the next in line)
            granted = get.triggered and env.now - t < timeout
            if not granted:
                if get.triggered:
                    replicas.store.put(get.value)
                else:
                    get.cancel()
        if granted:
            free_since, number = get.value
            start = env.now
            wait = start - t
            if replicas.after_idle is not None:
                work *= _after_idle_factor(replicas.after_idle, start - free_since)
            if replicas.speed is None:
                occupancy = lookup + work
                yield env.timeout(occupancy)
                finish = start + occupancy
            else:
                if lookup > 0:
                    yield env.timeout(lookup)
                finish = yield from replicas.speed.work(env, number, start + lookup, work)
                occupancy = finish - start
            replicas.store.put((env.now, number))
            out.service_start_s[i] = start
            out.busy_s[i] = occupancy
            out.service_s[i] = occupancy
        self._answered(out, i, t, ages, model_cutoff, timeout,
                       (wait, occupancy) if granted else None)

    def _answered(self, out, i, t, ages, model_cutoff, timeout, served) -> None:
        """The outcome of a request served one at a time: ``served`` is (queue wait, replica
        time), or None when it gave up waiting at the timeout."""
        if served is not None:
            wait, occupancy = served
            out.queue_wait_s[i] = wait
            latency = wait + occupancy
            timed_out = timeout is not None and latency > timeout
        else:
            out.queue_wait_s[i] = timeout
            timed_out = True
        out.latency_s[i] = timeout if timed_out else latency
        out.timed_out[i] = timed_out
        out.fallback[i] = timed_out
        if timed_out:
            self._fall_back(out, i, stale_ok=False)
            return
        self._score(out, i, t, ages, model_cutoff)

    def _batched(self, env, chunk, i, out, ages, model_cutoff, compute):
        """A request through the batching queue: join it, wait for a batch or give up."""
        arch = self.arch
        serving = arch.serving.spec
        t = chunk.t_s[i]
        lookup = float(arch.spec.feature_lookup.ppf(_one(chunk.u_feature_lookup[i]))[0])
        if serving.batching is None:
            item = float(serving.service_time.ppf(_one(chunk.u_service[i]))[0])
            fixed = 0.0
        else:
            item = float(serving.batching.per_item.ppf(_one(chunk.u_service[i]))[0])
            fixed = float(serving.batching.fixed.ppf(_one(chunk.u_batch_fixed[i]))[0])
        item += compute
        request = _Waiting(t, lookup, item, fixed, env.event())
        if serving.batching is not None and serving.batching.batch_time is not None:
            u = _one(chunk.u_batch_fixed[i])  # this request's draw, should it lead a batch
            request.measured_s = np.array([float(d.ppf(u)[0])
                                           for d in serving.batching.batch_time.values()])
        out.queued[i] = True
        self.batcher.join(request)
        timeout = serving.timeout
        if timeout is None:
            yield request.dispatched
        else:
            yield request.dispatched | env.timeout(timeout)
        if not request.dispatched.triggered:  # gave up waiting
            self.batcher.leave(request)
            out.queue_wait_s[i] = timeout
            out.latency_s[i] = timeout
            out.timed_out[i] = out.fallback[i] = True
            out.service_start_s[i] = env.now
            self._fall_back(out, i, stale_ok=False)
            return
        start, occupancy, first = request.dispatched.value
        if isinstance(occupancy, simpy.Event):  # slow periods: known when the batch is done
            occupancy = yield occupancy
        else:
            yield env.timeout(occupancy)
        wait = start - t
        out.queue_wait_s[i] = wait
        out.service_start_s[i] = start
        out.service_s[i] = occupancy
        out.busy_s[i] = occupancy if first else 0.0
        latency = wait + occupancy
        timed_out = timeout is not None and latency > timeout
        out.latency_s[i] = timeout if timed_out else latency
        out.timed_out[i] = out.fallback[i] = timed_out
        if timed_out:
            self._fall_back(out, i, stale_ok=False)
            return
        self._score(out, i, t, ages, model_cutoff)

    def _model_of(self, at: float, slot: int, cutoff: float) -> float:
        """The data cut-off of the model that served entity ``slot`` for something made at
        ``at``: a candidate under test when the user's bucket is within the test's share
        then."""
        bucket = (float(slot) * BUCKET_MULTIPLIERS["test"] + 0.5) % 1.0
        for test in self.lifecycle.tests:
            if test.start_s <= at < test.end_s:
                share = 0.0
                for begin, step_share in test.steps:
                    if at >= begin:
                        share = step_share
                if bucket < share:
                    cutoff = test.cutoff_s
        return cutoff

    def _score(self, out, i, t, ages, model_cutoff, use_ttl: bool = True):
        """Quality, ages and losses of a prediction made with features of ``ages`` (a stored
        prediction's: ``use_ttl`` False, its store's ttl was applied already)."""
        stored = not use_ttl
        request = getattr(self.arch, "request_features", None) is not None and not stored
        ttl = self.ttl if use_ttl else None
        out.quality[i] = _quality(self.scenario, t, ages, request, t - model_cutoff,
                                  model_cutoff, ttl, self.skew + self.variant)
        trained = self.lifecycle.loss_by_cutoff.get(model_cutoff, 0.0)
        if trained:  # how the model was trained, after the clip (a lift may pass fresh)
            out.quality[i] = max(out.quality[i] - trained, 0.0)
        used = _used(ages, ttl)
        known = [a for a in used.values() if not math.isnan(a)]
        out.feature_age_s[i] = max(known) if known else math.nan
        out.batch_age_s[i] = used.get("batch", math.nan)
        out.stream_age_s[i] = used.get("stream", math.nan)
        out.cold_start[i] = any(math.isnan(a) for a in ages.values()) and not out.fallback[i]
        out.expired[i] = out.expired[i] or any(math.isnan(used[c]) and not math.isnan(a)
                                               for c, a in ages.items())
        out.model_age_s[i] = t - model_cutoff
        if t >= self.scenario.warmup:
            _add_losses(self.arch.losses, self.scenario, t, ages, request, model_cutoff, ttl,
                        self.skew)
            self.arch.losses["model_training"] += trained
            self.arch.losses["model_variant"] += self.variant

    # -- wasted predictions: which entities read which job's predictions ------------------------
    def record_use(self, out: _ChunkOutcomes) -> None:
        for job, slot in zip(out.job[out.job >= 0], out.slot[out.job >= 0]):
            self.used.setdefault(int(job), set()).add(int(slot))

    def replica_steps(self) -> list[tuple[float, int, int, int, int]]:
        """(time, paid, ready, asked for, starting replicas) from each time on, as this engine
        ran them."""
        if self.batcher is not None:
            return self.batcher.steps
        if self.numbered is not None:
            c = self.numbered.replicas
        else:
            c = self.resource.capacity
        return [(-math.inf, c, c, c, 0)]


class _OwnBooks:
    """One architecture as the reference engine accounts for it, so that the two engines
    cross-check each other: wasted predictions from the entities this engine saw read each
    job, and serving replica-seconds from the replica counts its own batcher and autoscaler
    kept. The control plane (jobs, schedules) and prices are shared; everything else is the
    architecture's own."""

    def __init__(self, model: _RequestModel):
        self._model = model
        self._arch = model.arch
        self._steps = model.replica_steps() \
            if (model.batcher or model.resource or model.numbered) else None

    def __getattr__(self, name):
        return getattr(self._arch, name)

    def wasted(self, start_s: float, end_s: float) -> tuple[int, int]:
        """(scored, unused) over the jobs replaced within the window: a job is replaced when
        a job with a newer data cut-off becomes visible (at once, if one already is), and its
        unused predictions are those of entities that never read it."""
        if self._model.store is None:
            return 0, 0
        rows = self._model.store.jobs.rows
        scored = unused = 0
        for i, row in enumerate(rows):
            if row["visible_at_s"] < 0:
                continue  # in force before requests began: its use was not simulated
            newer = [r["visible_at_s"] for r in rows if r["cutoff_s"] > row["cutoff_s"]]
            if not newer:
                continue  # still in use at the end
            replaced_at = max(row["visible_at_s"], min(newer))
            if start_s < replaced_at <= end_s:
                scored += int(row["scored"])
                unused += int(row["scored"]) - len(self._model.used.get(i, ()))
        return scored, unused

    def cost_usd_per_day(self, start_s: float, end_s: float) -> dict[str, float]:
        costs = self._arch.cost_usd_per_day(start_s, end_s)
        if self._steps is not None:
            replicas = _OwnReplicas(self._arch.serving.spec, self._steps)
            paid_s = replicas.bucket_replica_seconds(np.array([start_s, end_s]))[0]
            costs["serving"] = paid_s / (end_s - start_s) * 24 * \
                self._arch.serving.spec.price_per_hour(self._arch.scenario.costs)
            costs["total"] = sum(costs[c] for c in COMPONENTS)
        return costs

    def serving_stats(self):
        stats = self._arch.serving_stats()
        if stats is None:
            return None
        replicas = _OwnReplicas(self._arch.serving.spec, self._steps)
        start_s, end_s = self._arch.scenario.warmup, self._arch.scenario.end_s
        ready_s = replicas.bucket_replica_seconds(np.array([start_s, end_s]), ready=True)[0]
        return {**stats, "replicas": ready_s / (end_s - start_s), "serving": replicas}


class _OwnReplicas:
    """The serving replicas the reference engine ran: a step function of (paid, ready, asked
    for, starting)."""

    KINDS = ("paid", "ready", "asked", "starting")

    def __init__(self, spec, steps: list[tuple[float, int, int, int, int]]):
        self.spec = spec
        self.steps = steps

    def bucket_replica_seconds(self, edges_s: np.ndarray, ready: bool = False,
                               kind: str | None = None) -> np.ndarray:
        """Replica-seconds (paid, or ``ready``; or ``kind``: paid, ready, asked or starting)
        between consecutive ``edges_s``."""
        k = 1 + self.KINDS.index(kind or ("ready" if ready else "paid"))
        ends = [t for t, *_ in self.steps[1:]] + [math.inf]
        edges = np.asarray(edges_s, dtype=float)
        return np.array([sum(step[k] * max(0.0, min(end, b) - max(step[0], a))
                             for step, end in zip(self.steps, ends))
                         for a, b in zip(edges[:-1], edges[1:])])


class _Speed:
    """The replicas' speed over time with slow periods: this engine's own copy of the paths
    (drawn from the run's streams as the fast engine's are, so they are the same), read
    segment by segment while simulated time passes."""

    def __init__(self, spec, capacity: int, streams):
        self.host = spec.scope == "host"
        self.paths = SlowPath(spec, 1 if self.host else capacity, streams, start_s=0.0)

    def work(self, env: simpy.Environment, number: int, start_s: float, work_s: float):
        """Process: ``work_s`` of work on replica ``number`` from ``start_s`` (about now): at
        each segment's slowdown in turn, waiting to the segment's end when the work outlasts it.
        Returns when the work is done."""
        p = 0 if self.host else number
        t, _, s = self.paths.segments(p)
        while t[-1] <= start_s:  # the segment holding start_s is not drawn yet
            self.paths.draw_block(p)
            t, _, s = self.paths.segments(p)
        x = max(start_s, float(t[0]))
        k = int(np.searchsorted(t, x, side="right")) - 1  # the segment holding x
        left = work_s
        while True:
            while k + 1 >= t.size:  # the segment's end is not drawn yet
                self.paths.draw_block(p)
                t, _, s = self.paths.segments(p)
            end, slowdown = float(t[k + 1]), float(s[k])
            room = (end - x) / slowdown  # the work this segment has room for
            if left <= room:
                finish = x + left * slowdown
                break
            left -= room
            yield env.timeout(max(end - env.now, 0.0))
            x, k = end, k + 1
        yield env.timeout(max(finish - env.now, 0.0))
        return finish


def _after_idle_factor(spec, idle_s: float) -> float:
    """The ``serving.after_idle`` slowdown after ``idle_s`` seconds of idling (``inf``: never
    served), from the points as written: the first below the first idle time, the last from
    the last on, a straight line between the two points around it otherwise."""
    points = list(zip(spec.idle, spec.slowdown))
    if idle_s <= points[0][0]:
        return points[0][1]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if idle_s < x1:
            return y0 + (y1 - y0) * (idle_s - x0) / (x1 - x0)
    return points[-1][1]


class _NumberedReplicas:
    """Replicas served one request at a time, each known by its number so that it meets its
    own slow periods (``speed``) and its own idle time (``after_idle``): a store of the idle
    ones as (free since, number), so that a request takes the one free longest (the lower
    number on a tie). With ``after_idle`` they start as never having served (free since
    ``-inf``); else since time 0, when requests start."""

    def __init__(self, env: simpy.Environment, replicas: int, speed: _Speed | None,
                 after_idle=None):
        self.replicas = replicas
        self.speed = speed
        self.after_idle = after_idle
        self.store = simpy.PriorityStore(env)
        since = -math.inf if after_idle is not None else 0.0
        for number in range(replicas):
            self.store.put((since, number))


class _Waiting:
    """A request in the batching queue; ``dispatched`` fires with (start, occupancy, first),
    where with slow periods occupancy is an event that fires with it when the batch is done."""

    measured_s = None  # with batching.batch_time: the time at each measured size, as drawn

    def __init__(self, t_s, lookup_s, item_s, fixed_s, dispatched):
        self.t_s, self.lookup_s, self.item_s, self.fixed_s = t_s, lookup_s, item_s, fixed_s
        self.dispatched = dispatched


class _Later(simpy.events.Event):
    """An event at ``delay`` that fires after every other event due then with a lower
    ``rank``: arrivals (rank 1, see _AfterOthers) and give-ups come before dispatches (2),
    which come before an autoscaler decision taking effect (3), which comes before autoscaler
    evaluations (4)."""

    def __init__(self, env: simpy.Environment, delay: float, rank: int):
        super().__init__(env)
        self._ok = True
        self._value = None
        env.schedule(self, priority=simpy.core.NORMAL + rank, delay=delay)


class _Batcher:
    """Dynamic batching and autoscaling written the obvious way: a list of waiting requests,
    a list of replicas, a dispatcher process and an autoscaler process.

    Each replica is idle, busy until a time, or warming up until a time. The dispatcher sends
    a batch whenever a replica is idle and ``max_batch`` requests wait or the oldest has waited
    ``max_wait``. The autoscaler integrates busy and ready replicas and the queue
    length over time as they change, and decides as :func:`sim.engine.serving._evaluate` describes;
    a decision with a lag is a process that acts when the lag has passed, and the warm pool is
    a count of loaded replicas, each taken one replaced by a process that loads another. The
    delays are drawn one at a time, in the order decisions are made and replicas asked for,
    from this engine's own copy of the streams :class:`sim.engine.serving.StartupDraws` draws from.
    With slow periods (``speed``) the replicas are also known by number: a batch goes to the
    idle replica free longest (the lower number on a tie), whose speed path stretches the
    batch's work; the autoscaler removes the idle replicas free longest and gives a new replica
    the number given back last (else the lowest never used).
    """

    def __init__(self, env: simpy.Environment, serving, speed: _Speed | None = None,
                 streams=None):
        self.env = env
        self.spec = serving
        self.speed = speed
        self.after_idle = serving.after_idle
        # replicas by number, so each meets its own slow periods and its own idle time
        self.numbered = speed is not None or self.after_idle is not None
        if self.numbered:
            capacity = serving.autoscaling.max if serving.autoscaling else serving.replicas
            self.idle_since = {number: 0.0 for number in range(serving.replicas)}
            # when each replica that has served was last free (after_idle; absent: never)
            self.last_free: dict[int, float] = {}
            # the numbers of no replica: a new one takes the last (the one given back most
            # recently, else the lowest never used)
            self.unused = list(range(capacity - 1, serving.replicas - 1, -1))
        batching = serving.batching
        self.max_batch = batching.max_batch if batching else 1
        self.max_wait = batching.max_wait if batching else 0.0
        self.queue: list[_Waiting] = []
        self.idle = serving.replicas   # ready and idle
        self.busy = 0                  # ready and serving a batch
        self.warming = 0
        self.wake = env.event()
        # areas under the curves since the last evaluation
        self.last_s = env.now
        self.area = dict(busy=0.0, ready=0.0, queue=0.0)
        auto = serving.autoscaling
        self.pool = auto.warm_pool if auto else 0  # the warm pool, all paid for
        self.pool_ready = self.pool                # of which loaded: pre-warmed at the start
        self.pending_up = 0   # replicas asked for by a decision that has not taken effect
        self.deciding = False  # a decision is waiting to take effect
        # (time, paid, ready, asked for, starting) from each change on: the replicas this
        # engine ran, for cost and the time series
        self.steps: list[tuple[float, int, int, int, int]] = [
            (env.now, serving.replicas + self.pool, serving.replicas, serving.replicas, 0)]
        self.last_scale_s = -np.inf
        env.process(self._dispatcher())
        if auto is not None:
            self.lag_rng = streams.fresh("autoscaling/decision_lag")
            self.startup_rng = streams.fresh("autoscaling/startup")
            env.process(self._autoscaler(auto))

    def _advance(self) -> None:
        dt = self.env.now - self.last_s
        if dt > 0:
            self.area["busy"] += self.busy * dt
            self.area["ready"] += (self.busy + self.idle) * dt
            self.area["queue"] += len(self.queue) * dt
        self.last_s = self.env.now

    def _poke(self) -> None:
        if not self.wake.triggered:
            self.wake.succeed()

    def join(self, request: _Waiting) -> None:
        self._advance()
        self.queue.append(request)
        self._poke()

    def leave(self, request: _Waiting) -> None:
        self._advance()
        self.queue.remove(request)
        self._poke()

    def _dispatcher(self):
        env = self.env
        while True:
            if not self.queue or self.idle == 0:
                self.wake = env.event()
                yield self.wake
                continue
            linger_end = self.queue[0].t_s + self.max_wait
            if len(self.queue) < self.max_batch and env.now < linger_end:
                self.wake = env.event()
                yield self.wake | _Later(env, linger_end - env.now, 2)
                continue
            yield _Later(env, 0.0, 2)  # let arrivals and give-ups at this instant happen first
            if not self.queue or self.idle == 0:
                continue
            if len(self.queue) < self.max_batch and env.now < self.queue[0].t_s + self.max_wait:
                continue
            self._advance()
            batch = self.queue[:self.max_batch]
            del self.queue[:self.max_batch]
            number = self._take_idle() if self.numbered else None
            lookup, own = max(r.lookup_s for r in batch), self._batch_s(batch)
            items = sum(r.item_s for r in batch)
            work = own + items
            occupancy = lookup + own + items
            if self.after_idle is not None:  # the idle time of the replica taking the batch
                work *= _after_idle_factor(self.after_idle,
                                           env.now - self.last_free.get(number, -math.inf))
                occupancy = lookup + work
            self.idle -= 1
            self.busy += 1
            if self.speed is not None:
                done = env.event()
                for k, request in enumerate(batch):
                    request.dispatched.succeed((env.now, done, k == 0))
                env.process(self._slowed_batch(batch, number, done, work))
                continue
            for k, request in enumerate(batch):
                request.dispatched.succeed((env.now, occupancy, k == 0))
            env.process(self._idle_after(occupancy, "busy", number))

    def _batch_s(self, batch: list[_Waiting]) -> float:
        """The batch's own time: its first request's ``fixed`` draw, or with measured batch
        times the first request's draws at the measured sizes, read at the batch's size:
        straight lines between sizes, flat below the smallest, the last line extended beyond
        the largest (never below it)."""
        first = batch[0]
        if first.measured_s is None:
            return first.fixed_s
        sizes = self.spec.batching.table_sizes
        row, k = first.measured_s, len(batch)
        if sizes.size > 1 and k > sizes[-1]:
            slope = (row[-1] - row[-2]) / (sizes[-1] - sizes[-2])
            return float(max(row[-1], row[-1] + slope * (k - sizes[-1])))
        return float(np.interp(k, sizes, row))

    def _take_idle(self) -> int:
        """The number of the idle replica free longest (the lower number on a tie), now
        taken."""
        number = min(self.idle_since, key=lambda n: (self.idle_since[n], n))
        del self.idle_since[number]
        return number

    def _slowed_batch(self, batch: list[_Waiting], number: int, done: simpy.Event,
                      work: float):
        """Replica ``number`` serves ``batch`` with slow periods: the lookups (not slowed), then
        the batch's ``work`` through the replica's speed path; ``done`` fires with the time it
        held the replica."""
        start = self.env.now
        lookup = max(r.lookup_s for r in batch)
        if lookup > 0:
            yield self.env.timeout(lookup)
        finish = yield from self.speed.work(self.env, number, start + lookup, work)
        self._advance()
        self.busy -= 1
        self.idle += 1
        self.idle_since[number] = self.env.now
        self.last_free[number] = self.env.now
        self._poke()
        done.succeed(finish - start)

    def _idle_after(self, delay: float, was: str, number: int | None = None):
        """A replica that is ``was`` (busy with a batch, or warming up) is idle ``delay`` later."""
        ready_s = self.env.now + delay
        yield self.env.timeout(delay)
        self._advance()
        setattr(self, was, getattr(self, was) - 1)
        self.idle += 1
        if number is not None:
            self.idle_since[number] = ready_s
            if was == "busy":
                self.last_free[number] = ready_s
        if was == "warming":
            self._step()
        self._poke()

    def _step(self) -> None:
        running = self.idle + self.busy + self.warming
        self.steps.append((self.env.now, running + self.pool, self.idle + self.busy,
                           running + self.pending_up, self.warming))

    def _lag(self, auto) -> float:
        """The next decision lag."""
        return float(auto.decision_lag.ppf(_one(self.lag_rng.random()))[0])

    def _startup(self, auto) -> float:
        """The next replica's start-up: node start, then model load (two draws)."""
        first, second = auto.startup
        node = float(first.ppf(_one(self.startup_rng.random()))[0])
        return node + float(second.ppf(_one(self.startup_rng.random()))[0])

    def _autoscaler(self, auto):
        env = self.env
        if env.now < 0:  # requests, and the autoscaler, start at time 0
            yield env.timeout(-env.now)
        self._advance()
        self.area = dict.fromkeys(self.area, 0.0)
        while True:
            yield _Later(env, auto.every, 4)
            self._advance()
            t = env.now
            a = self.area
            util = a["busy"] / a["ready"] if a["ready"] > 0 else 0.0
            total = self.idle + self.busy + self.warming
            ready = self.idle + self.busy
            desired = total
            if ready > 0:
                if auto.target_utilization is not None:
                    ratio = util / auto.target_utilization
                else:
                    ratio = a["queue"] / auto.every / ready / auto.target_queue
                if abs(ratio - 1.0) > auto.tolerance:
                    desired = math.ceil(ready * ratio - 1e-9)
            desired = max(auto.min, min(auto.max, desired))
            if not self.deciding and (desired > total or (
                    desired < total and self.warming == 0 and
                    t - self.last_scale_s >= auto.cooldown)):
                lag = self._lag(auto)
                if t + lag > t:
                    self.deciding = True
                    self.pending_up = max(desired - total, 0)
                    env.process(self._take_effect(auto, lag, desired))
                else:
                    self._act(auto, desired)
            self._step()
            self.area = dict.fromkeys(self.area, 0.0)

    def _take_effect(self, auto, lag: float, target: int):
        """A decision taking effect ``lag`` after it was made."""
        yield _Later(self.env, lag, 3)
        self._advance()
        self._act(auto, target)
        self.deciding = False
        self.pending_up = 0
        self._step()

    def _act(self, auto, target: int) -> None:
        """Go to ``target`` replicas now: up with loaded warm-pool replicas first (serving at
        once, each replaced in the pool by one that starts), then new ones that start; down by
        the idle replicas (free longest first)."""
        env = self.env
        t = env.now
        total = self.idle + self.busy + self.warming
        if target > total:
            for _ in range(target - total):
                delay = self._startup(auto)
                number = self.unused.pop() if self.numbered else None
                if number is not None:
                    self.last_free.pop(number, None)  # a new replica has never served
                if self.pool_ready > 0:
                    self.pool_ready -= 1
                    env.process(self._refill(delay))
                    ready_s = t
                else:
                    ready_s = t + delay
                if ready_s > t:
                    self.warming += 1
                    env.process(self._idle_after(delay, "warming", number))
                else:
                    self.idle += 1
                    if number is not None:
                        self.idle_since[number] = t
            self.last_scale_s = t
            self._poke()
        elif target < total:
            removed = min(total - target, self.idle)
            self.idle -= removed
            if self.numbered:  # the idle replicas free longest go
                for _ in range(removed):
                    self.unused.append(self._take_idle())
            if removed:
                self.last_scale_s = t

    def _refill(self, delay: float):
        """A warm-pool replica that replaces one taken: loaded ``delay`` later."""
        yield self.env.timeout(delay)
        self.pool_ready += 1
