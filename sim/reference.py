"""The reference engine: every request is its own SimPy process through the same model.

Replicas are a ``simpy.Resource``; a request that has not got a replica when its timeout expires
gives up (``request | timeout``); stores and feature pipelines are read as they stand when the
request arrives; lookups and inference are ``env.timeout`` calls. It shares with the fast path
only what defines the model (the scenario, the random draws, the control-plane processes, the
quality curves) and the metrics code, so the fast path's kernels are checked against an
implementation written the obvious way. It is also the yardstick for speed.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import simpy

from sim.architectures.kinds import BatchModel, HybridModel, OnlineModel
from sim.metrics import Outcomes
from sim.results import Results
from sim.scenario import Scenario


def simulate_reference(scenario: Scenario, *, replication: int = 0,
                       progress: Callable[[float], None] | None = None,
                       observe: Callable[[str, Outcomes], None] | None = None) -> Results:
    from sim.engine import Run

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
    for model in models:
        model.finish()
    return run.results()


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
        self.model_age_s = np.full(n, np.nan)
        self.quality = np.zeros(n)
        self.busy_s = np.zeros(n)
        self.service_start_s = chunk.t_s.copy()
        self.queued = np.zeros(n, bool)
        self.job = np.full(n, -1, dtype=np.int64)

    def outcomes(self) -> Outcomes:
        return Outcomes(t_s=self.t_s, latency_s=self.latency_s, queue_wait_s=self.queue_wait_s,
                        fallback=self.fallback, timed_out=self.timed_out,
                        feature_age_s=self.feature_age_s, model_age_s=self.model_age_s,
                        quality=self.quality, busy_s=self.busy_s,
                        service_start_s=self.service_start_s, queued=self.queued)


def _quality(scenario: Scenario, t: float, feature_age: float, model_age: float,
             model_cutoff: float) -> float:
    """Quality of one prediction, written out in scalar arithmetic (DESIGN.md's definition)."""
    spec = scenario.quality
    loss = sum(d.quality_drop for d in scenario.drift if t >= d.at and model_cutoff < d.at)
    for curve, age in ((spec.feature_staleness, feature_age), (spec.model_staleness, model_age)):
        if curve is not None:
            loss += spec.fresh - _curve(curve, spec.fresh, age)
    return min(max(spec.fresh - loss, 0.0), spec.fresh)


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


def _one(x: float) -> np.ndarray:
    return np.array([x], dtype=float)


class _RequestModel:
    """How one request flows through one architecture, step by step in simulated time."""

    def __init__(self, architecture, run, env: simpy.Environment):
        self.arch = architecture
        self.name = architecture.name
        self.scenario = run.scenario
        self.population = run.population
        self.model_deploys = run.model.deploys
        self.resource = None
        if isinstance(architecture, OnlineModel):
            self.resource = simpy.Resource(env, capacity=architecture.serving.spec.replicas)
        self.store = getattr(architecture, "store", None)
        self.used: dict[int, set] = {}

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
        else:
            yield from self._online(env, chunk, i, out)

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
        fallback = (not has) or timed_out
        out.latency_s[i] = latency
        out.timed_out[i] = timed_out
        out.fallback[i] = fallback
        if fallback:
            out.quality[i] = self.scenario.quality.fallback
            return
        out.job[i] = job
        self._score(out, i, t, t - row["cutoff_s"], row["model_cutoff_s"])

    def _online(self, env, chunk, i, out):
        arch = self.arch
        t = chunk.t_s[i]
        if arch.stream is not None:
            stream = arch.stream
            if stream.spec.window.is_zero:
                feature_age = float(stream.spec.lag.ppf(_one(chunk.u_stream_lag[i]))[0])
            else:
                windows = stream.windows
                feature_age = t - windows.rows[windows.current]["cutoff_s"]
        else:
            refreshes = arch.features.refreshes
            feature_age = t - refreshes.rows[refreshes.current]["cutoff_s"]
        model_cutoff = self.model_deploys.rows[self.model_deploys.current]["cutoff_s"]
        occupancy = (float(arch.spec.feature_lookup.ppf(_one(chunk.u_feature_lookup[i]))[0]) +
                     float(arch.serving.spec.service_time.ppf(_one(chunk.u_service[i]))[0]))
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
                yield env.timeout(occupancy)
        if granted:
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
            out.quality[i] = self.scenario.quality.fallback
            return
        self._score(out, i, t, feature_age, model_cutoff)

    def _score(self, out, i, t, feature_age, model_cutoff):
        out.quality[i] = _quality(self.scenario, t, feature_age, t - model_cutoff, model_cutoff)
        out.feature_age_s[i] = feature_age
        out.model_age_s[i] = t - model_cutoff

    # -- wasted predictions: which entities read which job's predictions ------------------------
    def record_use(self, out: _ChunkOutcomes) -> None:
        for job, slot in zip(out.job[out.job >= 0], out.slot[out.job >= 0]):
            self.used.setdefault(int(job), set()).add(int(slot))

    def finish(self) -> None:
        if self.store is not None:
            self.store._used = [len(self.used.get(j, ())) for j in range(len(self.store.jobs))]
