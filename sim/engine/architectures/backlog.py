"""A stream processor's backlog: when its events are processed, through peaks and outages.

Events arrive at the workload's rate times ``events_per_request``; the processor's nodes
process up to ``nodes x node_capacity`` events per second, and none during an outage. The
backlog is the fluid queue ``dB/dt = rate(t) - capacity(t)`` (never below 0), events leaving
in arrival order: the events that arrived by ``c`` are all processed at the first time ``D(c)``
the processed total reaches the arrived total at ``c``; at time ``t`` the newest processed
event arrived at ``P(t)``, where the arrived total equals the processed total at ``t``.
Without ``node_capacity`` processing is instant outside outages: ``D(c)`` is the end of the
outage holding ``c`` (else ``c``) and ``P(t)`` the start of the outage holding ``t`` (else
``t``), exactly. With it, the totals are integrated on a grid of at most 400,000 steps over
the run (the rate at each step's middle; an outage's share of a step removes that share of
its capacity) and interpolated linearly within a step.

The rate is the workload's profile (pattern and bursts), times its Markov modulation when it
has one (the same path the requests follow), or a replayed log's requests counted in bins.
"""

from __future__ import annotations

import math

import numpy as np

GRID_STEPS = 400_000


def draw_outages(spec, start_s: float, end_s: float, rng: np.random.Generator):
    """(starts, ends) of the outages in [start_s, end_s): up times between them exponential
    with mean ``spec.every``, each lasting a draw of ``spec.duration``."""
    starts, ends = [], []
    t = start_s
    while True:
        t += rng.exponential(spec.every)
        if t >= end_s:
            break
        length = float(spec.duration.ppf(rng.random()))
        starts.append(t)
        ends.append(t + length)
        t += length
    return np.array(starts), np.array(ends)


def event_rate(workload, events_per_request: float, streams=None):
    """The stream's event rate per second as a function of time, and its peak.

    With a Markov-modulated workload (``arrivals.mmpp``) and the run's ``streams``, the rate
    follows the very modulation path the requests are drawn with (the same named stream,
    from its first number, drawn in the same fixed batches), from time 0 on; the peak is the
    pattern's times the largest multiplier."""
    trace = workload.arrivals.trace
    if trace is None:
        from sim.engine.workload import MarkovModulation, RateProfile
        profile = RateProfile(workload.arrivals)
        mmpp = workload.arrivals.mmpp
        if mmpp is None:
            return (lambda t: profile(t) * events_per_request), \
                profile.peak_per_s * events_per_request
        peak = profile.peak_per_s * float(mmpp.normalised_multipliers.max()) * events_per_request
        if streams is None:
            return (lambda t: profile(t) * events_per_request), peak
        modulation = MarkovModulation(mmpp, streams.fresh("mmpp"))

        def modulated(t):
            t = np.asarray(t, dtype=float)
            factor = np.ones(t.shape)
            after = t >= 0
            if after.any():
                factor[after] = modulation(t[after])
            return profile(t) * factor * events_per_request

        return modulated, peak
    times = trace.log.times_s / workload.arrivals.replay_speedup
    period = trace.period_s / workload.arrivals.replay_speedup
    loop = trace.loop is not False
    width = max(times[-1] / 1000.0, 1.0) if times.size else 1.0
    counts = np.bincount((times // width).astype(np.int64)).astype(float)
    per_s = counts / width * events_per_request

    def rate(t):
        t = np.asarray(t, dtype=float)
        if loop and period > 0:
            t = np.mod(t, period)
        k = np.floor(t / width).astype(np.int64)
        inside = (k >= 0) & (k < per_s.size)
        return np.where(inside, per_s[np.clip(k, 0, per_s.size - 1)], 0.0)

    return rate, float(per_s.max()) if per_s.size else 0.0


class StreamFlow:
    """When a stream's events are processed (see the module docstring)."""

    def __init__(self, spec, workload, start_s: float, end_s: float, streams):
        self.spec = spec
        self.start_s, self.end_s = start_s, end_s
        rate, self.peak_events_per_s = event_rate(workload, spec.events_per_request,
                                                  streams)
        self.rate = rate
        self.nodes = resolve_nodes(spec, self.peak_events_per_s)
        if spec.outages is not None:
            self.outage_starts, self.outage_ends = draw_outages(
                spec.outages, start_s, end_s, streams.fresh("pipeline/stream_processing/outages"))
        else:
            self.outage_starts = self.outage_ends = np.zeros(0)
        self.capacity_per_s = (math.inf if spec.node_capacity is None
                               else self.nodes * spec.node_capacity)
        self.grid = None
        if math.isfinite(self.capacity_per_s):
            self._integrate(rate)

    @property
    def active(self) -> bool:
        """Whether events are ever processed late (outages, or finite capacity)."""
        return self.outage_starts.size > 0 or self.grid is not None

    def _integrate(self, rate) -> None:
        span = self.end_s - self.start_s
        steps = max(1, min(GRID_STEPS, int(math.ceil(span / 1.0))))
        dt = span / steps
        grid = self.start_s + dt * np.arange(steps + 1)
        arrived = rate(grid[:-1] + dt / 2) * dt
        capacity = np.full(steps, self.capacity_per_s * dt)
        for a, b in zip(self.outage_starts, self.outage_ends):
            lo = int(max(0, math.floor((a - self.start_s) / dt)))
            hi = int(min(steps, math.ceil((b - self.start_s) / dt)))
            for k in range(lo, hi):
                overlap = min(b, grid[k + 1]) - max(a, grid[k])
                capacity[k] -= self.capacity_per_s * max(0.0, overlap)
        np.maximum(capacity, 0.0, out=capacity)
        processed = np.empty(steps)
        backlog = 0.0
        for k in range(steps):  # the fluid queue, step by step
            out = min(backlog + arrived[k], capacity[k])
            backlog += arrived[k] - out
            processed[k] = out
        self.grid = grid
        self.cum_arrived = np.r_[0.0, np.cumsum(arrived)]
        self.cum_processed = np.r_[0.0, np.cumsum(processed)]

    def _rates(self, start_s: float, end_s: float) -> np.ndarray:
        """The event rate at the middles of 100,000 equal steps of a window."""
        steps = 100_000
        dt = (end_s - start_s) / steps
        return self.rate(start_s + dt * (np.arange(steps) + 0.5))

    def events_per_day(self, start_s: float, end_s: float) -> float:
        """Events arriving at the stream per day over a window (the rate's integral, on a
        midpoint grid)."""
        return float(self._rates(start_s, end_s).mean()) * 86400.0

    def rate_seen_by_events(self, start_s: float, end_s: float) -> float:
        """The event rate at the time of an average event, ``E[r^2] / E[r]`` over the window
        (the mean rate when it is constant; more when events bunch at peaks)."""
        r = self._rates(start_s, end_s)
        mean = float(r.mean())
        return float((r * r).mean()) / mean if mean > 0 else 0.0

    def _outage_at(self, t: np.ndarray) -> np.ndarray:
        """Index of the outage holding each time (-1: none)."""
        k = np.searchsorted(self.outage_starts, t, side="right") - 1
        inside = (k >= 0) & (t < self.outage_ends[np.maximum(k, 0)])
        return np.where(inside, k, -1)

    def visible_at(self, closed_s: float) -> float:
        """When the events that arrived by ``closed_s`` have all been processed."""
        if self.grid is None:
            k = int(self._outage_at(np.array([closed_s]))[0]) if self.outage_starts.size else -1
            return closed_s if k < 0 else float(self.outage_ends[k])
        total = float(np.interp(closed_s, self.grid, self.cum_arrived))
        return max(closed_s, _first_reaching(self.cum_processed, self.grid, total))

    def processed_until(self, t_s: np.ndarray) -> np.ndarray:
        """The arrival time of the newest event processed by each of ``t_s``."""
        t_s = np.asarray(t_s, dtype=float)
        if self.grid is None:
            if not self.outage_starts.size:
                return t_s.copy()
            k = self._outage_at(t_s)
            return np.where(k >= 0, self.outage_starts[np.maximum(k, 0)], t_s)
        done = np.interp(t_s, self.grid, self.cum_processed)
        arrived = np.interp(t_s, self.grid, self.cum_arrived)
        newest = np.minimum(_first_reaching(self.cum_arrived, self.grid, done), t_s)
        # no backlog: everything that arrived is processed, however long ago it arrived
        caught_up = arrived - done <= 1e-9 * np.maximum(arrived, 1.0)
        return np.where(caught_up, t_s, newest)


def _first_reaching(cumulative: np.ndarray, grid: np.ndarray, total):
    """The first time the (non-decreasing, piecewise linear) ``cumulative`` reaches each
    ``total`` (a float for a float)."""
    total = np.asarray(total, dtype=float)
    k = np.searchsorted(cumulative, total * (1 - 1e-12) - 1e-12, side="left")
    k = np.clip(k, 1, cumulative.size - 1)
    rise = cumulative[k] - cumulative[k - 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(rise > 0, (total - cumulative[k - 1]) / rise, 1.0)
    out = grid[k - 1] + np.clip(share, 0.0, 1.0) * (grid[k] - grid[k - 1])
    return float(out) if out.ndim == 0 else out


def resolve_nodes(spec, peak_events_per_s: float) -> int:
    """The stream's nodes: as given, or (``auto``) enough for the peak event rate."""
    if spec.nodes != "auto":
        return int(spec.nodes)
    return max(1, math.ceil(peak_events_per_s / spec.node_capacity * (1 - 1e-12)))


__all__ = ["StreamFlow", "draw_outages", "event_rate", "resolve_nodes"]
