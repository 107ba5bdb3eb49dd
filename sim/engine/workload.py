"""Arrivals, entities and popularity, generated in time-ordered chunks with numpy.

Arrivals are an exact non-homogeneous Poisson process obtained by thinning: a homogeneous process
at the peak rate, each point kept with probability rate(t) / peak rate (Lewis and Shedler, 1979).
The rate is the mean rate times a daily or weekly pattern (or an hourly profile), times any
flash-crowd bursts, times the state of a Markov-modulating chain (MMPP) when there is one.
Entities are popularity *slots*: slot 0 is the most popular. The initial entities take the
slots that new ones leave free; new entities enter where ``workload.new_entities`` says (by
default the tail, below every initial entity), and a request picks a slot from the popularity
law among the entities that exist at its time.

A replayed request log (``arrivals.trace``) takes the place of both: :class:`TraceReplay` gives
the log's requests and :class:`TracePopulation` its entities, each created at its first request.
:func:`make_population` and :func:`make_source` choose between the two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numba import njit

from sim.engine.rng import Streams
from sim.scenario import Arrivals, Mmpp, Popularity, Workload
from sim.units import DAY_S


class RateProfile:
    """The arrival rate over time: ``rate * m(t) * b(t)``, with ``m`` averaging 1 over a day or
    week and ``b`` the product of the bursts in progress (1 outside them).

    Diurnal: ``m(t) = 1 + a cos(2 pi (t - peak) / 1 day)`` with ``a = (r - 1) / (r + 1)`` so
    that peak / trough = r. Weekly: diurnal times a day-of-week factor (weekdays 1, weekend
    ``weekend_factor``), normalised to mean 1 over the week; day 0 is a Monday. Profile: ``m``
    is constant within each clock hour, the hour's multiplier (24 for the hours of a day, or
    168 for the hours of a week from Monday 00:00) over the mean of them all.
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
        self.hourly = None
        if arrivals.profile is not None:
            hourly = np.asarray(arrivals.profile, dtype=float)
            hourly = hourly / hourly.max()  # first, so that a tiny profile's mean is not 0
            self.hourly = hourly / hourly.mean()
        self.bursts = [(b.at, b.at + b.duration, b.multiplier) for b in arrivals.bursts or ()]

    @property
    def is_constant(self) -> bool:
        """True when the rate never changes (no thinning needed)."""
        return self.pattern == "constant" and self.hourly is None and not self.bursts

    @property
    def peak_per_s(self) -> float:
        """An upper bound of the rate: the pattern's peak times the largest product of
        overlapping bursts."""
        if self.hourly is not None:
            base = self.mean_per_s * float(self.hourly.max())
        else:
            base = self.mean_per_s * (1.0 + self.amplitude) * float(self.day_factor.max())
        return base * self._max_burst_factor()

    def bounds_between(self, start_s: float, end_s: float) -> tuple[float, float]:
        """A lower and an upper bound of the rate over [start_s, end_s], for thinning a chunk.

        Exact extremes of each factor over the interval (the cosine peaks or bottoms inside it
        or is extreme at an end; the hours or days it touches; a burst overlapping it counts as
        at least 1 for the upper bound and at most 1 for the lower), widened by 1e-9 against
        rounding; the upper bound is never above :attr:`peak_per_s`.
        """
        if self.hourly is not None:
            first, last = math.floor(start_s / 3600.0), math.floor(end_s / 3600.0)
            hours = self.hourly if last - first + 1 >= self.hourly.size else \
                self.hourly[np.arange(first, last + 1) % self.hourly.size]
            low, high = float(hours.min()), float(hours.max())
        else:
            low, high = self._cosine_bounds(start_s, end_s)
            if self.pattern == "weekly":
                first, last = math.floor(start_s / DAY_S), math.floor(end_s / DAY_S)
                days = self.day_factor[np.arange(first, min(last, first + 6) + 1) % 7]
                low, high = low * float(days.min()), high * float(days.max())
        for start, end, multiplier in self.bursts:
            if start <= end_s and end > start_s:
                low, high = low * min(multiplier, 1.0), high * max(multiplier, 1.0)
        return (self.mean_per_s * low * (1.0 - 1e-9),
                min(self.mean_per_s * high * (1.0 + 1e-9), self.peak_per_s))

    def _cosine_bounds(self, start_s: float, end_s: float) -> tuple[float, float]:
        """The least and largest ``1 + a cos(2 pi (t - peak) / 1 day)`` for t in [start_s,
        end_s]: at the ends, unless a peak (whole phase) or a trough (half phase) is inside."""
        first = (start_s - self.peak_s) / DAY_S
        last = (end_s - self.peak_s) / DAY_S
        ends = (math.cos(2 * math.pi * first), math.cos(2 * math.pi * last))
        peak_inside = math.floor(last) > math.floor(first) or first == math.floor(first)
        trough_inside = math.floor(last - 0.5) > math.floor(first - 0.5) or \
            first - 0.5 == math.floor(first - 0.5)
        a = self.amplitude
        return (1.0 - a if trough_inside else 1.0 + a * min(ends),
                1.0 + a if peak_inside else 1.0 + a * max(ends))

    def _max_burst_factor(self) -> float:
        if not self.bursts:
            return 1.0
        edges = sorted({e for start, end, _ in self.bursts for e in (start, end)})
        factors = [self.burst_factor(np.array([e]))[0] for e in edges]
        return max([1.0] + factors)  # the product is constant between consecutive edges

    def burst_factor(self, t_s: np.ndarray) -> np.ndarray:
        """The product of the multipliers of the bursts in progress at ``t_s`` (each over
        [at, at + duration))."""
        factor = np.ones(np.shape(t_s))
        for start, end, multiplier in self.bursts:
            factor[(t_s >= start) & (t_s < end)] *= multiplier
        return factor

    def __call__(self, t_s: np.ndarray) -> np.ndarray:
        """Rate per second at times ``t_s``."""
        if self.hourly is not None:
            hour = np.floor(t_s / 3600.0).astype(np.int64) % self.hourly.size
            m = self.hourly[hour]
        else:  # 1 + a cos(2 pi (t - peak) / 1 day), in place
            m = np.subtract(t_s, self.peak_s, out=np.empty(np.shape(t_s)))
            m *= 2 * math.pi / DAY_S
            np.cos(m, out=m)
            m *= self.amplitude
            m += 1.0
            if self.pattern == "weekly":
                day = (np.floor(t_s / DAY_S).astype(np.int64)) % 7
                m = m * self.day_factor[day]
        if self.bursts:
            m = m * self.burst_factor(t_s)
        return self.mean_per_s * m


class MarkovModulation:
    """The state path of a Markov-modulated Poisson process (MMPP), and the rate multiplier it
    gives over time.

    The chain starts in its stationary distribution at time 0, stays in state ``i`` for an
    exponential time with mean ``mean_sojourn[i]``, then jumps to one of the other states with
    equal probability. The long-run share of time in state ``i`` is proportional to
    ``mean_sojourn[i]`` (the jump chain is doubly stochastic, so every state is entered
    equally often); the multipliers are scaled so their long-run average is 1. The path is drawn
    from its own stream, extended lazily as later times are asked for, so it is the same
    however the run is chunked.
    """

    def __init__(self, spec: Mmpp, rng: np.random.Generator):
        self.multipliers = spec.normalised_multipliers
        self.stationary = spec.stationary
        self.mean_sojourn_s = np.asarray(spec.mean_sojourn, dtype=float)
        self._rng = rng
        self._starts_s = np.array([0.0])  # when each visit starts
        self._states = np.array([rng.choice(len(self.multipliers), p=self.stationary)])
        self._next_s = float(rng.standard_exponential() * self.mean_sojourn_s[self._states[0]])

    @property
    def max_multiplier(self) -> float:
        return float(self.multipliers.max())

    def path(self, until_s: float) -> tuple[np.ndarray, np.ndarray]:
        """The start time and state of every visit that starts before ``until_s``."""
        self._extend(until_s)
        n = int(np.searchsorted(self._starts_s, until_s, side="left"))
        return self._starts_s[:n], self._states[:n]

    def __call__(self, t_s: np.ndarray) -> np.ndarray:
        """The rate multiplier at times ``t_s`` (>= 0)."""
        if t_s.size == 0:
            return np.ones(0)
        self._extend(float(t_s.max()))
        visit = np.searchsorted(self._starts_s, t_s, side="right") - 1
        return self.multipliers[self._states[visit]]

    def _extend(self, until_s: float) -> None:
        k = len(self.multipliers)
        while self._next_s <= until_s:
            batch = 1024
            jumps = self._rng.integers(1, k, size=batch)  # to one of the other states
            states = (self._states[-1] + np.cumsum(jumps)) % k
            sojourn_s = self._rng.standard_exponential(batch) * self.mean_sojourn_s[states]
            ends_s = self._next_s + np.cumsum(sojourn_s)
            starts_s = np.concatenate([[self._next_s], ends_s[:-1]])
            self._starts_s = np.concatenate([self._starts_s, starts_s])
            self._states = np.concatenate([self._states, states])
            self._next_s = float(ends_s[-1])


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
    while todo.size:  # draw again, in order, for the rejected ones
        v = rng.random(todo.size)
        v *= h_x1 - h_n
        v += h_n
        rejected = np.empty(todo.size, dtype=np.int64)
        n = _zipf_accept(v, _h_integral_inverse_array(v, s), s, n_slots, sv, todo, out,
                         rejected)
        todo = rejected[:n]
    return out


def _h_integral_inverse_array(v: np.ndarray, s: float) -> np.ndarray:
    """:func:`_h_integral_inverse` of every ``v``, with numpy's vectorised exp and log1p:
    ``exp(log1p(t) / (1 - s))`` with ``t = max(v (1 - s), -1)``, which is ``exp(v)`` at s = 1."""
    if s == 1.0:
        return np.exp(v)
    x = np.multiply(v, 1.0 - s)
    np.maximum(x, -1.0, out=x)
    with np.errstate(divide="ignore"):  # log1p(-1) = -inf: x = 0 or inf, as the scalar form
        np.log1p(x, out=x)
    x *= 1.0 / (1.0 - s)
    return np.exp(x, out=x)


@njit(cache=True, nogil=True)
def _zipf_accept(v, x, s, n_slots, sv, todo, out, rejected):
    """One round of rejection-inversion, given ``x = H^-1(v)``: ``out[todo[i]]`` when
    accepted; the rejected ``todo[i]`` are listed in ``rejected``; returns how many."""
    n_rejected = 0
    for i in range(v.shape[0]):
        k = math.floor(x[i] + 0.5)
        k = min(max(k, 1.0), float(n_slots))
        if (k - x[i] <= sv) or (v[i] >= _h_integral(k + 0.5, s) - _h(k, s)):
            out[todo[i]] = int(k) - 1
        else:
            rejected[n_rejected] = todo[i]
            n_rejected += 1
    return n_rejected


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

    ``n_slots`` is every entity that exists at some time in the run; ``created_at_s(slot)`` is
    -inf for the initial ones. Where the new entities sit in the popularity ranking follows
    ``workload.new_entities``: they take the slots of a band, each a slot drawn at random among
    the band's (so an entity's expected popularity does not depend on when it is created), and
    keep it. ``tail``: the band is the last ``n_new`` slots, below every initial entity.
    ``random``: the band is every slot. A share: the band of ``n_new`` consecutive slots from
    :attr:`band_start`, placed by :func:`share_band_start`.
    """

    def __init__(self, workload: Workload, end_s: float, streams: Streams):
        rng = streams["entities"]
        self.initial = int(workload.entities)
        rate_per_s = workload.new_entities_per_day / DAY_S
        n_new = int(rng.poisson(rate_per_s * end_s)) if rate_per_s > 0 else 0
        self.n_slots = self.initial + n_new
        self.popularity: Popularity = workload.popularity
        created = np.sort(rng.random(n_new) * end_s)
        rule = workload.new_entities
        self.band_start = self.initial
        if rule.share is None and rule.enter == "random":
            slots = np.sort(rng.choice(self.n_slots, size=n_new, replace=False)) if n_new else \
                np.empty(0, dtype=np.int64)
        else:
            if rule.share is not None and n_new:
                _, share, days = rule.share
                self.band_start = share_band_start(self.initial, n_new, rate_per_s * days * DAY_S,
                                                   self.popularity.exponent, share)
            slots = np.arange(self.band_start, self.band_start + n_new, dtype=np.int64)
        # New entity i (in creation order) gets a random slot of the band: shuffle the pairing.
        order = rng.permutation(n_new)
        self._new_slots = slots  # sorted, for lookups
        self._new_created_at_s = created[order]
        self._created_sorted_s = created  # for "how many exist at time t"
        # New entities in a band of consecutive slots (every rule but ``enter: random``) are
        # told apart by arithmetic; at random, by a byte per slot (random reads of an array as
        # large as the population are what a lookup costs most at tens of millions).
        contiguous = n_new == 0 or int(slots[-1]) - int(slots[0]) == n_new - 1
        self._band = (int(slots[0]), int(slots[0]) + n_new) if n_new and contiguous else (0, 0)
        self._is_new = np.zeros(0 if contiguous else self.n_slots, dtype=np.bool_)
        if not contiguous:
            self._is_new[slots] = True

    def created_at_s(self, slots: np.ndarray) -> np.ndarray:
        """Creation time of each slot's entity (-inf for entities present from the start)."""
        created = np.full(slots.shape, -np.inf)
        if self._new_slots.size and slots.size:
            _created_at(np.ascontiguousarray(slots).ravel(), *self._lookup(),
                        created.reshape(-1))
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
        slots = self._draw(rng, t_s.size)
        bad = self._unborn(slots, t_s)
        while bad.size:
            slots[bad] = self._draw(rng, bad.size)
            bad = bad[self._unborn(slots[bad], t_s[bad])]
        return slots

    def _unborn(self, slots: np.ndarray, t_s: np.ndarray) -> np.ndarray:
        """Positions of the slots whose entity is created after the request's time."""
        if self._new_slots.size == 0:
            return np.empty(0, dtype=np.int64)
        bad = np.empty(slots.size, dtype=np.int64)
        n = _unborn(slots, t_s, *self._lookup(), bad)
        return bad[:n]

    def _lookup(self) -> tuple:
        """What the kernels need to find a slot's creation time: the band (or the byte per
        slot), the new slots in order and their creation times."""
        return self._band[0], self._band[1], self._is_new, self._new_slots, \
            self._new_created_at_s

    def _draw(self, rng, size):
        if self.popularity.kind == "uniform":
            return rng.integers(0, self.n_slots, size=size)
        return zipf_slots(rng, self.n_slots, self.popularity.exponent, size)


def share_band_start(initial: int, n_new: int, cohort: float, exponent: float,
                     share: float) -> int:
    """First slot of the band of ``n_new`` consecutive slots (among ``initial + n_new``) that
    gives ``cohort`` new entities (a day's or a week's) ``share`` of the requests when they are
    the only new entities: ``x / (W - M + x)``, with ``M`` the band's Zipf mass, ``x = M cohort
    / n_new`` the cohort's expected part of it (its slots are drawn at random from the band)
    and ``W`` the mass of every slot. That share falls as the band moves down; the band is
    where it comes closest, between the top (slot 0) and the tail (slot ``initial``)."""
    from sim.inputs.fit import ZipfMass  # with scipy.stats: imported when a band is placed
    mass = ZipfMass(exponent, initial + n_new)
    total = mass(0, initial + n_new)

    def share_at(start: int) -> float:
        band = mass(start, start + n_new)
        x = band * cohort / n_new
        return x / (total - band + x)

    if share_at(0) <= share:
        return 0
    if share_at(initial) >= share:
        return initial
    lo, hi = 0, initial  # share_at(lo) > share >= share_at(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if share_at(mid) > share:
            lo = mid
        else:
            hi = mid
    return lo if share_at(lo) - share < share - share_at(hi) else hi


@njit(cache=True, nogil=True, inline="always")
def _new_index(slot, band_start, band_end, is_new, new_slots):
    """The index of ``slot`` among the new entities' (sorted) slots, or -1 for an initial
    entity."""
    if band_end > band_start:
        return slot - band_start if band_start <= slot < band_end else -1
    if is_new[slot]:
        return np.searchsorted(new_slots, slot)
    return -1


@njit(cache=True, nogil=True)
def _created_at(slots, band_start, band_end, is_new, new_slots, new_created_at_s, out):
    for i in range(slots.shape[0]):
        k = _new_index(slots[i], band_start, band_end, is_new, new_slots)
        if k >= 0:
            out[i] = new_created_at_s[k]


@njit(cache=True, nogil=True)
def _unborn(slots, t_s, band_start, band_end, is_new, new_slots, new_created_at_s, bad):
    n_bad = 0
    for i in range(slots.shape[0]):
        k = _new_index(slots[i], band_start, band_end, is_new, new_slots)
        if k >= 0 and new_created_at_s[k] > t_s[i]:
            bad[n_bad] = i
            n_bad += 1
    return n_bad


UNIFORM_STREAMS = ("lookup", "feature_lookup", "service", "stream_lag", "batch_fixed", "network",
                   "device", "request_features")


def network_times(network, slot, u) -> np.ndarray:
    """Round trips for requests of entities ``slot`` with uniforms ``u``: the region whose
    cumulative share first exceeds the user's bucket (:func:`sim.engine.training.user_bucket`,
    the hash that splits users in tests too), then that region's ``rtt`` at ``u``."""
    from sim.engine.training import user_bucket
    parts = network.parts
    if len(parts) == 1:
        return parts[0][1].ppf(np.asarray(u, dtype=float))
    bucket = user_bucket(slot, "region")
    edges = np.cumsum([share for share, _ in parts])
    region = np.minimum(np.searchsorted(edges, bucket, side="right"), len(parts) - 1)
    out = np.empty(np.shape(u))
    for i, (_, rtt) in enumerate(parts):
        mine = region == i
        if mine.any():
            out[mine] = rtt.ppf(np.asarray(u, dtype=float)[mine])
    return out


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
    request_size: np.ndarray | None = field(default=None, repr=False)  # a log's size column

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
    u_batch_fixed = property(lambda self: self.uniforms("batch_fixed"))
    u_request_features = property(lambda self: self.uniforms("request_features"))

    def network_s(self, network) -> np.ndarray | float:
        """Each request's round trip between client and serving tier (``scenario.network``;
        0 without one): the user's region by a hash of the entity, the time from the stream
        ``network``; computed once per chunk for every architecture."""
        if network is None:
            return 0.0
        values = self._memo.get("network_s")
        if values is None:
            values = self._memo["network_s"] = network_times(network, self.slot,
                                                             self.u_network)
        return values

    u_network = property(lambda self: self.uniforms("network"))
    u_device = property(lambda self: self.uniforms("device"))

    def created_at_s(self, population) -> np.ndarray:
        """Creation time of each request's entity (-inf for those present from the start),
        looked up once per chunk for every architecture that asks."""
        values = self._memo.get("created_at_s")
        if values is None:
            values = self._memo["created_at_s"] = population.created_at_s(self.slot)
        return values

    def sample(self, distribution, stream: str) -> np.ndarray:
        """``distribution`` applied to the named per-request uniforms (``lookup``,
        ``feature_lookup``, ``service``, ``stream_lag``, ``batch_fixed``,
        ``request_features``), computed once per chunk for architectures that share a
        distribution."""
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
        self.modulation = (MarkovModulation(workload.arrivals.mmpp, streams["mmpp"])
                           if workload.arrivals.mmpp is not None else None)
        self.population = population
        self.streams = streams

    @property
    def peak_per_s(self) -> float:
        """The thinning rate: an upper bound of the arrival rate at any time."""
        peak = self.profile.peak_per_s
        return peak * self.modulation.max_multiplier if self.modulation else peak

    def rate(self, t_s: np.ndarray) -> np.ndarray:
        """The arrival rate per second at times ``t_s``."""
        rate = self.profile(t_s)
        return rate * self.modulation(t_s) if self.modulation else rate

    def chunk(self, start_s: float, end_s: float) -> Chunk:
        """The requests of [start_s, end_s): a homogeneous Poisson process at an upper bound of
        the rate over the chunk, thinned to the rate (exact for any bound; the tighter the
        bound, the fewer points are drawn only to be dropped)."""
        arrivals = self.streams["arrivals"]
        low, peak = self.profile.bounds_between(start_s, end_s)
        if self.modulation is not None:
            low, peak = 0.0, peak * self.modulation.max_multiplier
        n = int(arrivals.poisson(peak * (end_s - start_s)))
        # n sorted uniform points on the chunk: normalised partial sums of n + 1 exponentials
        spacings = np.cumsum(arrivals.standard_exponential(n + 1))
        t = start_s + spacings[:-1] * ((end_s - start_s) / spacings[-1])
        if not self.profile.is_constant or self.modulation is not None:
            # Keep a point with probability rate(t) / peak: u * peak < rate(t). Where u * peak is
            # below the chunk's lower bound of the rate that holds without computing the rate
            # (a squeeze), so the rate is evaluated only for the few points above it.
            x = self.streams["thinning"].random(n) * peak
            keep = x < low
            unsure = np.flatnonzero(~keep)
            keep[unsure] = x[unsure] < self.rate(t[unsure])
            t = t[keep]
        slot = self.population.sample(self.streams["popularity"], t)
        return Chunk(start_s, end_s, t, slot, self.streams)


# --------------------------------------------------------------------------------------------
# Replayed request logs
# --------------------------------------------------------------------------------------------

class TracePopulation:
    """The entities of a replayed log: slot ``k`` is the log's ``k``-th most requested id,
    created at its first request (replayed time); slots beyond the log's ids (when
    ``workload.entities`` is larger) exist from the start and are never requested.

    It offers what the architectures use of :class:`Population`: ``n_slots``,
    ``created_at_s`` and ``count_at``.
    """

    def __init__(self, workload: Workload, end_s: float, streams: Streams):
        arrivals = workload.arrivals
        log = arrivals.trace.log
        self.n_slots = int(workload.entities)
        self.in_log = log.n_entities
        self.initial = self.n_slots - self.in_log
        self._first_seen_s = log.first_seen_s / arrivals.replay_speedup
        self._first_seen_sorted_s = np.sort(self._first_seen_s)
        # requests per slot in the log (slot k is the k-th most requested id), for stream costs
        self.request_counts = log.counts.astype(float) if self.in_log else None

    def created_at_s(self, slots: np.ndarray) -> np.ndarray:
        """Creation time of each slot's entity (-inf for those never in the log)."""
        created = np.full(slots.shape, -np.inf)
        logged = slots < self.in_log
        created[logged] = self._first_seen_s[slots[logged]]
        return created

    def count_at(self, t_s: float, head_slots: int | None = None) -> int:
        """Entities that exist at time ``t_s`` (among slots < ``head_slots`` when given)."""
        if head_slots is None:
            return self.initial + int(np.searchsorted(self._first_seen_sorted_s, t_s,
                                                      side="right"))
        logged = min(head_slots, self.in_log)
        return (head_slots - logged) + int(np.count_nonzero(self._first_seen_s[:logged] <= t_s))


class TraceReplay:
    """The requests of a replayed log: request ``i`` at ``times_s[i] / speedup`` (its time since
    the log's first request), about slot ``slot[i]``; with ``loop``, the log again every period.
    """

    def __init__(self, workload: Workload, population, streams: Streams):
        arrivals = workload.arrivals
        trace = arrivals.trace
        speedup = arrivals.replay_speedup
        self.population = population
        self.streams = streams
        self.t_s = trace.log.times_s / speedup
        self.slot = trace.log.slot  # None for a log without entity ids: drawn per chunk
        self.sizes = trace.log.sizes  # each request's size, when the log has a size column
        self.period_s = trace.period_s / speedup if trace.loop is not False else math.inf
        # Peak: the most requests in any bin of a thousandth of the log's span (1 ms at least).
        width_s = max(self.t_s[-1] / 1000.0, 1e-3)
        busiest = np.bincount((self.t_s // width_s).astype(np.int64)).max()
        self.peak_per_s = float(busiest) / width_s

    def chunk(self, start_s: float, end_s: float) -> Chunk:
        """The log's requests in [start_s, end_s), in time order."""
        times, slots, sizes = [], [], []
        first = 0 if math.isinf(self.period_s) else int(math.floor(start_s / self.period_s))
        last = 0 if math.isinf(self.period_s) else int(math.floor(end_s / self.period_s))
        for k in range(max(first, 0), last + 1):
            if k == 0:  # the log's own times, exactly
                lo, hi = np.searchsorted(self.t_s, [start_s, end_s], side="left")
                times.append(self.t_s[lo:hi])
                if self.slot is not None:
                    slots.append(self.slot[lo:hi])
                if self.sizes is not None:
                    sizes.append(self.sizes[lo:hi])
                continue
            shift = k * self.period_s
            lo, hi = np.searchsorted(self.t_s, [start_s - shift, end_s - shift], side="left")
            lo, hi = max(lo - 1, 0), min(hi + 1, self.t_s.size)  # rounding in the shift
            shifted = self.t_s[lo:hi] + shift
            inside = (shifted >= start_s) & (shifted < end_s)
            times.append(shifted[inside])
            if self.slot is not None:
                slots.append(self.slot[lo:hi][inside])
            if self.sizes is not None:
                sizes.append(self.sizes[lo:hi][inside])
        t = np.concatenate(times) if times else np.zeros(0)
        if self.slot is None:  # the log names no entities: the popularity model draws them
            slot = self.population.sample(self.streams["popularity"], t)
        else:
            slot = np.concatenate(slots) if slots else np.zeros(0, dtype=np.int64)
        size = None
        if self.sizes is not None:
            size = np.concatenate(sizes) if sizes else np.zeros(0)
        return Chunk(start_s, end_s, t, slot, self.streams, request_size=size)


def make_population(workload: Workload, end_s: float, streams: Streams):
    """The run's entities: a :class:`TracePopulation` for a replayed log, else a
    :class:`Population` (also for a log that names no entities: its requests are about
    entities drawn from the scenario's popularity)."""
    trace = workload.arrivals.trace
    if trace is not None and trace.log.has_entities:
        return TracePopulation(workload, end_s, streams)
    return Population(workload, end_s, streams)


def make_source(workload: Workload, population, streams: Streams):
    """The run's requests: a :class:`TraceReplay` for a replayed log, else a
    :class:`RequestSource`. Both have ``chunk(start_s, end_s)`` and ``peak_per_s``."""
    if workload.arrivals.trace is not None:
        return TraceReplay(workload, population, streams)
    return RequestSource(workload, population, streams)
