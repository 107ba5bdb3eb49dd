"""Slow periods: the speed of a replica over time, and when work started at a time finishes.

A replica's speed follows the states of ``serving.slow_periods`` (see
:class:`sim.scenario.SlowPeriods`): a stay in state ``k`` lasts a random time and the replica does
``1 / slowdown_k`` seconds of work per second of it. The path of one replica (or of the host, with
``scope: host``) is a list of breakpoints ``t[0] < t[1] < ...``: from ``t[j]`` to ``t[j+1]`` the
slowdown is ``s[j]``, and ``w[j]`` is the work done from ``t[0]`` to ``t[j]``, so the work done by
time ``x`` in segment ``j`` is ``W(x) = w[j] + (x - t[j]) / s[j]``. Work ``v`` started at ``x``
finishes at ``W^-1(W(x) + v)``: two binary searches, in :func:`finish_at`.

The speed is exogenous (nothing the queue does changes it), so the path is drawn ahead, in blocks
of stays from its own random stream, and extended whenever a query goes past its end: the same
scenario and seed give the same path however the engine's chunks fall, and the reference engine
(which walks the path segment by segment in simulated time) draws the very same one.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

BLOCK = 512          # stays drawn per path at each extension
BURN_IN_CYCLES = 20  # the path starts this many mean cycles before the run, so the state at the
                     # run's start is (nearly) drawn from the long-run shares


@njit(cache=True, nogil=True)
def finish_at(t, w, s, n, start, work):
    """When ``work`` seconds of work started at ``start`` finish on the path ``(t, w, s)[:n]``;
    NaN if that lies beyond the path's last breakpoint (draw more and ask again)."""
    if start < t[0]:
        start = t[0]
    if start >= t[n - 1]:
        return np.nan
    # the segment holding start: the last breakpoint at or before it
    lo, hi = 0, n - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if t[mid] <= start:
            lo = mid
        else:
            hi = mid
    k = lo
    if work <= 0.0:
        return start
    target = w[k] + (start - t[k]) / s[k] + work
    if target > w[n - 1]:
        return np.nan
    # the segment in which the work done reaches target: the last breakpoint with w <= target
    lo, hi = k, n - 1
    if w[hi] <= target:
        return t[hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if w[mid] <= target:
            lo = mid
        else:
            hi = mid
    end = t[lo] + (target - w[lo]) * s[lo]
    return end if end > start else start  # never before it started, whatever the rounding


@njit(cache=True, nogil=True)
def _chain(jumps, u, k, states):
    """The state of each stay: the current one ``k``, then a jump drawn by ``u`` from the
    cumulative probabilities ``jumps``; returns the state after the last."""
    last = jumps.shape[0] - 1
    for j in range(u.shape[0]):
        states[j] = k
        row = jumps[k]
        nxt = 0
        while nxt < last and row[nxt] <= u[j]:
            nxt += 1
        k = nxt
    return k


class SlowPath:
    """The speed paths of one serving pool: one for the host, or one per replica slot.

    ``t``, ``w`` and ``s`` are ``(paths, capacity)`` arrays, ``n`` the breakpoints each path
    holds; :meth:`extend` and :meth:`draw_block` draw more, :meth:`trim` forgets segments no
    request can start in any more. Each path draws from a random stream of its own, named after the path (not the
    architecture), so every architecture of a scenario meets the same slow periods.
    """

    def __init__(self, spec, paths: int, streams, start_s: float):
        self.spec = spec
        self.paths = paths
        self.slowdowns = np.array([state.slowdown for state in spec.states], dtype=float)
        self.jumps = np.cumsum(spec.jumps(), axis=1)
        self._rngs = [streams.fresh(f"slow_periods/{p}") for p in range(paths)]
        shares = spec.time_shares()
        cycle_s = float(np.sum([state.mean_s for state in spec.states]))
        origin = start_s - BURN_IN_CYCLES * cycle_s
        capacity = BLOCK + 1
        self.t = np.empty((paths, capacity))
        self.w = np.zeros((paths, capacity))
        self.s = np.empty((paths, capacity))
        self.n = np.ones(paths, dtype=np.int64)
        self._state = np.empty(paths, dtype=np.int64)
        for p, rng in enumerate(self._rngs):
            self._state[p] = min(int(np.searchsorted(np.cumsum(shares), rng.random(),
                                                     side="right")), len(shares) - 1)
            self.t[p, 0] = origin
            self.s[p, 0] = self.slowdowns[self._state[p]]
        self.extend(start_s)

    def extend(self, until_s: float) -> None:
        """Draw stays until every path reaches ``until_s``."""
        for p in range(self.paths):
            while self.t[p, self.n[p] - 1] < until_s:
                self.draw_block(p)

    def draw_block(self, p: int) -> None:
        """Draw the next block of stays of path ``p`` (the kernels ask for it when work runs
        past the path's drawn end)."""
        n = int(self.n[p])
        if n + BLOCK > self.t.shape[1]:
            self._grow(n + BLOCK)
        u = self._rngs[p].random((BLOCK, 2))
        states = np.empty(BLOCK, dtype=np.int64)
        k = _chain(self.jumps, u[:, 0].copy(), int(self._state[p]), states)
        self._state[p] = k
        lengths = np.empty(BLOCK)
        for index, state in enumerate(self.spec.states):
            mine = states == index
            if state.mean is not None:
                lengths[mine] = -state.mean * np.log1p(-u[mine, 1])
            else:
                lengths[mine] = state.length.ppf(u[mine, 1])
        slow = self.slowdowns[states]
        # the stay drawn first is the one in progress at t[n-1] (its slowdown is s[n-1])
        self.s[p, n - 1] = slow[0]
        self.t[p, n:n + BLOCK] = self.t[p, n - 1] + np.cumsum(lengths)
        self.w[p, n:n + BLOCK] = self.w[p, n - 1] + np.cumsum(lengths / slow)
        self.s[p, n:n + BLOCK - 1] = slow[1:]
        self.s[p, n + BLOCK - 1] = self.slowdowns[k]
        self.n[p] = n + BLOCK

    def _grow(self, needed: int) -> None:
        capacity = max(needed, 2 * self.t.shape[1])
        for name in ("t", "w", "s"):
            old = getattr(self, name)
            new = np.zeros((self.paths, capacity))
            new[:, :old.shape[1]] = old
            setattr(self, name, new)

    def trim(self, before_s: float) -> None:
        """Forget the segments that end before ``before_s`` (no work starts before it any more)."""
        for p in range(self.paths):
            n = int(self.n[p])
            k = int(np.searchsorted(self.t[p, :n], before_s, side="right")) - 1
            k = min(k, n - 2)
            if k >= BLOCK:  # shift only when it frees a good share, not at every call
                for a in (self.t, self.w, self.s):
                    a[p, :n - k] = a[p, k:n]
                self.n[p] = n - k

    def segments(self, p: int):
        """The breakpoints, work and slowdowns of path ``p`` as drawn so far (for reading)."""
        n = int(self.n[p])
        return self.t[p, :n], self.w[p, :n], self.s[p, :n]

    def finish(self, p: int, start_s: float, work_s: float) -> float:
        """When ``work_s`` of work started at ``start_s`` on path ``p`` finishes (drawing more
        of the path as needed)."""
        while True:
            n = int(self.n[p])
            f = finish_at(self.t[p], self.w[p], self.s[p], n, start_s, work_s)
            if not math.isnan(f):
                return f
            self.draw_block(p)
