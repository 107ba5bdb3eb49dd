"""Arrivals, entities and popularity, generated in time-ordered chunks with numpy.

Arrivals are an exact non-homogeneous Poisson process obtained by thinning: a homogeneous process
at the peak rate, each point kept with probability rate(t) / peak rate (Lewis and Shedler, 1979).
Entities are popularity *slots*: slot 0 is the most popular. The initial entities and those
created during the run are spread over slots at random, and a request picks a slot from the
popularity law among the entities that exist at its time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numba import njit

from sim.rng import Streams
from sim.scenario import Arrivals, Popularity, Workload

DAY_S = 86400.0
WEEK_S = 7 * DAY_S


class RateProfile:
    """The arrival rate over time: ``rate * m(t)``, with ``m`` averaging 1 over a day or week.

    Diurnal: ``m(t) = 1 + a cos(2 pi (t - peak) / 1 day)`` with ``a = (r - 1) / (r + 1)`` so
    that peak / trough = r. Weekly: diurnal times a day-of-week factor (weekdays 1, weekend
    ``weekend_factor``), normalised to mean 1 over the week; day 0 is a Monday.
    """

    def __init__(self, arrivals: Arrivals):
        self.mean_per_s = arrivals.rate
        self.pattern = arrivals.pattern
        r = arrivals.peak_to_trough if arrivals.pattern != "constant" else 1.0
        self.amplitude = (r - 1.0) / (r + 1.0)
        self.peak_s = arrivals.peak_hour * 3600.0
        weekend = arrivals.weekend_factor if arrivals.pattern == "weekly" else 1.0
        norm = (5.0 + 2.0 * weekend) / 7.0
        self.day_factor = np.array([1.0] * 5 + [weekend] * 2) / norm

    @property
    def peak_per_s(self) -> float:
        return self.mean_per_s * (1.0 + self.amplitude) * float(self.day_factor.max())

    def __call__(self, t_s: np.ndarray) -> np.ndarray:
        """Rate per second at times ``t_s``."""
        m = 1.0 + self.amplitude * np.cos(2 * math.pi * (t_s - self.peak_s) / DAY_S)
        if self.pattern == "weekly":
            day = (np.floor(t_s / DAY_S).astype(np.int64)) % 7
            m = m * self.day_factor[day]
        return self.mean_per_s * m


def zipf_slots(rng: np.random.Generator, n_slots: int, exponent: float, size: int) -> np.ndarray:
    """Draw ``size`` ranks in [0, n_slots) with P(k) proportional to (k + 1) ** -exponent.

    Exact for any exponent >= 0, in O(1) memory: rejection-inversion sampling (Hormann and
    Derflinger, 1996), the method of Apache Commons' RejectionInversionZipfSampler, compiled.
    """
    s = float(exponent)
    if s == 0.0:
        return rng.integers(0, n_slots, size=size)
    h_x1 = _h_integral(1.5, s) - 1.0
    h_n = _h_integral(n_slots + 0.5, s)
    sv = 2.0 - _h_integral_inverse(_h_integral(2.5, s) - _h(2.0, s), s)
    out = np.empty(size, dtype=np.int64)
    todo = np.arange(size)
    while todo.size:
        ranks = np.empty(todo.size, dtype=np.int64)
        accepted = np.empty(todo.size, dtype=np.bool_)
        _zipf_invert(rng.random(todo.size), s, n_slots, h_x1, h_n, sv, ranks, accepted)
        out[todo[accepted]] = ranks[accepted]
        todo = todo[~accepted]
    return out


@njit(cache=True, nogil=True)
def _zipf_invert(u, s, n_slots, h_x1, h_n, sv, ranks, accepted):
    for i in range(u.shape[0]):
        v = h_n + u[i] * (h_x1 - h_n)
        x = _h_integral_inverse(v, s)
        k = math.floor(x + 0.5)
        k = min(max(k, 1.0), float(n_slots))
        accepted[i] = (k - x <= sv) or (v >= _h_integral(k + 0.5, s) - _h(k, s))
        ranks[i] = int(k) - 1


@njit(cache=True, nogil=True)
def _h(x, s):
    return math.exp(-s * math.log(x))


@njit(cache=True, nogil=True)
def _h_integral(x, s):
    log_x = math.log(x)
    return _helper2((1.0 - s) * log_x) * log_x


@njit(cache=True, nogil=True)
def _h_integral_inverse(x, s):
    t = max(x * (1.0 - s), -1.0)
    return math.exp(_helper1(t) * x)


@njit(cache=True, nogil=True)
def _helper1(x):
    """log1p(x) / x, continuous at 0."""
    if abs(x) < 1e-8:
        return 1.0 - x / 2.0 + x * x / 3.0
    return math.log1p(x) / x


@njit(cache=True, nogil=True)
def _helper2(x):
    """expm1(x) / x, continuous at 0."""
    if abs(x) < 1e-8:
        return 1.0 + x / 2.0 + x * x / 6.0
    return math.expm1(x) / x


class Population:
    """Entities over time: ``initial`` at time 0, new ones as a Poisson process.

    ``n_slots`` is every entity that exists at some time in the run. New entities occupy random
    slots; ``created_at_s(slot)`` is -inf for the initial ones.
    """

    def __init__(self, workload: Workload, end_s: float, streams: Streams):
        rng = streams["entities"]
        self.initial = int(workload.entities)
        rate_per_s = workload.new_entities_per_day / DAY_S
        n_new = int(rng.poisson(rate_per_s * end_s)) if rate_per_s > 0 else 0
        self.n_slots = self.initial + n_new
        self.popularity: Popularity = workload.popularity
        created = np.sort(rng.random(n_new) * end_s)
        slots = np.sort(rng.choice(self.n_slots, size=n_new, replace=False)) if n_new else \
            np.empty(0, dtype=np.int64)
        # New entity i (in creation order) gets a random slot: shuffle the pairing.
        order = rng.permutation(n_new)
        self._new_slots = slots  # sorted, for lookups
        self._new_created_at_s = created[order]
        self._created_sorted_s = created  # for "how many exist at time t"
        self._is_new = np.zeros(self.n_slots, dtype=np.bool_)  # a byte per slot
        self._is_new[slots] = True

    def created_at_s(self, slots: np.ndarray) -> np.ndarray:
        """Creation time of each slot's entity (-inf for entities present from the start)."""
        created = np.full(slots.shape, -np.inf)
        if self._new_slots.size == 0:
            return created
        new = np.flatnonzero(self._is_new[slots])
        created[new] = self._new_created_at_s[np.searchsorted(self._new_slots, slots[new])]
        return created

    def count_at(self, t_s: float, head_slots: int | None = None) -> int:
        """Entities that exist at time ``t_s`` (among slots < ``head_slots`` when given)."""
        if head_slots is None:
            return self.initial + int(np.searchsorted(self._created_sorted_s, t_s, side="right"))
        in_head = self._new_slots < head_slots
        not_yet = int(np.count_nonzero(self._new_created_at_s[in_head] > t_s))
        return head_slots - not_yet

    def sample(self, rng: np.random.Generator, t_s: np.ndarray) -> np.ndarray:
        """One entity slot per request time, among entities that exist at that time."""
        n = t_s.size
        slots = self._draw(rng, n)
        bad = np.flatnonzero(self.created_at_s(slots) > t_s)
        while bad.size:
            slots[bad] = self._draw(rng, bad.size)
            bad = bad[self.created_at_s(slots[bad]) > t_s[bad]]
        return slots

    def _draw(self, rng, size):
        if self.popularity.kind == "uniform":
            return rng.integers(0, self.n_slots, size=size)
        return zipf_slots(rng, self.n_slots, self.popularity.exponent, size)


UNIFORM_STREAMS = ("lookup", "feature_lookup", "service", "stream_lag")


@dataclass
class Chunk:
    """Requests arriving in [start_s, end_s), in time order, with their per-request draws.

    The uniforms ``u_*`` are shared by every architecture (common random numbers); each maps
    them through its own distributions. Each comes from its own named stream and is drawn on
    first use, so a run whose architectures never look at, say, stream lags does not pay for
    them, and what the other streams produce does not change.
    """

    start_s: float
    end_s: float
    t_s: np.ndarray
    slot: np.ndarray
    streams: Streams = field(repr=False)
    _uniforms: dict = field(default_factory=dict, repr=False)
    _memo: dict = field(default_factory=dict, repr=False)

    @property
    def size(self) -> int:
        return self.t_s.size

    def uniforms(self, stream: str) -> np.ndarray:
        values = self._uniforms.get(stream)
        if values is None:
            values = self._uniforms[stream] = self.streams[stream].random(self.size)
        return values

    def draw_all(self) -> None:
        """Draw every per-request stream now (the reference engine, whose requests outlive
        their chunk, needs them drawn in chunk order)."""
        for stream in UNIFORM_STREAMS:
            self.uniforms(stream)

    u_lookup = property(lambda self: self.uniforms("lookup"))
    u_feature_lookup = property(lambda self: self.uniforms("feature_lookup"))
    u_service = property(lambda self: self.uniforms("service"))
    u_stream_lag = property(lambda self: self.uniforms("stream_lag"))

    def sample(self, distribution, stream: str) -> np.ndarray:
        """``distribution`` applied to the named per-request uniforms (``lookup``,
        ``feature_lookup``, ``service``, ``stream_lag``), computed once per chunk for
        architectures that share a distribution."""
        key = (stream, distribution.kind, tuple(sorted(distribution.params.items())),
               distribution.source)
        values = self._memo.get(key)
        if values is None:
            values = self._memo[key] = distribution.ppf(getattr(self, f"u_{stream}"))
        return values


class RequestSource:
    """Generates the run's requests chunk by chunk, identically for every architecture."""

    def __init__(self, workload: Workload, population: Population, streams: Streams):
        self.profile = RateProfile(workload.arrivals)
        self.population = population
        self.streams = streams

    def chunk(self, start_s: float, end_s: float) -> Chunk:
        arrivals = self.streams["arrivals"]
        peak = self.profile.peak_per_s
        n = int(arrivals.poisson(peak * (end_s - start_s)))
        # n sorted uniform points on the chunk: normalised partial sums of n + 1 exponentials
        spacings = np.cumsum(arrivals.standard_exponential(n + 1))
        t = start_s + spacings[:-1] * ((end_s - start_s) / spacings[-1])
        if self.profile.pattern != "constant":
            keep = self.streams["thinning"].random(n) * peak < self.profile(t)
            t = t[keep]
        slot = self.population.sample(self.streams["popularity"], t)
        return Chunk(start_s, end_s, t, slot, self.streams)
