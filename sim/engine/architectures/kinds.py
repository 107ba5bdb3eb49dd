"""batch, online, streaming and hybrid, assembled from the parts in ``parts.py``."""

from __future__ import annotations

import math

import numpy as np
import simpy
from numba import njit

from sim.engine.architectures import fused
from sim.engine.architectures.base import World, empty_outcomes, full_answers
from sim.engine.architectures.parts import (BatchFeaturePipeline, OnlineServing, StoredPredictions,
                                     StreamPipeline)
from sim.engine.freshness import FeatureAges, drift_loss, feature_losses, staleness_loss
from sim.results.metrics import Outcomes
from sim.scenario import (BatchArchitecture, HybridArchitecture, OnlineArchitecture, Scenario,
                          StreamingArchitecture)
from sim.engine.workload import Chunk
from sim.units import DAY_S

COMPONENTS = ("serving", "batch_scoring", "feature_pipeline", "stream_processing", "training",
              "evaluation", "storage", "skew_prevention", "devices")
LOSS_KEYS = ("predictions", "feature_staleness", "cold_start", "expired_features",
             "missing_features", "model_staleness", "drift", "skew", "model_variant",
             "model_training")
# What answered a request (Outcomes.answer): its prediction, or a step of the fallback chain.
ANSWER_CODES = {"prediction": 0, "stale": 1, "default": 2, "error": 3}


@njit(cache=True, nogil=True)
def _masked_sum(values, mask):
    """The sum of ``values`` where ``mask`` holds, in one pass (a BLAS dot product with a 0/1
    weight wakes OpenBLAS's threads, which costs milliseconds per call on a busy machine)."""
    total = 0.0
    for i in range(values.shape[0]):
        if mask[i]:
            total += values[i]
    return total


class _Common:
    """Quality and the training share of cost, the same for every kind."""

    def __init__(self, name: str, spec, scenario: Scenario):
        self.name = name
        self.kind = spec.kind
        self.spec = spec
        self.scenario = scenario
        # Metric lost per real prediction in the measured window, by cause (see _quality).
        self.losses = dict.fromkeys(LOSS_KEYS, 0.0)
        self.chain = list(spec.fallback)
        pipelines = getattr(spec, "pipelines", None)
        self.skew_loss = pipelines.mean_loss if pipelines is not None else 0.0
        self.variant_loss = spec.variant_loss * scenario.quality.fresh
        self.network = scenario.network

    def start(self, env: simpy.Environment, world: World) -> None:
        self.world = world

    def _answer(self, fallback: np.ndarray, stale_ok) -> np.ndarray | None:
        """What answers each request (ANSWER_CODES): its prediction, or the first step of the
        fallback chain that can (``stale`` only where an expired prediction is stored,
        ``stale_ok``). None for the default chain ``[default]`` (every fallback is the
        default)."""
        if self.chain == ["default"]:
            return None
        answer = np.zeros(fallback.size, dtype=np.int8)
        left = np.array(fallback, dtype=bool)
        for step in self.chain:
            take = left & stale_ok if step == "stale" else left
            answer[take] = ANSWER_CODES[step]
            left &= ~take
        return answer

    def _quality(self, t_s, ages: FeatureAges, model_cutoff_s, fallback, answer=None):
        """Each request's quality (DESIGN.md) and model age; adds the measured predictions'
        losses by cause to ``self.losses``. A request answered by a stale prediction
        (``answer``) has that prediction's quality; the default, ``quality.fallback``; an
        error, 0."""
        q = self.scenario.quality
        model_age = t_s - model_cutoff_s
        staleness, cold, missing, expired = feature_losses(q, ages)
        loss = staleness_loss(q.model_staleness, q.fresh, model_age)
        # losses of the measured predictions (stale ones too), each against fresh (before
        # the clamp)
        predicted = np.logical_not(fallback) if answer is None else \
            answer <= ANSWER_CODES["stale"]
        weight = predicted.copy()
        if t_s.size and t_s[0] < self.scenario.warmup:
            weight &= t_s >= self.scenario.warmup
        n = float(np.count_nonzero(weight))
        self.losses["predictions"] += n
        self.losses["model_staleness"] += _masked_sum(loss, weight)
        for key, part in (("feature_staleness", staleness), ("cold_start", cold),
                          ("expired_features", expired)):
            if not np.isscalar(part):
                self.losses[key] += _masked_sum(part, weight)
                loss += part
        self.losses["missing_features"] += missing * n
        loss += missing
        if self.skew_loss:
            self.losses["skew"] += self.skew_loss * n
            loss += self.skew_loss
        if self.variant_loss:
            self.losses["model_variant"] += self.variant_loss * n
            loss += self.variant_loss
        if self.scenario.drift:
            newest = ages.newest_s()
            drift = drift_loss(self.scenario.drift, t_s, model_cutoff_s,
                               None if newest is None else t_s - newest)
            self.losses["drift"] += (_masked_sum(drift, weight) if np.ndim(drift)
                                     else float(drift) * n)
            loss += drift
        value = np.subtract(q.fresh, loss, out=loss)
        np.clip(value, 0.0, q.fresh, out=value)
        trained = self.world.model.training_loss(model_cutoff_s)
        if trained is not None:  # how the model was trained (after the clip: a lift may pass fresh)
            self.losses["model_training"] += _masked_sum(trained, weight)
            value -= trained
            np.maximum(value, 0.0, out=value)
        np.copyto(value, q.fallback, where=~predicted)
        if answer is not None:
            np.copyto(value, 0.0, where=answer == ANSWER_CODES["error"])
        return value, model_age

    def _model_cutoff_now(self, t_s, slot):
        """The data cut-off of the model serving each request (a candidate under test for the
        users in its share)."""
        model = self.world.model
        return model.assign(t_s, slot, model.deploys.at(t_s, "cutoff_s"))

    def cost_usd_per_day(self, start_s: float, end_s: float) -> dict[str, float]:
        prices = self.scenario.costs
        costs = dict.fromkeys(COMPONENTS, 0.0)
        costs["training"] = self.world.model.cost_usd_per_day(prices, start_s, end_s)
        pipelines = getattr(self.spec, "pipelines", None)
        if pipelines is not None:
            costs["skew_prevention"] = pipelines.cost_per_day
        self._add_costs(costs, prices, start_s, end_s)
        per_day = self.scenario.workload.arrivals.rate * DAY_S
        costs["evaluation"] = self.world.model.test_cost_usd_per_day(
            start_s, end_s, (costs["serving"] + costs["batch_scoring"]) / per_day)
        costs["total"] = sum(costs[c] for c in COMPONENTS)
        return costs

    def wasted(self, start_s: float, end_s: float) -> tuple[int, int]:
        return 0, 0

    def trainings(self, start_s: float, end_s: float) -> int:
        """Training runs started in the window by the model history this architecture uses."""
        return self.world.model.trainings(start_s, end_s)

    def serving_stats(self):
        return None

    def finish(self) -> Outcomes | None:
        """Outcomes of requests still undecided when arrivals end (none by default)."""
        return None

    # -- the fused kernels (sim/engine/architectures/fused.py) ------------------------------------
    _plan: "fused.Plan | None | bool" = None  # None: not decided yet; False: not fusable

    def fusable(self, chunk: Chunk, accumulator) -> bool:
        """Whether :meth:`serve_fused` serves this chunk; else :meth:`serve` and
        ``accumulator.add`` do (the same numbers, slower)."""
        if self._plan is None:
            self._plan = (self.chain == ["default"] and self._fused_plan(accumulator)) or False
        return bool(self._plan) and chunk.size > 0

    def serve_fused(self, chunk: Chunk, accumulator, keep: bool) -> Outcomes | None:
        """Called only where :meth:`fusable` holds: kinds with fused kernels override it."""
        raise NotImplementedError(f"{self.kind} has no fused kernel: use serve")

    def _fused_plan(self, accumulator) -> "fused.Plan | None":
        """The fused kernels' plan, or None when this architecture uses something they do
        not do (fallback chains other than the default are checked for every kind)."""
        return None

    def _stored_quality(self, accumulator) -> "fused.QualityPlan":
        """The quality of predictions read from the store: their age is the batch class's."""
        return fused.QualityPlan(self, accumulator, has_batch=True, has_stream=False,
                                 has_request=False)


class BatchModel(_Common):
    """``batch``: scheduled scoring, predictions read from a store."""

    def __init__(self, name: str, spec: BatchArchitecture, scenario: Scenario):
        super().__init__(name, spec, scenario)
        self.store = StoredPredictions(spec)

    def lead_s(self, population_size: int) -> float:
        return self.store.lead_s(population_size)

    def start(self, env, world):
        super().start(env, world)
        self.store.start(env, world)

    def serve(self, chunk: Chunk) -> Outcomes:
        t = chunk.t_s
        out = _store_outcomes(self, t, chunk.slot, chunk.sample(self.spec.lookup, "lookup"),
                              chunk.network_s(self.network))
        return Outcomes(t_s=t, queue_wait_s=np.zeros(t.size), busy_s=np.zeros(t.size),
                        service_start_s=t, queued=np.zeros(t.size, bool),
                        service_s=np.full(t.size, np.nan), **out)

    def _add_costs(self, costs, prices, start_s, end_s):
        costs["batch_scoring"] = self.store.cost_usd_per_day(prices, start_s, end_s)
        costs["storage"] = self.store.storage_usd_per_day(prices, start_s, end_s)

    def wasted(self, start_s, end_s):
        return self.store.wasted(start_s, end_s)

    def _fused_plan(self, accumulator):
        return fused.Plan(self._stored_quality(accumulator), None)

    def serve_fused(self, chunk: Chunk, accumulator, keep: bool) -> Outcomes | None:
        """:meth:`serve` and ``accumulator.add`` in one: the store read, then one compiled pass
        for losses, quality and metrics; the chunk's outcomes only when ``keep``."""
        return fused.second_pass(self, chunk, accumulator, keep,
                                 stored=fused.stored_part(self, chunk))


def _store_outcomes(arch, t, slot, lookup, network) -> dict:
    """Outcomes of requests answered from stored predictions (batch, a hybrid's head): the
    store read, the fallback chain, quality. A stale answer keeps its prediction's age and
    model age; any other fallback's are NaN."""
    latency, fallback, timed_out, expired, feature_age, model_cutoff = arch.store.serve(
        t, slot, lookup)
    # a job run during a test scored the test's users with the candidate
    model_cutoff = arch.world.model.assign(t - feature_age, slot, model_cutoff)
    answer = arch._answer(fallback, expired)
    q, model_age = arch._quality(t, FeatureAges(feature_age, None), model_cutoff, fallback,
                                 answer)
    unused = fallback if answer is None else fallback & (answer != ANSWER_CODES["stale"])
    np.copyto(model_age, np.nan, where=unused)
    np.copyto(feature_age, np.nan, where=unused)
    return dict(latency_s=_plus(latency, network), fallback=fallback, timed_out=timed_out,
                feature_age_s=feature_age, model_age_s=model_age, quality=q,
                batch_age_s=feature_age, cold_start=fallback & ~timed_out & ~expired,
                expired=expired, answer=answer, network_s=_network_column(network, t.size))


def _plus(latency: np.ndarray, network) -> np.ndarray:
    """Latency as the client sees it: the server's plus the round trip (no copy without one)."""
    if np.isscalar(network) and network == 0:
        return latency
    return latency + network


def _network_column(network, n: int) -> np.ndarray | None:
    """The round trips as an array for Outcomes (None without a network)."""
    if np.isscalar(network):
        return None if network == 0 else np.full(n, float(network))
    return network



class OnlineModel(_Common):
    """``online`` and ``streaming``: prediction at request time on serving replicas."""

    def __init__(self, name: str, spec: OnlineArchitecture | StreamingArchitecture,
                 scenario: Scenario):
        super().__init__(name, spec, scenario)
        self.features = BatchFeaturePipeline(spec.features.batch) if spec.features.batch else None
        self.stream = StreamPipeline(spec.features.stream) if spec.features.stream else None
        self.request_features = spec.features.request
        self.serving = OnlineServing(spec.serving, spec.feature_lookup, scenario.end_s,
                                     spec.features.request)

    def lead_s(self, population_size: int) -> float:
        return max(self.features.lead_s(population_size) if self.features else 0.0,
                   self.stream.lead_s() if self.stream else 0.0)

    def start(self, env, world):
        super().start(env, world)
        if self.features:
            self.features.start(env, world)
        if self.stream:
            self.stream.start(env, world)
        self.serving.start(world)

    def _request_compute(self, chunk: Chunk) -> np.ndarray | float:
        """Each request's own work on the replica besides inference: computing request-time
        features, and ``serving.time_per_size`` x its size (0 without either)."""
        extra = 0.0
        if self.request_features is not None:
            extra = chunk.sample(self.request_features.compute, "request_features")
        per_size = self.spec.serving.time_per_size
        if per_size > 0:
            extra = extra + per_size * chunk.request_size
        return extra

    def _draws(self, chunk: Chunk):
        """This architecture's feature lookup, work on the replica and stream lag per request
        of the chunk."""
        spec = self.spec
        work = chunk.sample(spec.serving.service_time, "service") + self._request_compute(chunk)
        return chunk.sample(spec.feature_lookup, "feature_lookup"), work, \
            self._stream_lag(chunk)

    def _stream_lag(self, chunk: Chunk) -> np.ndarray | None:
        """Each request's own stream lag, when every event is its own update (window 0)."""
        if self.stream is not None and self.stream.spec.window.is_zero:
            return chunk.sample(self.stream.spec.lag, "stream_lag")
        return None

    def _ages(self, t, created, lag) -> FeatureAges:
        """The age of each feature class at request times ``t`` for entities created at
        ``created``: NaN where the entity was created after the data cut-off of the newest
        refresh (its first events are in no materialisation or window yet: a cold start)."""
        batch = stream = None
        if self.features is not None:
            cutoff = self.features.feature_cutoff_s(t)
            batch = np.subtract(t, cutoff)
            np.copyto(batch, np.nan, where=created > cutoff)
        if self.stream is not None:
            stream = np.array(self.stream.age_s(t, lag), dtype=float)  # a copy: lag is shared
            np.copyto(stream, np.nan, where=created > t - stream)
        return self._feature_ages(batch, stream)

    def _feature_ages(self, batch, stream) -> FeatureAges:
        return FeatureAges(batch, stream, self.request_features is not None,
                           ttl_batch=self.features.spec.ttl if self.features else None,
                           ttl_stream=self.stream.spec.ttl if self.stream else None)

    def _serve_online(self, t, slot, created, lookup, work, lag, network):
        latency, wait, timed_out, busy, start, service = self.serving.serve(t, lookup, work)
        return self._online_outcomes(t, latency, wait, timed_out, busy, start, service,
                                     self._ages(t, created, lag),
                                     self._model_cutoff_now(t, slot), network)

    def _online_outcomes(self, t, latency, wait, timed_out, busy, start, service,
                         ages: FeatureAges, model_cutoff, network) -> dict:
        """Outcomes of requests served online; the client also waits the round trip
        ``network`` (after the server's timeout is judged)."""
        answer = self._answer(timed_out, False)
        q, model_age = self._quality(t, ages, model_cutoff, timed_out, answer)

        def unless_timed_out(age):
            return np.full(t.size, np.nan) if age is None else np.where(timed_out, np.nan, age)

        expired = ages.expired()
        return dict(latency_s=_plus(latency, network), queue_wait_s=wait, fallback=timed_out.copy(),
                    network_s=_network_column(network, t.size),
                    timed_out=timed_out, quality=q, busy_s=busy, service_start_s=start,
                    service_s=service, queued=np.ones(t.size, bool),
                    feature_age_s=unless_timed_out(ages.oldest_s()),
                    batch_age_s=unless_timed_out(ages.used("batch")),
                    stream_age_s=unless_timed_out(ages.used("stream")),
                    cold_start=ages.cold() & ~timed_out,
                    expired=None if np.isscalar(expired) else expired & ~timed_out,
                    answer=answer,
                    model_age_s=np.where(timed_out, np.nan, model_age))

    def serve(self, chunk: Chunk) -> Outcomes:
        if self.serving.evented:
            return Outcomes(**self._evented(chunk, np.ones(chunk.size, bool)))
        return Outcomes(t_s=chunk.t_s, **self._serve_online(
            chunk.t_s, chunk.slot, chunk.created_at_s(self.world.population),
            *self._draws(chunk), chunk.network_s(self.network)))

    # -- batching and autoscaling: requests may be decided a chunk after they arrive ------------
    def _payload_ages(self) -> tuple[str, ...]:
        return tuple(k for k, present in (("batch_age_s", self.features is not None),
                                          ("stream_age_s", self.stream is not None)) if present)

    def _evented(self, chunk: Chunk | None, mask: np.ndarray | None) -> dict:
        """Outcomes of the online requests decided by the end of ``chunk`` (all of the rest
        when ``chunk`` is None, at the end of the run), in arrival order."""
        if chunk is None:
            inputs = {k: np.empty(0) for k in ("t_s", "lookup_s", "item_s", "fixed_s",
                                                "model_cutoff_s", "network_s",
                                                *self._payload_ages())}
            batching = self.spec.serving.batching
            if batching is not None and batching.batch_time is not None:
                inputs["table_s"] = np.empty((0, len(batching.batch_time)))
            r = self.serving.serve_evented(inputs, np.inf, final=True)
        else:
            r = self.serving.serve_evented(self._queue_inputs(chunk, mask), chunk.end_s)
        t = r["t_s"]
        ages = self._feature_ages(r.get("batch_age_s"), r.get("stream_age_s"))
        out = empty_outcomes(t.size, t)
        out.update(self._online_outcomes(t, r["latency_s"], r["wait_s"], r["timed_out"],
                                         r["busy_s"], r["start_s"], r["service_s"], ages,
                                         r["model_cutoff_s"],
                                         r["network_s"] if self.network is not None else 0.0))
        return out

    def _queue_inputs(self, chunk: Chunk, mask: np.ndarray) -> dict:
        """What the batching queue needs per request, and what quality needs once decided."""
        spec = self.spec
        batching = spec.serving.batching
        t = chunk.t_s[mask]
        table = None
        if batching is None:
            item = chunk.sample(spec.serving.service_time, "service")
            fixed = np.zeros(t.size)
        elif batching.batch_time is not None:  # measured: one draw per batch, at every size
            item = np.zeros(chunk.size)
            fixed = np.zeros(t.size)
            table = np.column_stack([chunk.sample(d, "batch_fixed")
                                     for d in batching.batch_time.values()])[mask]
        else:
            item = chunk.sample(batching.per_item, "service")
            fixed = chunk.sample(batching.fixed, "batch_fixed")[mask]
        item = (item + self._request_compute(chunk))[mask]
        lag = self._stream_lag(chunk)
        lag = None if lag is None else lag[mask]
        ages = self._ages(t, chunk.created_at_s(self.world.population)[mask], lag)
        inputs = dict(t_s=t, lookup_s=chunk.sample(spec.feature_lookup, "feature_lookup")[mask],
                      item_s=item, fixed_s=fixed,
                      model_cutoff_s=self._model_cutoff_now(t, chunk.slot[mask]),
                      network_s=np.broadcast_to(chunk.network_s(self.network), (chunk.size,))[
                          mask].astype(float))
        if table is not None:
            inputs["table_s"] = table
        for key in self._payload_ages():
            inputs[key] = ages.batch_s if key == "batch_age_s" else ages.stream_s
        return inputs

    def finish(self) -> Outcomes | None:
        """The requests still waiting when arrivals end (batching and autoscaling only)."""
        if not self.serving.evented:
            return None
        return Outcomes(**self._evented(None, None))

    def _add_costs(self, costs, prices, start_s, end_s):
        costs["serving"] = self.serving.cost_usd_per_day(prices, start_s, end_s)
        if self.features:
            costs["feature_pipeline"] = self.features.cost_usd_per_day(prices, start_s, end_s)
            costs["storage"] = self.features.storage_usd_per_day(prices, start_s, end_s)
        if self.stream:
            costs["stream_processing"] = self.stream.cost_usd_per_day(
                prices, start_s, end_s, self.world.population)

    def _fused_plan(self, accumulator):
        online = self._online_quality(accumulator)
        return None if online is None else fused.Plan(None, online)

    def _online_quality(self, accumulator) -> "fused.QualityPlan | None":
        """The quality of online predictions for the fused kernels, or None when this
        serving uses what they do not do (dynamic batching, autoscaling, slow periods,
        request-time work, expiring features)."""
        serving = self.spec.serving
        if self.serving.evented or serving.slow_periods is not None or \
                getattr(serving, "after_idle", None) is not None or \
                self.request_features is not None or serving.time_per_size > 0 or \
                (self.features is not None and self.features.spec.ttl is not None) or \
                (self.stream is not None and self.stream.spec.ttl is not None):
            return None
        return fused.QualityPlan(self, accumulator, has_batch=self.features is not None,
                                 has_stream=self.stream is not None, has_request=False)

    def serve_fused(self, chunk: Chunk, accumulator, keep: bool) -> Outcomes | None:
        """:meth:`serve` and ``accumulator.add`` in one (one request at a time): a compiled
        pass for the queue and the ages, one for losses, quality and metrics; the chunk's
        outcomes only when ``keep``."""
        return fused.second_pass(self, chunk, accumulator, keep,
                                 online=fused.online_part(self, chunk))

    def serving_stats(self):
        start_s, end_s = self.scenario.warmup, self.scenario.end_s
        ready_s = self.serving.replica_seconds(start_s, end_s, ready=True)
        return {"replicas": ready_s / (end_s - start_s),
                "mean_occupancy_s": self.serving.mean_occupancy_s,
                "serving": self.serving}


class HybridModel(OnlineModel):
    """``hybrid``: stored predictions for the popularity head, online for the tail."""

    def __init__(self, name: str, spec: HybridArchitecture, scenario: Scenario):
        super().__init__(name, spec, scenario)
        self.store = StoredPredictions(spec)
        self.head_slots: int | None = None

    def lead_s(self, population_size: int) -> float:
        return max(super().lead_s(population_size), self.store.lead_s(population_size))

    def _head(self, n_slots: int) -> int:
        return max(1, math.ceil(self.spec.head_share * n_slots - 1e-9))

    def start(self, env, world):
        self.head_slots = self._head(world.population.n_slots)
        self.store.head_slots = self.head_slots
        super().start(env, world)
        self.store.start(env, world)

    def serve(self, chunk: Chunk) -> Outcomes:
        t = chunk.t_s
        out = empty_outcomes(t.size, t)
        head = chunk.slot < self.head_slots
        network = np.broadcast_to(chunk.network_s(self.network), (chunk.size,))
        stored = full_answers(_store_outcomes(self, t[head], chunk.slot[head],
                                              chunk.sample(self.spec.lookup, "lookup")[head],
                                              network[head]))
        for key, value in stored.items():
            out[key][head] = value
        tail = ~head
        if self.serving.evented:  # the tail's outcomes may come a chunk later: append them
            online = full_answers(self._evented(chunk, tail))
            return Outcomes(**{k: np.concatenate([v[head], online[k]]) for k, v in out.items()})
        lookup, work, lag = self._draws(chunk)
        online = full_answers(self._serve_online(
            t[tail], chunk.slot[tail], chunk.created_at_s(self.world.population)[tail],
            lookup[tail],
            work[tail], None if lag is None else lag[tail], network[tail]))
        for key, value in online.items():
            out[key][tail] = value
        return Outcomes(**out)

    def _fused_plan(self, accumulator):
        online = self._online_quality(accumulator)
        return None if online is None else fused.Plan(self._stored_quality(accumulator), online)

    def serve_fused(self, chunk: Chunk, accumulator, keep: bool) -> Outcomes | None:
        """The head's store reads and the tail's queue, then one compiled pass over both in
        arrival order (losses, quality and metrics)."""
        head = chunk.slot < self.head_slots
        # positions rather than masks: taking a fifth of five arrays by position costs a
        # fraction of masking all of them
        return fused.second_pass(self, chunk, accumulator, keep,
                                 stored=fused.stored_part(self, chunk, np.flatnonzero(head)),
                                 online=fused.online_part(self, chunk, np.flatnonzero(~head)),
                                 head=head)

    def _add_costs(self, costs, prices, start_s, end_s):
        super()._add_costs(costs, prices, start_s, end_s)
        costs["batch_scoring"] = self.store.cost_usd_per_day(prices, start_s, end_s)
        costs["storage"] += self.store.storage_usd_per_day(prices, start_s, end_s)

    def wasted(self, start_s, end_s):
        return self.store.wasted(start_s, end_s)


def build(name: str, spec, scenario: Scenario):
    """The architecture model for a scenario's architecture entry (its kind's runtime class,
    from :mod:`sim.engine.architectures.registry`)."""
    from sim.engine.architectures.registry import kind_of
    from sim.scenario import with_variant
    return kind_of(spec).model(name, with_variant(spec), scenario)
