"""``edge``: prediction on the user's device, with an optional cloud path.

A device answers a request itself: its inference takes ``device_time`` (plus on-device
request features), no replica and no network. Its features are as fresh as its last sync:
device ``e`` syncs at ``phase_e + k x every`` (``phase_e`` spread over the cycle by the user
hash of :func:`sim.engine.training.user_bucket`), and misses a sync with probability
``offline``, decided per (device, sync) by a hash (:func:`device_uniform`), so both engines see
the same misses; the features then keep the age of the last sync that happened (a device that
missed 64 in a row, or has not synced since its entity appeared, has none: a cold start).
A model deployed at ``d`` reaches device ``e`` at ``d + rollout`` (one draw per device and
model, by the same hash); the device serves the newest model it has. The model in service at
the start (version 0) is on every device.

With ``cloud``, requests whose on-device inference would take longer than ``slower_than``, and
(``cold: true``) those of devices with no features yet, go to an online serving path instead
(its own features, replicas, the scenario's network), which serves the model in service with
no rollout delay. Costs: ``costs.device_sync`` per sync that happens and ``costs.device_download``
per device per new model, for the entities existing on average (``devices``), plus the cloud's
replicas, features and storage.
"""

from __future__ import annotations

import math

import numpy as np

from sim.engine.architectures.base import empty_outcomes, full_answers
from sim.engine.architectures.kinds import OnlineModel, _Common
from sim.engine.architectures.parts import mean_entities
from sim.engine.freshness import FeatureAges
from sim.engine.training import user_bucket
from sim.results.metrics import Outcomes
from sim.scenario import EdgeArchitecture, OnlineArchitecture, Scenario
from sim.units import DAY_S

# A device that missed this many syncs in a row counts as having no features.
MAX_MISSED_SYNCS = 64
_M64 = 0xFFFFFFFFFFFFFFFF


def _mix(x: int) -> int:
    """SplitMix64's finaliser of one 64-bit integer (Steele, Lea and Flood, OOPSLA 2014)."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def device_uniform(slot, index, salt: int) -> np.ndarray:
    """A uniform in [0, 1) for each (device, sync or model ``index``), from SplitMix64 of
    ``salt`` and both: the same for the same inputs in every engine and chunk."""
    slot = np.asarray(slot, dtype=np.uint64)
    index = (np.asarray(index, dtype=np.int64) + (1 << 31)).astype(np.uint64)
    with np.errstate(over="ignore"):
        x = (slot << np.uint64(32)) ^ index ^ np.uint64(salt & _M64)
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(float) * 2.0 ** -53


def device_uniform_one(slot: int, index: int, salt: int) -> float:
    """:func:`device_uniform` of one pair, in plain integer arithmetic (the reference's)."""
    x = ((int(slot) << 32) ^ (int(index) + (1 << 31)) ^ (salt & _M64)) & _M64
    return (_mix(x) >> 11) * 2.0 ** -53


def salts(streams, name: str) -> tuple[int, int]:
    """(sync salt, rollout salt) of an edge architecture in one replication: the first numbers
    of generators of their own, so both engines draw the same."""
    return (int(streams.fresh(f"edge_sync/{name}").integers(1 << 62)),
            int(streams.fresh(f"edge_rollout/{name}").integers(1 << 62)))


def last_sync_s(t_s, slot, every_s: float, offline: float, salt: int) -> np.ndarray:
    """When each device last synced before ``t_s`` (NaN: none of the last 64 happened)."""
    phase = user_bucket(slot, "sync") * every_s
    k = np.floor((t_s - phase) / every_s).astype(np.int64)
    if offline == 0:
        return phase + k * every_s
    out = np.full(np.shape(t_s), np.nan)
    todo = np.arange(np.size(t_s))
    slot = np.asarray(slot)
    for _ in range(MAX_MISSED_SYNCS):
        happened = device_uniform(slot[todo], k[todo], salt) >= offline
        done = todo[happened]
        out[done] = phase[done] + k[done] * every_s
        todo = todo[~happened]
        if not todo.size:
            break
        k[todo] -= 1
    return out


class EdgeModel(_Common):
    """``edge``: on-device prediction, and the cloud path when there is one."""

    def __init__(self, name: str, spec: EdgeArchitecture, scenario: Scenario):
        super().__init__(name, spec, scenario)
        self.cloud = None
        if spec.cloud is not None:
            c = spec.cloud
            online = OnlineArchitecture.model_construct(
                kind="online", training=spec.training, features=c.features,
                feature_lookup=c.feature_lookup, serving=c.serving, fallback=spec.fallback,
                pipelines=None, variant=spec.variant)
            self.cloud = OnlineModel(name, online, scenario)
            self.cloud.losses = self.losses  # one account of losses for both paths

    @property
    def request_features(self):
        """On-device request features (fresh by construction), or None."""
        return self.spec.request_features

    @property
    def serving(self):
        """The cloud's serving replicas (for the engine's and reports' serving numbers)."""
        return None if self.cloud is None else self.cloud.serving

    def lead_s(self, population_size: int) -> float:
        """The cloud's lead, and long enough for models to have reached devices (the rollout's
        99.99th percentile) before requests begin."""
        rollout = 0.0 if self.spec.rollout.is_zero else \
            float(self.spec.rollout.ppf(np.array(0.9999)))
        return max(rollout, self.cloud.lead_s(population_size) if self.cloud else 0.0)

    def start(self, env, world):
        super().start(env, world)
        self.sync_salt, self.rollout_salt = salts(world.streams, self.name)
        if self.cloud is not None:
            self.cloud.start(env, world)

    # -- the device ---------------------------------------------------------------------------
    def device_latency(self, chunk) -> np.ndarray:
        latency = chunk.sample(self.spec.device_time, "device")
        if self.spec.request_features is not None:
            latency = latency + chunk.sample(self.spec.request_features.compute,
                                             "request_features")
        return latency

    def feature_age(self, t_s, slot, created_s) -> np.ndarray:
        """Age of each device's synced features (NaN: none yet)."""
        sync = self.spec.sync
        last = last_sync_s(t_s, slot, sync.every, sync.offline, self.sync_salt)
        age = t_s - last
        np.copyto(age, np.nan, where=~(last >= created_s))
        return age

    def model_cutoff(self, t_s, slot) -> np.ndarray:
        """Data cut-off of the newest model each device has at ``t_s``."""
        deploys = self.world.model.deploys
        if self.spec.rollout.is_zero:
            return deploys.at(t_s, "cutoff_s")
        out = np.full(np.shape(t_s), np.nan)
        latest = float(np.max(t_s)) if np.size(t_s) else -math.inf
        # newest cut-off first (a long run may deploy after a later one): the first model a
        # device has in that order is the newest it has
        rows = sorted((r for r in deploys.rows if r["visible_at_s"] <= latest),
                      key=lambda r: -r["cutoff_s"])
        for row in rows:
            left = np.isnan(out)
            if not left.any():
                break
            if row["version"] == 0:
                arrived = left & (t_s >= row["visible_at_s"])
            else:
                u = device_uniform(slot[left], np.full(int(left.sum()), int(row["version"])),
                                   self.rollout_salt)
                delay = np.zeros(np.shape(t_s))
                delay[left] = self.spec.rollout.ppf(u)
                arrived = left & (row["visible_at_s"] + delay <= t_s)
            out[arrived] = row["cutoff_s"]
        return out

    def _on_device(self, t, slot, created, latency) -> dict:
        n = t.size
        ages = FeatureAges(self.feature_age(t, slot, created), None,
                           self.spec.request_features is not None)
        fallback = np.zeros(n, bool)
        q, model_age = self._quality(t, ages, self.model_cutoff(t, slot), fallback)
        out = empty_outcomes(n, t)
        out.update(latency_s=latency, device_s=latency, quality=q, model_age_s=model_age,
                   feature_age_s=ages.oldest_s(), batch_age_s=ages.used("batch"),
                   cold_start=ages.cold())
        return out

    def serve(self, chunk) -> Outcomes:
        t, slot = chunk.t_s, chunk.slot
        created = chunk.created_at_s(self.world.population)
        latency = self.device_latency(chunk)
        cloud = np.zeros(t.size, bool)
        c = self.spec.cloud
        if c is not None:
            if c.slower_than is not None:
                cloud |= latency > c.slower_than
            if c.cold:
                cloud |= np.isnan(self.feature_age(t, slot, created))
        here = ~cloud
        device = full_answers(self._on_device(t[here], slot[here], created[here],
                                              latency[here]))
        if not cloud.any() and not (self.cloud is not None and self.cloud.serving.evented):
            return Outcomes(**device)
        network = np.broadcast_to(chunk.network_s(self.network), (t.size,))
        inner = self.cloud
        if inner.serving.evented:  # decided now or a chunk later: appended after the device's
            online = full_answers(inner._evented(chunk, cloud))
        else:
            lookup, work, lag = inner._draws(chunk)
            online = full_answers(inner._serve_online(
                t[cloud], slot[cloud], created[cloud], lookup[cloud], work[cloud], None,
                network[cloud]))
            online["t_s"] = t[cloud]
        return Outcomes(**{k: np.concatenate([device[k], online[k]]) for k in device})

    def finish(self) -> Outcomes | None:
        if self.cloud is None:
            return None
        return self.cloud.finish()

    # -- cost -----------------------------------------------------------------------------------
    def _add_costs(self, costs, prices, start_s, end_s):
        if self.cloud is not None:
            self.cloud._add_costs(costs, prices, start_s, end_s)
        devices = mean_entities(self.world.population, start_s, end_s)
        sync = self.spec.sync
        syncs = devices * (1 - sync.offline) * DAY_S / sync.every
        deploys = self.world.model.deploys_per_day(start_s, end_s)
        costs["devices"] = syncs * prices.device_sync + devices * deploys * prices.device_download

    def serving_stats(self):
        return self.cloud.serving_stats() if self.cloud is not None else None
